"""One batched product for the gradient of a token map used by several small products.

In :class:`slotmpe.models.slot_attention.SlotAttention` the token map ``z`` ``(B, N, d)`` enters
every attention iteration twice, as ``qk @ z^T`` (logits ``(B, K, N)``) and ``attn @ z`` (the
aggregation ``(B, K, d)``). Plain autograd therefore builds ``dL/dz`` from ``2 * n_iters`` separate
``(B, N, K) x (B, K, d)`` products, each writing a full ``(B, N, d)`` tensor, plus
``2 * n_iters - 1`` additions of ``(B, N, d)`` tensors. Every one of those terms is a product of a
``(B, K, N)`` factor and a ``(B, K, d)`` factor:

    dL/dz = sum_i  L_i^T R_i      with (L_i, R_i) = (dL/dlogits_i, qk_i) or (attn_i, dL/dnum_i)

so the whole gradient is one batched product of the factors concatenated along the slot axis:

    dL/dz = [L_1; ...; L_m]^T [R_1; ...; R_m]        (B, N, m K) x (B, m K, d),   m = 2 n_iters

:class:`TokenGradHub` implements this with small :class:`torch.autograd.Function` s:

* ``_Anchor`` takes ``z`` and returns a 0-d placeholder; every use of ``z`` depends on it, so
  autograd runs its backward only after all the uses have run theirs. That backward
  concatenates the recorded factors (in forward order, whatever order autograd ran the uses in)
  and returns ``dL/dz`` from the single product.
* ``_Logits`` (``qk @ z^T``) and ``_Aggregate`` (``attn @ z``) compute exactly the plain products
  in their forward (same op, same autocast casts: bit-identical outputs) and, in their backward,
  return the gradient of their other operand as usual but only *record* the ``(L_i, R_i)`` pair
  for ``z`` (returning a 0-d zero for the placeholder).

Precision: the factors are kept in the dtype the forward products ran in (bf16 under autocast,
like plain autograd's), and the one product accumulates all ``m`` terms before a single rounding;
the result is cast to ``z``'s dtype. In float32 the two paths agree to ~1e-6 relative (summation
order); both are deterministic (no atomics; the factor order is fixed by the forward).

Limits: no double backward (``once_differentiable``); the hub is for one forward/backward (a
second backward through a retained graph works because the factors are consumed and recorded
again); not for ``torch.compile`` (the caller falls back to the plain products there).
"""

from __future__ import annotations

from typing import Any

import torch


class _State:
    """What the uses of ``z`` share: ``z``, its casts and the recorded gradient factors.

    Kept apart from :class:`TokenGradHub` so that no autograd context refers to the placeholder
    it produced (no reference cycle through the graph).
    """

    def __init__(self, z: torch.Tensor) -> None:
        self.z = z
        self.cast: dict[torch.dtype, torch.Tensor] = {}
        self.factors: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.n_uses = 0

    def next_use(self) -> int:
        self.n_uses += 1
        return self.n_uses - 1

    def z_as(self, dtype: torch.dtype) -> torch.Tensor:
        """``z`` detached and cast to ``dtype`` (cast once, shared by all uses' backward)."""
        if dtype not in self.cast:
            self.cast[dtype] = self.z.detach().to(dtype)
        return self.cast[dtype]

    def record(self, use: int, left: torch.Tensor, right: torch.Tensor) -> None:
        """Store use ``use``'s term ``left^T right`` of ``dL/dz``: ``left`` ``(B, K, N)``,
        ``right`` ``(B, K, d)``."""
        self.factors[use] = (left, right)

    def gradient(self) -> torch.Tensor | None:
        """``dL/dz`` ``(B, N, d)`` from the recorded factors (consumed), ``None`` if none."""
        if not self.factors:
            return None
        pairs = [self.factors[k] for k in sorted(self.factors)]
        self.factors = {}
        self.cast = {}
        dtype = pairs[0][0].dtype
        left = torch.cat([p[0].to(dtype) for p in pairs], dim=1)  # (B, m K, N)
        right = torch.cat([p[1].to(dtype) for p in pairs], dim=1)  # (B, m K, d)
        with torch.autocast(self.z.device.type, enabled=False):
            grad = torch.bmm(left.transpose(1, 2), right)  # (B, N, d)
        return grad.to(self.z.dtype)


class TokenGradHub:
    """The uses of one token map ``z`` ``(B, N, d)`` whose gradient is built in one product.

    Create it once per forward, then call :meth:`logits` and :meth:`aggregate` any number of
    times instead of ``qk @ z^T`` and ``attn @ z``.
    """

    def __init__(self, z: torch.Tensor) -> None:
        if z.dim() != 3:
            raise ValueError(f"token_grad.TokenGradHub: z must be (B, N, d), got {tuple(z.shape)}")
        self._state = _State(z)
        self._anchor: torch.Tensor = _Anchor.apply(z, self._state)  # 0-d placeholder

    @staticmethod
    def applies(z: torch.Tensor) -> bool:
        """Whether the fused gradient is worth (and safe) using for ``z``: gradients are being
        recorded, ``z`` needs one, and no ``torch.compile`` trace is running."""
        return torch.is_grad_enabled() and z.requires_grad and not torch.compiler.is_compiling()

    def logits(self, qk: torch.Tensor) -> torch.Tensor:
        """``qk @ z^T``: ``qk`` ``(B, K, d)`` -> ``(B, K, N)`` (bit-identical to the plain op)."""
        return _Logits.apply(qk, self._anchor, self._state)

    def aggregate(self, attn: torch.Tensor) -> torch.Tensor:
        """``attn @ z``: ``attn`` ``(B, K, N)`` -> ``(B, K, d)`` (bit-identical to the plain op)."""
        return _Aggregate.apply(attn, self._anchor, self._state)


def _placeholder_grad(ctx: Any) -> torch.Tensor:
    return torch.zeros((), dtype=ctx.anchor_dtype, device=ctx.anchor_device)


class _Anchor(torch.autograd.Function):
    """``z`` -> 0-d placeholder; its backward returns the fused ``dL/dz``."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, state: _State) -> torch.Tensor:  # noqa: D102
        ctx.state = state
        return torch.zeros((), dtype=z.dtype, device=z.device)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, _: torch.Tensor) -> tuple[torch.Tensor | None, None]:  # noqa: D102
        return ctx.state.gradient(), None


class _Logits(torch.autograd.Function):
    """``qk @ z^T`` (``z`` reached through the state, the placeholder carries the dependency)."""

    @staticmethod
    def forward(ctx: Any, qk: torch.Tensor, anchor: torch.Tensor, state: _State
                ) -> torch.Tensor:  # noqa: D102
        out = torch.matmul(qk, state.z.transpose(1, 2))  # (B, K, N), autocast as in plain code
        ctx.state, ctx.use, ctx.qk_dtype = state, state.next_use(), qk.dtype
        ctx.anchor_dtype, ctx.anchor_device = anchor.dtype, anchor.device
        ctx.save_for_backward(qk.detach().to(out.dtype))
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:  # noqa: D102
        (qk_c,) = ctx.saved_tensors
        state: _State = ctx.state
        g_qk = g_anchor = None
        if ctx.needs_input_grad[0]:
            with torch.autocast(g.device.type, enabled=False):
                g_qk = torch.matmul(g, state.z_as(g.dtype)).to(ctx.qk_dtype)  # (B, K, d)
        if ctx.needs_input_grad[1]:
            state.record(ctx.use, g, qk_c)  # dL/dz += g^T qk
            g_anchor = _placeholder_grad(ctx)
        return g_qk, g_anchor, None


class _Aggregate(torch.autograd.Function):
    """``attn @ z`` (``z`` reached through the state, the placeholder carries the dependency)."""

    @staticmethod
    def forward(ctx: Any, attn: torch.Tensor, anchor: torch.Tensor, state: _State
                ) -> torch.Tensor:  # noqa: D102
        out = torch.matmul(attn, state.z)  # (B, K, d), autocast as in plain code
        ctx.state, ctx.use, ctx.attn_dtype = state, state.next_use(), attn.dtype
        ctx.anchor_dtype, ctx.anchor_device = anchor.dtype, anchor.device
        ctx.save_for_backward(attn.detach().to(out.dtype))
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:  # noqa: D102
        (attn_c,) = ctx.saved_tensors
        state: _State = ctx.state
        g_attn = g_anchor = None
        if ctx.needs_input_grad[0]:
            with torch.autocast(g.device.type, enabled=False):
                z_t = state.z_as(g.dtype).transpose(1, 2)
                g_attn = torch.matmul(g, z_t).to(ctx.attn_dtype)  # (B, K, N)
        if ctx.needs_input_grad[1]:
            state.record(ctx.use, attn_c, g)  # dL/dz += attn^T g
            g_anchor = _placeholder_grad(ctx)
        return g_attn, g_anchor, None
