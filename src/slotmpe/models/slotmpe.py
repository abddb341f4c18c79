"""The slot-based MI-MPE model (paper Sec. III-B/C/D, Fig. 1) for all eight configurations.

Data flow for ``x`` ``(B, 12, 216, T)``::

    Trunk (216 bins) --+-- GlobalBranch ---------------------------> mix_logits   (B, 72, T)
                       +-- SlotBranch (B, Cs, 72, T) -> SlotAttention -> slots    (B, K, d)
                       |        tokens (B, 72, T, d) ---+                |
                       |                                MaskDecoder <----+ (+ TimbreHead/FiLM)
                       |                                  -> masks, activity, slot_logits
                       +-- PolyphonyHead --------------------------> poly_logits  (B, 8, T)

Configuration switches come only from the :class:`~slotmpe.experiments.Experiment` flags. In 1a
the slot branch, slot attention and mask decoder exist (they count towards Table I) but
``forward`` skips them and returns only ``mix_logits``; they receive no gradient. In 3a the
polyphony head runs (its output is evaluated) but no loss uses it.

Default widths are ``DEFAULT_WIDTHS``; the per-component parameter decomposition and its
comparison with Table I are in the docstring of :mod:`slotmpe.models`.

Long inputs: attention is ``K x 72T`` (linear in tokens) and is accumulated over token chunks;
in eval mode the time-local stages (trunk, branches, polyphony head, mask decoder) run in
overlapping time chunks whose halo covers their receptive field, so whole files of many
thousands of frames run in bounded memory and give the same result as one pass. In train mode
no chunking happens (BatchNorm batch statistics would differ per chunk): train on windows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from slotmpe.constants import EMBED_DIM, N_PITCHES, SLOT_DIM
from slotmpe.experiments import Experiment, get_experiment
from slotmpe.models.decoder import MaskDecoder, gated_slot_logits
from slotmpe.models.extensions import TimbreMaskBias
from slotmpe.models.heads import FiLM, PolyphonyHead, TimbreHead
from slotmpe.models.slot_attention import SlotAttention
from slotmpe.models.token_map import TokenMap
from slotmpe.models.trunk import GlobalBranch, SlotBranch, Trunk, time_radius

# hidden width of the residual slot FFN: the free width that brings the shared base model to
# Table I's size (see the parameter decomposition in the docstring of slotmpe.models)
FFN_HIDDEN = 2576

DEFAULT_WIDTHS: dict[str, Any] = {
    "trunk_channels": (8, 8, 16),
    "harmonic_kernel": 39,
    "global_channels": (8, 8),
    "slot_channels": (16, 32),
    "slot_dim": SLOT_DIM,
    "n_iters": 3,
    "ffn_hidden": FFN_HIDDEN,
    "mask_dim": SLOT_DIM,
    "decoder_channels": 16,
    "activity_hidden": SLOT_DIM,
    "timbre_hidden": SLOT_DIM,
    "embed_dim": EMBED_DIM,
    "poly_channels": 16,
    "poly_hidden": 88,
    "chunk_frames": 1024,
    "token_chunk": 65_536,
}

OUTPUT_BIAS_INIT = -2.9444  # logit(0.05): initial pitch probability prior

TensorTuple = tuple[torch.Tensor | None, ...]


def run_time_chunked(
    fn: Callable[[torch.Tensor], TensorTuple], x: torch.Tensor, chunk: int, halo: int
) -> TensorTuple:
    """Apply a time-local ``fn`` to overlapping time chunks of ``x`` and stitch the outputs.

    ``x`` has time on its last axis, as does every (non-``None``) output of ``fn``. Each chunk of
    ``chunk`` frames is processed with ``halo`` extra frames on both sides (clipped at the file
    edges), so for ``halo`` >= the receptive-field radius of ``fn`` the result equals
    ``fn(x)`` exactly (for modules in eval mode: BatchNorm uses running statistics).
    """
    t = x.shape[-1]
    pieces: list[TensorTuple] = []
    for a in range(0, t, chunk):
        b = min(a + chunk, t)
        lo, hi = max(0, a - halo), min(t, b + halo)
        out = fn(x[..., lo:hi])
        pieces.append(tuple(None if o is None else o[..., a - lo : b - lo] for o in out))
    return tuple(
        None if pieces[0][i] is None else torch.cat([p[i] for p in pieces], dim=-1)  # type: ignore[misc]
        for i in range(len(pieces[0]))
    )


class SlotMPE(nn.Module):
    """Slot-attention MI-MPE model.

    Args:
        exp: the experiment (or its name) whose flags select slots (``n_slots``), timbre head,
            FiLM and polyphony head.
        **widths: overrides of ``DEFAULT_WIDTHS`` (unknown keys raise ``TypeError``).

    ``chunk_frames``: in eval mode, inputs longer than this are run through the time-local parts
    (trunk, branches, polyphony head, mask decoder) in overlapping chunks (exact, see
    :func:`run_time_chunked`); ``token_chunk`` bounds the tokens attended at once
    (:class:`SlotAttention`). Together they keep memory linear in ``T`` with small constants:
    the only full-length tensors are the outputs and the ``(B, Cs, 72, T)`` slot-branch map.
    """

    def __init__(self, exp: Experiment | str, **widths: Any) -> None:
        super().__init__()
        self.exp = exp if isinstance(exp, Experiment) else get_experiment(exp)
        unknown = set(widths) - set(DEFAULT_WIDTHS)
        if unknown:
            raise TypeError(
                f"unknown SlotMPE width(s) {sorted(unknown)}; known: {sorted(DEFAULT_WIDTHS)}"
            )
        w = {**DEFAULT_WIDTHS, **widths}
        w = {k: (list(v) if isinstance(v, tuple | list) else v) for k, v in w.items()}
        self.widths = w
        # constructor kwargs, JSON-friendly: used by save_checkpoint / load_checkpoint
        self.config: dict[str, Any] = {"exp": self.exp.name, **w}
        d = int(w["slot_dim"])
        self.n_slots = self.exp.n_slots
        self.chunk_frames = int(w["chunk_frames"])

        self.trunk = Trunk(w["trunk_channels"], int(w["harmonic_kernel"]))
        c = self.trunk.out_channels
        self.global_branch = GlobalBranch(c, w["global_channels"])
        self.slot_branch = SlotBranch(c, w["slot_channels"])
        self.slot_attention = SlotAttention(
            self.slot_branch.out_channels,
            self.n_slots,
            dim=d,
            n_iters=int(w["n_iters"]),
            ffn_hidden=int(w["ffn_hidden"]),
            n_pitches=N_PITCHES,
            token_chunk=int(w["token_chunk"]),
        )
        self.decoder = MaskDecoder(
            d, int(w["mask_dim"]), int(w["decoder_channels"]), int(w["activity_hidden"])
        )
        e = int(w["embed_dim"])
        self.timbre_head = (
            TimbreHead(d, int(w["timbre_hidden"]), e) if self.exp.timbre_head else None
        )
        if self.exp.film and not self.exp.timbre_head:
            raise ValueError(f"experiment {self.exp.name}: FiLM needs the timbre head")
        self.film = FiLM(e, d) if self.exp.film else None
        if self.exp.timbre_mask and not self.exp.timbre_head:
            raise ValueError(f"experiment {self.exp.name}: timbre_mask needs the timbre head")
        # extension 4f: timbre cosine in the mask competition (absent in 1a-3c)
        self.timbre_mask = TimbreMaskBias(d, e) if self.exp.timbre_mask else None
        self.poly_head = (
            PolyphonyHead(c, int(w["poly_channels"]), int(w["poly_hidden"]))
            if self.exp.poly_head
            else None
        )
        # receptive-field radii (frames) for exact chunked inference
        enc = time_radius(self.trunk)
        heads = [time_radius(self.global_branch), time_radius(self.slot_branch)]
        if self.poly_head is not None:
            heads.append(time_radius(self.poly_head))
        self._enc_halo = enc + max(heads)
        self._dec_halo = time_radius(self.decoder)
        # sparse-prior initialisation of the pitch outputs (few cells of a pitch roll are active)
        nn.init.constant_(self.global_branch.out.bias, OUTPUT_BIAS_INIT)
        nn.init.constant_(self.decoder.conv[-1].bias, OUTPUT_BIAS_INIT)

    # ------------------------------------------------------------------ stages
    def encode(self, x: torch.Tensor) -> TensorTuple:
        """Time-local part: ``x`` ``(B, 12, 216, T)`` -> ``(mix_logits (B, 72, T),
        slot_feat (B, Cs, 72, T) | None, poly_logits (B, 8, T) | None)``."""
        h = self.trunk(x)
        mix = self.global_branch(h)
        feat = self.slot_branch(h) if self.exp.uses_slots else None
        poly = self.poly_head(h) if self.poly_head is not None else None
        return mix, feat, poly

    def _decode(
        self,
        feat: torch.Tensor,
        slots: torch.Tensor,
        gate: torch.Tensor,
        film: tuple[torch.Tensor, torch.Tensor] | None,
        tokens: torch.Tensor | TokenMap | None = None,
        timbre: torch.Tensor | None = None,
    ) -> TensorTuple:
        """Masks and decoder logits ``(B, K, 72, t)`` each for a slot-branch map ``feat``
        ``(B, Cs, 72, t)`` (``tokens``: its precomputed token map, dense ``(B, 72, t, d)`` or a
        :class:`~slotmpe.models.token_map.TokenMap`; ``timbre`` ``(B, K, E)``: slot embeddings
        for the timbre mask bias of extension 4f)."""
        if tokens is None:
            tokens = self._token_map(feat)
        bias = None
        if self.timbre_mask is not None and timbre is not None:
            dense = tokens if isinstance(tokens, torch.Tensor) else tokens.dense()
            bias = self.timbre_mask(dense, timbre)
        if bias is None:
            return self.decoder(tokens, slots, gate, film)
        return self.decoder(tokens, slots, gate, film, bias)

    def _token_map(self, feat: torch.Tensor) -> torch.Tensor | TokenMap:
        """The token map of ``feat`` ``(B, Cs, 72, t)``: factored (the default) or the dense
        ``(B, 72, t, d)`` tensor (``slot_attention.factored_tokens`` off)."""
        sa = self.slot_attention
        return sa.token_map(feat) if sa.factored_tokens else sa.tokens(feat)

    def _chunked(self, t: int) -> bool:
        return (not self.training) and t > self.chunk_frames

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x: torch.Tensor,
        activity_override: torch.Tensor | None = None,
        queries: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run the model.

        Args:
            x: fast-HCQT input ``(B, 12, 216, T)``, any ``T >= 1``.
            activity_override: optional gate probabilities ``(B, K)`` in ``[0, 1]`` used instead of
                ``sigmoid(activity_logits)`` (e.g. 0 silences a slot exactly; for tests/analysis).
            queries: optional initial slot queries ``(K, d)`` replacing the learned ones.

        Returns:
            dict with ``mix_logits`` ``(B, 72, T)``; if the experiment uses slots also
            ``slot_logits`` ``(B, K, 72, T)`` (logits of ``gate * sigmoid(decoder)``),
            ``activity_logits`` ``(B, K)``, ``masks`` ``(B, K, 72, T)`` (sum to 1 over K, before
            gating), ``union_prob`` ``(B, 72, T)`` (Eq. 2 noisy-OR ``1 - prod_k (1 - p_k)``,
            computed in log space) and ``union_logits`` ``(B, 72, T)`` (its logit, for a stable
            BCE); ``timbre`` ``(B, K, 128)`` (unit norm) with a timbre head; ``poly_logits``
            ``(B, 8, T)`` with a polyphony head.
        """
        if x.dim() != 4 or x.shape[1] != 12 or x.shape[2] != 216:
            raise ValueError(f"SlotMPE expects x of shape (B, 12, 216, T), got {tuple(x.shape)}")
        t = x.shape[-1]
        if self._chunked(t):
            mix, feat, poly = run_time_chunked(self.encode, x, self.chunk_frames, self._enc_halo)
        else:
            mix, feat, poly = self.encode(x)
        out: dict[str, torch.Tensor] = {"mix_logits": mix}  # type: ignore[dict-item]
        if poly is not None:
            out["poly_logits"] = poly
        if feat is None:
            return out

        # one pass (window or short file): build the token map once for attention and decoder
        tokens = None if self._chunked(t) else self._token_map(feat)
        slots, _ = self.slot_attention(feat, queries, tokens=tokens)
        act = self.decoder.activity_logits(slots)  # (B, K)
        if activity_override is None:
            gate, gate_logits = torch.sigmoid(act), act
        else:
            gate = activity_override.to(act).clamp(0.0, 1.0)
            gate_logits = torch.log(gate) - torch.log1p(-gate)
        film = None
        timbre = None
        if self.timbre_head is not None:
            timbre = self.timbre_head(slots)
            out["timbre"] = timbre
            if self.film is not None:
                film = self.film(timbre)

        def dec(f: torch.Tensor) -> TensorTuple:
            return self._decode(f, slots, gate, film, timbre=timbre)

        if self._chunked(t):
            masks, z = run_time_chunked(dec, feat, self.chunk_frames, self._dec_halo)
        else:
            masks, z = self._decode(feat, slots, gate, film, tokens, timbre)
        slot_logits = gated_slot_logits(z, gate_logits)  # type: ignore[arg-type]
        # Eq. 2 in log space: log(1 - p_k) = logsigmoid(-logit_k)
        log_none = torch.nn.functional.logsigmoid(-slot_logits).sum(1)  # (B, 72, T), <= 0
        log_none = log_none.clamp(max=-1e-30)
        out.update(
            slot_logits=slot_logits,
            activity_logits=act,
            masks=masks,  # type: ignore[dict-item]
            union_prob=-torch.expm1(log_none),
            union_logits=torch.log(-torch.expm1(log_none)) - log_none,
        )
        return out

    def extra_repr(self) -> str:
        return f"exp={self.exp.name}, n_slots={self.n_slots}"
