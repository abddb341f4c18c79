"""Slot attention over pitch-time tokens (paper Sec. III-B, Eq. 1).

The slot-branch map ``(B, Cs, 72, T)`` is flattened into ``N = 72 T`` pitch-time tokens, each
layer-normalised, projected to the slot dimension ``d`` (192) and given a learned *pitch* embedding
(there is deliberately no time embedding, so the head works for any ``T``). ``K`` learned slot
queries (one ``d``-vector per slot) then attend iteratively:

    a_kj = exp(q_k . z_j / sqrt(d)) / sum_k' exp(q_k' . z_j / sqrt(d))        (Eq. 1)

i.e. the softmax runs over the *slots* for every token, so slots compete for tokens. Each slot
aggregates the weighted mean of the token values, ``u_k = sum_j a_kj v_j / sum_j a_kj``, is updated
residually ``s_k <- s_k + u_k`` and refined by a residual feed-forward block
``s_k <- s_k + FFN(LN(s_k))``; queries are computed from ``LN(s_k)``. (A separate output projection
after the aggregation would compose linearly with the value projection, so there is none.)

Memory: attention is ``K x N`` (never ``N x N``), so it is linear in the number of tokens. For long
inputs the tokens are processed in chunks of at most ``token_chunk`` tokens (whole frames), the
per-slot numerators and denominators being accumulated, so peak memory for the attention itself
is ``O(K * token_chunk + token_chunk * d)`` independent of ``T``; only the slot-branch map
``(B, Cs, 72, T)`` is held in full. The result is identical to the unchunked computation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from slotmpe.constants import N_PITCHES, SLOT_DIM


class SlotAttention(nn.Module):
    """Iterative slot attention with learned per-slot queries.

    Args:
        in_channels: channels ``Cs`` of the slot-branch map.
        n_slots: number of slots ``K``.
        dim: slot dimension ``d``.
        n_iters: attention iterations (paper: iterative; default 3).
        ffn_hidden: hidden width of the residual feed-forward refinement.
        n_pitches: pitch rows of the token map (72).
        token_chunk: maximum tokens processed at once (memory bound for long inputs).
        eps: numerical epsilon of the weighted mean.
    """

    def __init__(
        self,
        in_channels: int,
        n_slots: int,
        dim: int = SLOT_DIM,
        n_iters: int = 3,
        ffn_hidden: int = 2 * SLOT_DIM,
        n_pitches: int = N_PITCHES,
        token_chunk: int = 65_536,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if n_iters < 1:
            raise ValueError(f"n_iters must be >= 1, got {n_iters}")
        self.n_slots = int(n_slots)
        self.dim = int(dim)
        self.n_iters = int(n_iters)
        self.n_pitches = int(n_pitches)
        self.token_chunk = int(token_chunk)
        self.eps = float(eps)
        self.scale = 1.0 / math.sqrt(dim)
        # token embedding
        self.token_norm = nn.LayerNorm(in_channels)
        self.token_proj = nn.Linear(in_channels, dim)
        self.pitch_emb = nn.Parameter(torch.randn(n_pitches, dim) * 0.02)
        self.input_norm = nn.LayerNorm(dim)
        # attention
        self.queries = nn.Parameter(torch.randn(n_slots, dim) * dim**-0.5)
        self.slot_norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_hidden), nn.GELU(), nn.Linear(ffn_hidden, dim))

    def tokens(self, feat: torch.Tensor) -> torch.Tensor:
        """Pitch-time tokens of a slot-branch map.

        ``feat`` ``(B, Cs, 72, t)`` -> ``(B, 72, t, d)`` (token ``(p, t)``; flattening the first two
        axes after the batch gives the ``72 t`` tokens).
        """
        h = feat.permute(0, 2, 3, 1)  # (B, 72, t, Cs)
        h = self.token_proj(self.token_norm(h)) + self.pitch_emb[:, None, :]
        return self.input_norm(h)

    def _frames_per_chunk(self) -> int:
        return max(1, self.token_chunk // self.n_pitches)

    def forward(
        self, feat: torch.Tensor, queries: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run slot attention.

        Args:
            feat: slot-branch map ``(B, Cs, 72, T)``.
            queries: optional initial slots ``(K', d)`` replacing the learned queries (used by tests,
                e.g. to permute them).

        Returns:
            slots ``(B, K, d)`` and, when the whole input fits in one chunk, the last iteration's
            attention ``(B, K, 72, T)`` (else ``None``).
        """
        b, _, p, t = feat.shape
        q0 = self.queries if queries is None else queries
        slots = q0.unsqueeze(0).expand(b, -1, -1)
        fpc = self._frames_per_chunk()
        one_chunk = t <= fpc
        if one_chunk:
            z = self.tokens(feat).reshape(b, p * t, self.dim)
            k_all, v_all = self.to_k(z), self.to_v(z)
        attn_out: torch.Tensor | None = None
        for _ in range(self.n_iters):
            q = self.to_q(self.slot_norm(slots)) * self.scale  # (B, K, d)
            if one_chunk:
                attn = torch.softmax(torch.einsum("bkd,bnd->bkn", q, k_all), dim=1)
                num = torch.einsum("bkn,bnd->bkd", attn, v_all)
                den = attn.sum(-1, keepdim=True)
                attn_out = attn
            else:
                num = slots.new_zeros(slots.shape)
                den = slots.new_zeros(*slots.shape[:2], 1)
                for a in range(0, t, fpc):
                    z = self.tokens(feat[..., a : a + fpc]).reshape(b, -1, self.dim)
                    attn = torch.softmax(torch.einsum("bkd,bnd->bkn", q, self.to_k(z)), dim=1)
                    num = num + torch.einsum("bkn,bnd->bkd", attn, self.to_v(z))
                    den = den + attn.sum(-1, keepdim=True)
            slots = slots + num / (den + self.eps)
            slots = slots + self.ffn(self.ffn_norm(slots))
        if attn_out is not None:
            attn_out = attn_out.reshape(b, -1, p, t)
        return slots, attn_out
