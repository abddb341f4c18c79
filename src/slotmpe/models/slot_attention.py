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

Compute: the key and value projections are affine, so they are folded onto the slot side instead
of being applied to all ``N`` tokens (identical result, same parameters, every one trained):

    q_k . (W_k z_j + b_k) = (W_k^T q_k) . z_j + q_k . b_k
    sum_j a_kj (W_v z_j + b_v) = W_v (sum_j a_kj z_j) + b_v sum_j a_kj

so an iteration costs ``2 K d`` multiply-adds per token instead of ``2 d^2`` (K = 8, d = 192:
~24x less) and the ``(B, N, d)`` key and value tensors are never built. The tokens themselves
are kept factored by default (``factored_tokens``, :class:`slotmpe.models.token_map.FactoredTokens`):
the token projection ``Cs -> d`` and the LayerNorm over ``d`` are folded into the products as
well, so each product with the tokens runs over ``Cs`` (32) channels instead of ``d`` (192) and
no ``(B, N, d)`` tensor is built at all. :meth:`SlotAttention.forward_reference` is the literal
(unfolded, dense) computation, used by the tests.

Memory: attention is ``K x N`` (never ``N x N``), so it is linear in the number of tokens. For long
inputs the tokens are processed in chunks of at most ``token_chunk`` tokens (whole frames), the
per-slot numerators and denominators being accumulated, so peak memory for the attention itself
is ``O(K * token_chunk + token_chunk * d)`` independent of ``T``; only the slot-branch map
``(B, Cs, 72, T)`` is held in full. The result is identical to the unchunked computation.

Backward of the dense map (``factored_tokens=False``): when the tokens come in one chunk
(training windows) and ``fused_token_grad`` is on, the gradient of the token map, a sum of ``2 n_iters`` products ``(B, N, K) x (B, K, d)``, is built
in one batched product ``(B, N, 2 n_iters K) x (B, 2 n_iters K, d)``
(:class:`slotmpe.models.token_grad.TokenGradHub`): same forward bit for bit, gradients equal to
float rounding, faster (fewer passes over ``(B, N, d)`` tensors).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

from slotmpe.constants import N_PITCHES, SLOT_DIM
from slotmpe.models.token_map import DenseTokens, FactoredTokens, TokenMap


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
        fused_token_grad: build the token map's gradient in one batched product (single-chunk
            inputs with gradients only; exact up to float rounding). Also a plain attribute, so
            a benchmark can switch it per step.
        factored_tokens: keep the token map as its ``Cs``-channel factors
            (:class:`slotmpe.models.token_map.FactoredTokens`: every product with the tokens over
            ``Cs`` channels instead of ``d``; exact up to float rounding); ``False``: build the
            ``(B, 72, t, d)`` map (:meth:`tokens`). A plain attribute too.
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
        fused_token_grad: bool = True,
        factored_tokens: bool = True,
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
        self.fused_token_grad = bool(fused_token_grad)
        self.factored_tokens = bool(factored_tokens)
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

    def token_map(self, feat: torch.Tensor) -> TokenMap:
        """The token map of ``feat`` ``(B, Cs, 72, t)`` as the products need it: factored
        (:class:`FactoredTokens`, when ``factored_tokens``) or dense (:meth:`tokens`)."""
        if self.factored_tokens:
            x = self.token_norm(feat.permute(0, 2, 3, 1))  # (B, 72, t, Cs)
            return FactoredTokens(x, self.token_proj, self.pitch_emb, self.input_norm)
        return DenseTokens(self.tokens(feat))

    def _frames_per_chunk(self) -> int:
        return max(1, self.token_chunk // self.n_pitches)

    def _iterate(
        self, slots: torch.Tensor, token_maps: Callable[[], Iterator[TokenMap]]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the ``n_iters`` attention iterations with folded key/value projections.

        Args:
            slots: initial slots ``(B, K, d)``.
            token_maps: returns a fresh iterator over the token maps of consecutive chunks
                (:class:`TokenMap`, ``n`` tokens each) that together cover all ``N`` tokens in
                order (called once per iteration).

        Returns:
            final slots ``(B, K, d)`` and the last iteration's attention ``(B, K, N)`` if the
            tokens came in a single chunk (else ``None``).
        """
        wk, bk = self.to_k.weight, self.to_k.bias  # (d, d) [out, in], (d,)
        attn_out: torch.Tensor | None = None
        for _ in range(self.n_iters):
            q = self.to_q(self.slot_norm(slots)) * self.scale  # (B, K, d)
            qk = torch.matmul(q, wk)  # (B, K, d): W_k^T q_k
            qb = torch.matmul(q, bk).unsqueeze(-1)  # (B, K, 1): q_k . b_k
            num = slots.new_zeros(slots.shape)  # sum_j a_kj z_j
            den = slots.new_zeros(*slots.shape[:2], 1)  # sum_j a_kj
            n_chunks = 0
            for z in token_maps():
                attn = torch.softmax(z.dot(qk) + qb, dim=1)  # (B, K, n)
                num = num + z.wsum(attn)
                den = den + attn.sum(-1, keepdim=True)
                attn_out = attn
                n_chunks += 1
            if n_chunks != 1:
                attn_out = None
            upd = torch.nn.functional.linear(num, self.to_v.weight) + den * self.to_v.bias
            slots = slots + upd / (den + self.eps)
            slots = slots + self.ffn(self.ffn_norm(slots))
        return slots, attn_out

    def forward(
        self,
        feat: torch.Tensor,
        queries: torch.Tensor | None = None,
        tokens: torch.Tensor | TokenMap | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run slot attention.

        Args:
            feat: slot-branch map ``(B, Cs, 72, T)``.
            queries: optional initial slots ``(K', d)`` replacing the learned queries (used by tests,
                e.g. to permute them).
            tokens: optional precomputed token map of ``feat``: ``self.tokens(feat)``
                ``(B, 72, T, d)`` or ``self.token_map(feat)`` (saves computing it twice when the
                caller needs it too); used only when the whole input fits in one token chunk.

        Returns:
            slots ``(B, K, d)`` and, when the whole input fits in one chunk, the last iteration's
            attention ``(B, K, 72, T)`` (else ``None``).
        """
        b, _, p, t = feat.shape
        q0 = self.queries if queries is None else queries
        slots = q0.unsqueeze(0).expand(b, -1, -1)
        fpc = self._frames_per_chunk()
        if t <= fpc:
            if tokens is None:
                tokens = self.token_map(feat) if self.factored_tokens else self.tokens(feat)
            if isinstance(tokens, torch.Tensor):
                tokens = DenseTokens(tokens, fused_grad=self.fused_token_grad)
            whole: TokenMap = tokens

            def chunks() -> Iterator[TokenMap]:
                yield whole
        else:

            def chunks() -> Iterator[TokenMap]:
                for a in range(0, t, fpc):
                    yield self.token_map(feat[..., a : a + fpc])

        slots, attn = self._iterate(slots, chunks)
        if attn is not None:
            attn = attn.reshape(b, -1, p, t)
        return slots, attn

    def forward_reference(
        self, feat: torch.Tensor, queries: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Literal slot attention (keys and values of every token, no chunking); used by tests.

        ``feat`` ``(B, Cs, 72, T)`` -> slots ``(B, K, d)``, last attention ``(B, K, 72, T)``.
        """
        b, _, p, t = feat.shape
        q0 = self.queries if queries is None else queries
        slots = q0.unsqueeze(0).expand(b, -1, -1)
        z = self.tokens(feat).reshape(b, p * t, self.dim)
        k_all, v_all = self.to_k(z), self.to_v(z)
        attn = slots.new_zeros(b, slots.shape[1], p * t)
        for _ in range(self.n_iters):
            q = self.to_q(self.slot_norm(slots)) * self.scale
            attn = torch.softmax(torch.einsum("bkd,bnd->bkn", q, k_all), dim=1)
            num = torch.einsum("bkn,bnd->bkd", attn, v_all)
            slots = slots + num / (attn.sum(-1, keepdim=True) + self.eps)
            slots = slots + self.ffn(self.ffn_norm(slots))
        return slots, attn.reshape(b, -1, p, t)
