"""The token map's gradient built in one batched product (slotmpe.models.token_grad) is exact:
the forward is bit-identical, every gradient equals plain autograd's to float rounding, the
result is deterministic, and the backward really builds ``dL/dz`` in one product.

The hub serves the dense token map, so these tests switch the factored one off
(``factored_tokens = False``; the factored map is tested in tests/test_token_map.py)."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from slotmpe.models import build_model
from slotmpe.models.slot_attention import SlotAttention
from slotmpe.models.token_grad import TokenGradHub

Grads = dict[str, torch.Tensor]


def _rel_err(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-30) -> float:
    """Largest elementwise difference relative to the largest magnitude of ``b`` (at least
    ``floor``)."""
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(floor))


def _max_rel_err(a: Grads, b: Grads) -> float:
    """:func:`_rel_err` over all gradients; a gradient that is zero in theory (e.g. the bias of
    the query projection: the softmax over slots ignores a common shift) holds only rounding
    noise, so each scale is at least 1e-3 of the largest gradient magnitude."""
    assert a.keys() == b.keys()
    floor = 1e-3 * max(float(v.float().abs().max()) for v in b.values())
    return max(_rel_err(a[k], b[k], floor) for k in a)


def _slot_attention_run(
    m: SlotAttention, feat: torch.Tensor, fused: bool, bf16: bool = False, reference: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, Grads]:
    """Slots ``(B, K, d)``, attention ``(B, K, 72, T)`` (``None`` with several chunks) and the gradients of every parameter and
    of ``feat`` for a fixed loss that uses both outputs."""
    m.fused_token_grad = fused
    m.zero_grad(set_to_none=True)
    x = feat.detach().clone().requires_grad_(True)
    with torch.autocast(feat.device.type, dtype=torch.bfloat16, enabled=bf16):
        slots, attn = m.forward_reference(x) if reference else m(x)
    gen = torch.Generator().manual_seed(1)
    w_s = torch.randn(slots.shape, generator=gen).to(slots.device)
    loss = (slots.float() * w_s).sum()
    if attn is not None:  # None: several token chunks
        loss = loss + (attn.float() * torch.randn(attn.shape, generator=gen).to(attn.device)).sum()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in m.named_parameters() if p.grad is not None}
    assert x.grad is not None
    grads["input"] = x.grad.detach().clone()
    return slots.detach(), None if attn is None else attn.detach(), grads


def _slot_attention(device: str = "cpu", k: int = 8, cs: int = 16, t: int = 9
                    ) -> tuple[SlotAttention, torch.Tensor]:
    torch.manual_seed(0)
    m = SlotAttention(cs, k, dim=48, ffn_hidden=64, factored_tokens=False).to(device)
    return m, torch.randn(3, cs, 72, t, device=device)


def test_slot_attention_forward_identical_gradients_equal() -> None:
    m, feat = _slot_attention()
    s0, a0, g0 = _slot_attention_run(m, feat, fused=False)
    s1, a1, g1 = _slot_attention_run(m, feat, fused=True)
    assert torch.equal(s0, s1) and torch.equal(a0, a1)
    assert len(g1) == len(list(m.parameters())) + 1
    assert _max_rel_err(g1, g0) < 1e-4
    # and against the literal (unfolded) slot attention
    _, _, gr = _slot_attention_run(m, feat, fused=True, reference=True)
    assert _max_rel_err(g1, gr) < 1e-4


def test_fused_is_deterministic() -> None:
    m, feat = _slot_attention()
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        _, _, g1 = _slot_attention_run(m, feat, fused=True)
        _, _, g2 = _slot_attention_run(m, feat, fused=True)
    finally:
        torch.use_deterministic_algorithms(prev)
    assert all(torch.equal(g1[k], g2[k]) for k in g1)


def test_bf16_autocast_cpu() -> None:
    """Under CPU bf16 autocast the forward is still bit-identical, every gradient keeps its
    parameter's dtype, and the fused gradient is as close to the float32 one as plain autograd's
    (it rounds once instead of once per term)."""
    m, feat = _slot_attention()
    _, _, g32 = _slot_attention_run(m, feat, fused=False)
    s0, a0, g0 = _slot_attention_run(m, feat, fused=False, bf16=True)
    s1, a1, g1 = _slot_attention_run(m, feat, fused=True, bf16=True)
    assert torch.equal(s0, s1) and torch.equal(a0, a1)
    assert all(g1[k].dtype == g0[k].dtype == torch.float32 for k in g1)
    assert _max_rel_err(g1, g0) < 3e-2
    for k in g1:
        assert _rel_err(g1[k], g32[k]) <= 1.5 * _rel_err(g0[k], g32[k]) + 1e-3, k


@pytest.mark.parametrize("exp", ["2b", "3c"])
def test_real_model_gradients_equal(exp: str) -> None:
    """The real model config (K of the experiment, d 192, 3 iterations, 23-frame windows): all
    parameter gradients and the input gradient agree, the outputs are bit-identical."""
    torch.manual_seed(0)
    model = build_model(exp).train()
    model.slot_attention.factored_tokens = False
    x0 = torch.randn(2, 12, 216, 23)

    def run(fused: bool) -> tuple[dict[str, torch.Tensor], Grads]:
        model.slot_attention.fused_token_grad = fused
        model.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(True)
        out = model(x)
        gen = torch.Generator().manual_seed(2)
        loss = sum((v.float() * torch.randn(v.shape, generator=gen)).sum() for v in out.values())
        loss.backward()  # type: ignore[union-attr]
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        grads["input"] = x.grad.clone()  # type: ignore[union-attr]
        return {k: v.detach() for k, v in out.items()}, grads

    out0, g0 = run(False)
    out1, g1 = run(True)
    assert all(torch.equal(out0[k], out1[k]) for k in out0)
    assert any(k.startswith("slot_attention.") for k in g1)
    assert _max_rel_err(g1, g0) < 1e-4


class _ProductShapes(TorchDispatchMode):
    """Records the output shapes of the matrix products dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in (torch.ops.aten.bmm, torch.ops.aten.mm, torch.ops.aten.matmul):
            self.shapes.append(tuple(out.shape))
        return out


def test_token_gradient_is_one_product() -> None:
    """Backward builds a ``(B, N, d)`` product once with fusion, ``2 n_iters`` times without
    (``(B, d, N)`` for the transposed use in the logits)."""
    m, feat = _slot_attention()
    b, n, d = feat.shape[0], 72 * feat.shape[-1], m.dim
    counts = {}
    for fused in (False, True):
        m.fused_token_grad = fused
        x = feat.clone().requires_grad_(True)
        slots, _ = m(x)
        mode = _ProductShapes()
        with mode:
            slots.sum().backward()
        counts[fused] = sum(s in ((b, n, d), (b, d, n), (b * n, d)) for s in mode.shapes)
    assert counts == {False: 2 * m.n_iters, True: 1}


def test_chunked_and_no_grad_paths() -> None:
    """Several token chunks (long inputs) or no gradient recording: the plain products are used
    and the results do not depend on the flag."""
    m, feat = _slot_attention()
    m.token_chunk = 72 * 4  # 3 chunks of the 9 frames
    s0, _, g0 = _slot_attention_run(m, feat, fused=False)
    s1, _, g1 = _slot_attention_run(m, feat, fused=True)
    assert torch.equal(s0, s1) and all(torch.equal(g0[k], g1[k]) for k in g0)
    m.token_chunk = 65_536
    with torch.no_grad():
        m.fused_token_grad = True
        s_ng, _ = m(feat)
    s_g, _, _ = _slot_attention_run(m, feat, fused=True)
    assert torch.equal(s_ng, s_g)


def _hub_products(z: torch.Tensor, qk: torch.Tensor, attn: torch.Tensor, fused: bool
                  ) -> torch.Tensor:
    hub = TokenGradHub(z) if fused else None
    logits = hub.logits(qk) if hub else torch.matmul(qk, z.transpose(1, 2))
    agg = hub.aggregate(attn) if hub else torch.matmul(attn, z)
    return (logits * logits).sum() + (agg * agg).sum()


def test_hub_retain_graph_partial_and_no_cycle() -> None:
    """A retained graph can be backpropagated twice (same as plain autograd); a loss that uses
    only some products works; nothing stays alive through a reference cycle."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 30, 6, generator=gen, requires_grad=True)
    qk = torch.randn(2, 4, 6, generator=gen, requires_grad=True)
    attn = torch.randn(2, 4, 30, generator=gen, requires_grad=True)
    ref = torch.autograd.grad(_hub_products(z, qk, attn, False), (z, qk, attn))
    loss = _hub_products(z, qk, attn, True)
    for _ in range(2):
        got = torch.autograd.grad(loss, (z, qk, attn), retain_graph=True)
        assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(got, ref, strict=True))
    hub = TokenGradHub(z)
    only = hub.aggregate(attn).pow(2).sum()
    (gz,) = torch.autograd.grad(only, (z,))
    assert torch.allclose(gz, torch.autograd.grad(torch.matmul(attn, z).pow(2).sum(), (z,))[0])
    state = weakref.ref(hub._state)
    del hub, only, loss
    gc.disable()
    try:
        assert state() is None
    finally:
        gc.enable()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("bf16", [False, True])
def test_cuda(bf16: bool) -> None:
    m, feat = _slot_attention("cuda")
    prev = torch.are_deterministic_algorithms_enabled()
    prev_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.use_deterministic_algorithms(True)
    try:
        s0, a0, g0 = _slot_attention_run(m, feat, fused=False, bf16=bf16)
        s1, a1, g1 = _slot_attention_run(m, feat, fused=True, bf16=bf16)
        _, _, g2 = _slot_attention_run(m, feat, fused=True, bf16=bf16)
    finally:
        torch.use_deterministic_algorithms(prev)
        torch.backends.cuda.matmul.allow_tf32 = prev_tf32
    assert torch.equal(s0, s1) and torch.equal(a0, a1)
    assert all(g1[k].dtype == g0[k].dtype for k in g1)
    assert all(torch.equal(g1[k], g2[k]) for k in g1)
    assert _max_rel_err(g1, g0) < (3e-2 if bf16 else 1e-4)
