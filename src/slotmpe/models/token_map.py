"""The slot head's token map and the two products every consumer takes of it.

The slot attention (:mod:`slotmpe.models.slot_attention`) and the mask decoder
(:mod:`slotmpe.models.decoder`) use the ``d``-channel token map ``z`` ``(B, P, t, d)`` (``P = 72``
pitches, ``N = P t`` tokens) only through two kinds of product:

* ``dot(q)``: ``q_m . z_j`` for query rows ``q`` ``(B, M, d)`` -> ``(B, M, N)`` (attention logits,
  mask similarities, the decoder's first 1x1 convolution);
* ``wsum(a)``: ``sum_j a_mj z_j`` for weights ``a`` ``(B, M, N)`` -> ``(B, M, d)`` (the slot
  update).

:class:`DenseTokens` holds ``z`` itself. :class:`FactoredTokens` never builds it: the token map is

    z_j = g * (y_j - mean(y_j)) / s_j + beta,    y_j = W x_j + b + e_p(j),
    s_j = sqrt(var(y_j) + eps)                                           (LayerNorm over d)

with ``x_j`` the ``Cs``-channel (32) normalised slot-branch feature, ``W`` ``(d, Cs)`` and ``b``
the token projection, ``e_p`` the pitch embedding and ``(g, beta)`` the LayerNorm's affine
parameters. With the centred ``W~ = W - mean_d(W)`` and ``c~_p = c_p - mean_d(c_p)``,
``c_p = b + e_p``, the centred token is ``u_j = W~ x_j + c~_p``, so

    q . z_j = (1 / s_j) [ ((q * g) W~) . x_j + (q * g) . c~_p(j) ] + q . beta
    sum_j a_j z_j = g * ( W~ sum_j (a_j / s_j) x_j + sum_p (sum_{j in p} a_j / s_j) c~_p )
                    + beta sum_j a_j
    var(y_j) = |u_j|^2 / d = ( x_j^T G x_j + 2 h_p(j) . x_j + |c~_p(j)|^2 ) / d,
               G = W~^T W~ (Cs x Cs),  h_p = W~^T c~_p

(the variance in float64, so that the expanded square loses nothing to cancellation). Every
per-token product then runs over ``Cs`` (32) channels instead of ``d`` (192), and neither the
forward nor the backward touches a ``(B, N, d)`` tensor: the token projection and the LayerNorm
over ``d`` are gone from the per-token work. The parameters are the same (``token_proj``,
``pitch_emb``, ``input_norm``), so checkpoints load unchanged; the result equals the dense map's
to float32 rounding (tests/test_models.py). It needs the LayerNorm over ``d`` to be the last step
of the token map, which :meth:`SlotAttention.tokens` guarantees.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from slotmpe.models.token_grad import TokenGradHub


class TokenMap(Protocol):
    """What the slot head needs of a token map ``(B, P, t, d)`` (``N = P t`` tokens)."""

    shape: tuple[int, int, int, int]

    def dot(self, q: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``q`` ``(B, M, d)`` -> ``q_m . z_j`` ``(B, M, N)``; with ``weight`` ``(B, G, N)``
        (``M = G c``), row ``m`` of group ``m // c`` is multiplied by ``weight[:, m // c]``."""
        ...

    def wsum(self, a: torch.Tensor) -> torch.Tensor:
        """``a`` ``(B, M, N)`` -> ``sum_j a_mj z_j`` ``(B, M, d)``."""
        ...

    def dense(self) -> torch.Tensor:
        """The token map ``z`` ``(B, P, t, d)`` itself."""
        ...


def _weighted(out: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """``out`` ``(B, M, N)`` times ``weight`` ``(B, G, N)`` broadcast over groups of ``M / G`` rows."""
    if weight is None:
        return out
    b, m, n = out.shape
    g = weight.shape[1]
    return (out.view(b, g, m // g, n) * weight.unsqueeze(2)).view(b, m, n)


class DenseTokens:
    """A materialised token map ``z`` ``(B, P, t, d)``.

    Args:
        z: the token map.
        fused_grad: route the products through one :class:`TokenGradHub` (the gradient of ``z``
            in one batched product), where it applies (gradients recorded, not compiling).
    """

    def __init__(self, z: torch.Tensor, fused_grad: bool = False) -> None:
        if z.dim() != 4:
            raise ValueError(f"token_map.DenseTokens: z must be (B, P, t, d), got {tuple(z.shape)}")
        b, p, t, d = z.shape
        self.shape = (b, p, t, d)
        self._z = z
        self._flat = z.reshape(b, p * t, d)
        self._hub = (
            TokenGradHub(self._flat) if fused_grad and TokenGradHub.applies(self._flat) else None
        )

    def dot(self, q: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """See :meth:`TokenMap.dot`."""
        if self._hub is not None:
            out = self._hub.logits(q)
        else:
            out = torch.matmul(q, self._flat.transpose(1, 2))
        return _weighted(out, weight)

    def wsum(self, a: torch.Tensor) -> torch.Tensor:
        """See :meth:`TokenMap.wsum`."""
        if self._hub is not None:
            return self._hub.aggregate(a)
        return torch.matmul(a, self._flat)

    def dense(self) -> torch.Tensor:
        """See :meth:`TokenMap.dense`."""
        return self._z


class FactoredTokens:
    """The token map ``LN_d(W x + b + e_p)`` kept as its ``Cs``-channel factors (module docstring).

    Args:
        x: normalised slot-branch features ``(B, P, t, Cs)``.
        proj: the token projection ``Linear(Cs, d)``.
        pitch_emb: the pitch embedding ``(P, d)``.
        norm: the LayerNorm over ``d`` (elementwise affine).
    """

    def __init__(self, x: torch.Tensor, proj: nn.Linear, pitch_emb: torch.Tensor,
                 norm: nn.LayerNorm) -> None:
        if x.dim() != 4 or x.shape[1] != pitch_emb.shape[0] or x.shape[-1] != proj.in_features:
            raise ValueError(
                f"token_map.FactoredTokens: x must be (B, {pitch_emb.shape[0]}, t, "
                f"{proj.in_features}), got {tuple(x.shape)}"
            )
        if norm.weight is None or norm.bias is None:
            raise ValueError("token_map.FactoredTokens: the LayerNorm needs its affine parameters")
        b, p, t, cs = x.shape
        d = proj.out_features
        self.shape = (b, p, t, d)
        self._pt = p * t
        w = proj.weight  # (d, Cs)
        self._wc = w - w.mean(0, keepdim=True)  # (d, Cs), centred over d
        c = proj.bias + pitch_emb  # (P, d)
        self._cc = c - c.mean(-1, keepdim=True)  # (P, d), centred over d
        self._g, self._beta = norm.weight, norm.bias
        # |u_j|^2 = x^T G x + 2 h_p . x + |c~_p|^2, in float64 (no loss to cancellation)
        wc64, cc64, x64 = self._wc.double(), self._cc.double(), x.double()
        gram = wc64.T @ wc64  # (Cs, Cs)
        hp = cc64 @ wc64  # (P, Cs)
        sq = ((x64 @ gram + 2.0 * hp[:, None, :]) * x64).sum(-1) + (cc64 * cc64).sum(-1)[:, None]
        s = torch.sqrt(sq / d + norm.eps).to(x.dtype)  # (B, P, t)
        self._r = (1.0 / s).view(b, 1, p * t)  # (B, 1, N)
        self._x = x.reshape(b, p * t, cs)
        # x augmented with s_j: its coefficient q . beta / ... carries the beta term of dot()
        self._xs = torch.cat([self._x, s.view(b, p * t, 1)], dim=-1)  # (B, N, Cs + 1)
        self._p, self._t = p, t

    def dot(self, q: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """See :meth:`TokenMap.dot`: ``r_j ((q g) W~ . x_j + (q g) . c~_p + (q . beta) s_j)``."""
        b, m, _ = q.shape
        qg = q * self._g
        coef = torch.cat([torch.matmul(qg, self._wc), torch.matmul(q, self._beta)[..., None]],
                         dim=-1)  # (B, M, Cs + 1)
        per_pitch = torch.matmul(qg, self._cc.T)  # (B, M, P)
        core = torch.matmul(coef, self._xs.transpose(1, 2)).view(b, m, self._p, self._t)
        core = (core + per_pitch[..., None]).view(b, m, self._pt)
        r = self._r if weight is None else self._r * weight  # (B, 1 | G, N)
        g = r.shape[1]
        return (core.view(b, g, m // g, self._pt) * r.unsqueeze(2)).view(b, m, self._pt)

    def wsum(self, a: torch.Tensor) -> torch.Tensor:
        """See :meth:`TokenMap.wsum`."""
        b, m, _ = a.shape
        ar = a * self._r  # (B, M, N)
        sx = torch.matmul(ar, self._x)  # (B, M, Cs)
        sp = ar.view(b, m, self._p, self._t).sum(-1)  # (B, M, P)
        u = torch.matmul(sx, self._wc.T) + torch.matmul(sp, self._cc)  # (B, M, d)
        return u * self._g + a.sum(-1, keepdim=True) * self._beta

    def dense(self) -> torch.Tensor:
        """See :meth:`TokenMap.dense` (built on demand; the fast paths never call it)."""
        b, p, t, d = self.shape
        u = torch.matmul(self._x, self._wc.T).view(b, p, t, d) + self._cc[:, None, :]
        return u * self._r.view(b, p, t, 1) * self._g + self._beta
