"""Mask-based slot decoder (paper Sec. III-B).

For slot ``k`` and pitch-time token ``j`` (a position of the ``d``-channel token map ``F``):

* slot vectors and token features are projected into a shared ``mask_dim`` space; their scaled
  dot products, soft-maxed over the ``K`` slots, give soft masks ``m_kj`` (sum to 1 over slots);
* an activity probability ``g_k = sigmoid(a(s_k))`` from the slot vector gates the mask, ``a`` a
  small per-slot MLP ``d -> activity_hidden -> 1`` (GELU; ``activity_hidden = 0``: one linear layer);
* the gated, masked map ``F_k = (g_k m_k) * F`` (``d`` channels, optionally FiLM-modulated by the
  slot's timbre embedding) goes through a small convolutional decoder shared by all slots
  (1x1 -> 3x3 -> 3x3 -> 1x1), giving pitch logits ``z_k`` ``(72, T)``.

The final slot probability is additionally gated at the output, ``p_k = g_k * sigmoid(z_k)`` (see
:func:`gated_slot_logits`), so that a zero activity gate silences a slot exactly (with mask gating
alone the decoder biases would still produce a constant output for an all-zero input).

Implementation notes (compute): the mask similarity is bilinear, so the feature projection is
folded onto the slot side, ``(W_f t_j + b_f) . p_k = t_j . (W_f^T p_k) + b_f . p_k`` with
``p_k = W_s s_k + b_s``: ``K d`` multiply-adds per token instead of ``d * mask_dim``, never
building the projected ``(B, 72, t, mask_dim)`` token map. The decoder's first layer is a 1x1 convolution, which is linear, so
:meth:`MaskDecoder.forward` applies it to the unmasked map once (or once per slot with FiLM, with
``diag(1 + gamma_k)`` folded into its weights) and multiplies by the gated mask afterwards. This is
algebraically identical to decoding the explicit masked map (:meth:`MaskDecoder.forward_reference`,
checked by the tests) but never materialises the ``(B, K, d, 72, T)`` tensor.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from slotmpe.constants import SLOT_DIM
from slotmpe.models.token_map import DenseTokens, TokenMap


def as_token_map(tokens: torch.Tensor | TokenMap) -> TokenMap:
    """``tokens`` as a :class:`TokenMap`: a dense ``(B, 72, t, d)`` tensor is wrapped."""
    return DenseTokens(tokens) if isinstance(tokens, torch.Tensor) else tokens


def gated_slot_logits(z: torch.Tensor, gate_logits: torch.Tensor) -> torch.Tensor:
    """Logit of ``sigmoid(gate) * sigmoid(z)``, computed stably.

    With ``p = sigmoid(a) sigmoid(z)``: ``logit(p) = -logsumexp(-a, -z, -a - z)``, exact and
    finite for finite inputs; ``a = -inf`` (gate 0) gives ``-inf`` (probability exactly 0) and
    ``a = +inf`` (gate 1) gives ``z``.

    Args:
        z: decoder logits ``(B, K, 72, T)``.
        gate_logits: activity logits ``(B, K)`` (may contain +-inf).

    Returns:
        slot logits ``(B, K, 72, T)``.
    """
    a = gate_logits[:, :, None, None].expand_as(z)
    stacked = torch.stack([-a, -z, -a - z], dim=0)
    # a = +inf gives -inf + (-inf) = -inf in the third term (fine); a = -inf gives +inf (fine).
    return -torch.logsumexp(stacked, dim=0)


class MaskDecoder(nn.Module):
    """Soft slot masks, activity gates and the shared convolutional pitch decoder.

    Args:
        dim: slot / token dimension ``d``.
        mask_dim: dimension of the shared slot-token similarity space.
        channels: width of the shared convolutional decoder.
        activity_hidden: hidden width of the slot activity MLP (0: a single linear layer).
    """

    def __init__(
        self,
        dim: int = SLOT_DIM,
        mask_dim: int = SLOT_DIM,
        channels: int = 16,
        activity_hidden: int = SLOT_DIM,
    ) -> None:
        super().__init__()
        self.slot_proj = nn.Linear(dim, mask_dim)
        self.feat_proj = nn.Linear(dim, mask_dim)
        a = int(activity_hidden)
        self.activity: nn.Module = (
            nn.Sequential(nn.Linear(dim, a), nn.GELU(), nn.Linear(a, 1))
            if a > 0
            else nn.Linear(dim, 1)
        )
        self.scale = 1.0 / math.sqrt(mask_dim)
        c = int(channels)
        self.conv = nn.Sequential(
            nn.Conv2d(dim, c, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, 1, kernel_size=1),
        )

    def activity_logits(self, slots: torch.Tensor) -> torch.Tensor:
        """Slot activity logits: ``slots`` ``(B, K, d)`` -> ``(B, K)``."""
        return self.activity(slots).squeeze(-1)

    def masks(
        self, tokens: torch.Tensor | TokenMap, slots: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Soft masks normalised over slots (feature projection folded onto the slots).

        ``tokens`` ``(B, 72, t, d)`` (or its :class:`TokenMap`), ``slots`` ``(B, K, d)`` -> masks
        ``(B, K, 72, t)``; ``bias`` ``(B, K, 72, t)`` (optional, extension 4f) is added to the
        logits before the softmax.
        """
        tokens = as_token_map(tokens)
        b, p, t, d = tokens.shape
        ps = self.slot_proj(slots) * self.scale  # (B, K, m)
        u = torch.matmul(ps, self.feat_proj.weight)  # (B, K, d): W_f^T p_k
        c = torch.matmul(ps, self.feat_proj.bias).unsqueeze(-1)  # (B, K, 1): b_f . p_k
        sim = tokens.dot(u) + c  # (B, K, 72 t)
        if bias is not None:
            sim = sim + bias.reshape(sim.shape)
        return torch.softmax(sim, dim=1).view(b, -1, p, t)

    def masks_reference(
        self, tokens: torch.Tensor, slots: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Literal :meth:`masks` (projects every token); used by tests."""
        sim = torch.einsum("bptc,bkc->bkpt", self.feat_proj(tokens), self.slot_proj(slots))
        sim = sim * self.scale
        return torch.softmax(sim if bias is None else sim + bias, dim=1)

    def forward(
        self,
        tokens: torch.Tensor | TokenMap,
        slots: torch.Tensor,
        gate: torch.Tensor,
        film: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask_bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode every slot.

        Args:
            tokens: token map ``(B, 72, t, d)`` or its :class:`TokenMap`.
            slots: slot vectors ``(B, K, d)``.
            gate: activity probabilities ``(B, K)`` in ``[0, 1]``.
            film: optional ``(gamma, beta)``, each ``(B, K, d)``; the masked map becomes
                ``(1 + gamma) * F_k + beta``.
            mask_bias: optional ``(B, K, 72, t)`` added to the mask logits (extension 4f).

        Returns:
            ``(masks, z)``: masks ``(B, K, 72, t)`` (ungated, sum to 1 over K) and decoder logits
            ``z`` ``(B, K, 72, t)`` (before the output gate).
        """
        tokens = as_token_map(tokens)
        b, p, t, d = tokens.shape
        k = slots.shape[1]
        m = self.masks(tokens, slots, mask_bias)
        first = self.conv[0]
        w = first.weight[:, :, 0, 0]  # (c, d)
        c = w.shape[0]
        scale = (m * gate[:, :, None, None]).reshape(b, k, p * t)  # gated masks
        # The first decoder layer is a 1x1 conv, linear in its input, so it is applied without
        # materialising the (B, K, d, 72, t) masked map (identical result, ~d/c less memory):
        #   W ((1 + gamma_k) * (g_k m_k F) + beta_k) + b = g_k m_k (W diag(1 + gamma_k) F) + W beta_k + b
        if film is None:
            h = tokens.dot(w.expand(b, c, d)).unsqueeze(1)  # (B, 1, c, 72 t), shared by all slots
            h = h * scale.unsqueeze(2)  # (B, K, c, 72 t)
            bias = first.bias.view(1, 1, c, 1)
        else:
            gamma, beta = film
            wk = w.view(1, 1, c, d) * (1.0 + gamma).unsqueeze(2)  # (B, K, c, d)
            h = tokens.dot(wk.reshape(b, k * c, d), weight=scale).view(b, k, c, p * t)
            bias = (torch.einsum("cd,bkd->bkc", w, beta) + first.bias).unsqueeze(-1)
        h = (h + bias).reshape(b * k, c, p, t)
        if self.conv[2].weight.is_contiguous(memory_format=torch.channels_last):
            # channels-last convolutions: lay the map out as they need it before the ReLU, so
            # that the ReLU's backward and the convolutions see one layout (no mixed-layout
            # elementwise kernels, no conversion inside the first convolution)
            h = h.contiguous(memory_format=torch.channels_last)
        z = self._conv_tail(torch.relu(h))  # (B K, 72, t)
        return m, z.reshape(b, k, p, t)

    def _conv_tail(self, h: torch.Tensor) -> torch.Tensor:
        """The decoder after its first layer: ``h`` ``(B K, c, 72, t)`` (after the ReLU) ->
        logits ``(B K, 72, t)``. The last layer, a 1x1 convolution to one channel, runs as a
        matrix-vector product over the channels (the same sum; the convolution kernel is slow
        for one output channel)."""
        y = self.conv[2:-1](h)  # (B K, c, 72, t)
        last = self.conv[-1]
        w = last.weight.view(1, -1)  # (1, c)
        out = torch.matmul(y.permute(0, 2, 3, 1), w.T).squeeze(-1)  # (B K, 72, t)
        # the bias in the product's dtype, as the convolution casts it (bf16 under autocast)
        return out if last.bias is None else out + last.bias.to(out.dtype)

    def forward_reference(
        self,
        tokens: torch.Tensor,
        slots: torch.Tensor,
        gate: torch.Tensor,
        film: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask_bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Literal (memory-hungry) version of :meth:`forward`: builds the masked, FiLM-modulated
        map ``(B, K, d, 72, t)`` and runs the whole conv decoder on it. Used by tests."""
        b, p, t, d = tokens.shape
        k = slots.shape[1]
        m = self.masks_reference(tokens, slots, mask_bias)
        fmap = tokens.permute(0, 3, 1, 2)  # (B, d, 72, t)
        masked = (m * gate[:, :, None, None]).unsqueeze(2) * fmap.unsqueeze(1)  # (B, K, d, 72, t)
        if film is not None:
            gamma, beta = film
            masked = masked * (1.0 + gamma[..., None, None]) + beta[..., None, None]
        z = self.conv(masked.reshape(b * k, d, p, t)).reshape(b, k, p, t)
        return m, z
