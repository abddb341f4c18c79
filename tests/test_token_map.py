"""The factored token map (slotmpe.models.token_map.FactoredTokens) is exact: its products equal
those of the dense map ``SlotAttention.tokens`` to float32 rounding, also where the LayerNorm's
variance is small against its parts (cancellation), and the whole model gives the same outputs
and gradients with it as with the dense map (the code before it)."""

from __future__ import annotations

import copy

import pytest
import torch

from slotmpe.models import build_model
from slotmpe.models.slot_attention import SlotAttention
from slotmpe.models.token_map import DenseTokens, FactoredTokens

torch.set_num_threads(1)

Grads = dict[str, torch.Tensor]


def _rel(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-30) -> float:
    """Largest difference relative to the largest magnitude of ``b`` (at least ``floor``)."""
    return float((a - b).abs().max().detach() / b.abs().max().detach().clamp_min(floor))


def _max_rel(a: Grads, b: Grads) -> float:
    """:func:`_rel` over all gradients, each scale at least 1e-3 of the largest gradient (a
    gradient that is zero in theory, e.g. of the query bias, holds only rounding noise)."""
    assert a.keys() == b.keys()
    floor = 1e-3 * max(float(v.abs().max()) for v in b.values())
    return max(_rel(a[k], b[k], floor) for k in a)


def _attention(cs: int = 16, d: int = 48, seed: int = 0) -> SlotAttention:
    """Slot attention with every token-map parameter away from its initial value (LayerNorm
    affine, projection bias, pitch embedding)."""
    torch.manual_seed(seed)
    m = SlotAttention(cs, 6, dim=d, ffn_hidden=64)
    with torch.no_grad():
        for p in (m.token_norm.weight, m.input_norm.weight):
            p.copy_(1.0 + 0.3 * torch.randn_like(p))
        for p in (m.token_norm.bias, m.input_norm.bias, m.token_proj.bias):
            p.copy_(0.2 * torch.randn_like(p))
        m.pitch_emb.mul_(20.0)
    return m


def _maps(m: SlotAttention, feat: torch.Tensor) -> tuple[DenseTokens, FactoredTokens]:
    m.factored_tokens = True
    fac = m.token_map(feat)
    assert isinstance(fac, FactoredTokens)
    return DenseTokens(m.tokens(feat)), fac


def test_products_equal_dense_map() -> None:
    m = _attention()
    gen = torch.Generator().manual_seed(1)
    feat = torch.randn(3, 16, 72, 5, generator=gen)
    dense, fac = _maps(m, feat)
    assert fac.shape == dense.shape == (3, 72, 5, 48)
    assert _rel(fac.dense(), dense.dense()) < 1e-5
    q = torch.randn(3, 8, 48, generator=gen)
    assert _rel(fac.dot(q), dense.dot(q)) < 1e-5
    w = torch.rand(3, 2, 72 * 5, generator=gen)  # two groups of four rows
    assert _rel(fac.dot(q, weight=w), dense.dot(q, weight=w)) < 1e-5
    a = torch.rand(3, 8, 72 * 5, generator=gen)
    assert _rel(fac.wsum(a), dense.wsum(a)) < 1e-5


def test_gradients_equal_dense_map() -> None:
    """Gradients of every token-map parameter and of the features through both products."""
    m = _attention()
    gen = torch.Generator().manual_seed(2)
    feat0 = torch.randn(2, 16, 72, 4, generator=gen)
    q = torch.randn(2, 5, 48, generator=gen)
    a = torch.rand(2, 5, 72 * 4, generator=gen)
    w_dot, w_sum = torch.randn(2, 5, 72 * 4, generator=gen), torch.randn(2, 5, 48, generator=gen)
    grads = {}
    for factored in (False, True):
        m.zero_grad(set_to_none=True)
        m.factored_tokens = factored
        feat = feat0.clone().requires_grad_(True)
        tm = m.token_map(feat) if factored else DenseTokens(m.tokens(feat))
        loss = (tm.dot(q) * w_dot).sum() + (tm.wsum(a) * w_sum).sum()
        loss.backward()
        g = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        g["feat"] = feat.grad.clone()  # type: ignore[union-attr]
        grads[factored] = g
    assert {"token_proj.weight", "pitch_emb", "input_norm.weight", "token_norm.bias"} <= set(grads[True])
    assert _max_rel(grads[True], grads[False]) < 1e-4


def test_small_variance_no_cancellation() -> None:
    """Tokens whose pre-norm vector is nearly constant over ``d`` (variance ~1e-6 of its parts'
    squares): the factored map (variance from the expanded square, in float64) is as close to
    the float64 truth as the dense float32 LayerNorm (the expansion in float32 would be off by
    tens of per cent here)."""
    m = _attention()
    gen = torch.Generator().manual_seed(3)
    feat = torch.randn(1, 16, 72, 3, generator=gen)
    with torch.no_grad():
        x = m.token_norm(feat.permute(0, 2, 3, 1))[0, :, 0]  # (72, Cs) tokens at t = 0
        y = m.token_proj(x)  # (72, d)
        # pitch embedding that cancels the projected token at t = 0 up to 1e-3 (and a constant)
        m.pitch_emb.copy_(-y + 5.0 + 1e-3 * torch.randn(y.shape, generator=gen))
        dense, fac = _maps(m, feat)
        pre = m.token_proj(m.token_norm(feat.permute(0, 2, 3, 1))) + m.pitch_emb[:, None]
        var = pre.var(-1, unbiased=False)[0, :, 0]
        assert float(var.max()) < 1e-5  # the case: tiny variance, parts of magnitude ~5
        truth = copy.deepcopy(m).double().tokens(feat.double())
        err_fac = _rel(fac.dense().double(), truth)
        err_dense = _rel(dense.dense().double(), truth)
        assert err_fac < 1e-3
        assert err_fac <= 3.0 * err_dense + 1e-6
        q = torch.randn(1, 4, 48, generator=gen)
        truth_dot = torch.matmul(q.double(), truth.reshape(1, -1, 48).transpose(1, 2))
        assert _rel(fac.dot(q).double(), truth_dot) <= 3.0 * _rel(dense.dot(q).double(), truth_dot) + 1e-6


@pytest.mark.parametrize("name", ["1c", "2b", "3c"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_model_factored_equals_dense(name: str, channels_last: bool) -> None:
    """The real model (with and without FiLM; both layouts): outputs and the gradients of every
    parameter and of the input agree with the dense token map's."""
    torch.manual_seed(0)
    model = build_model(name).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x0 = torch.randn(2, 12, 216, 23).contiguous(memory_format=fmt)
    runs = {}
    for factored in (False, True):
        model.slot_attention.factored_tokens = factored
        model.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(True)
        out = model(x)
        gen = torch.Generator().manual_seed(4)
        loss = sum((v * torch.randn(v.shape, generator=gen)).sum() for v in out.values())
        loss.backward()  # type: ignore[union-attr]
        g = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        g["input"] = x.grad.clone()  # type: ignore[union-attr]
        runs[factored] = ({k: v.detach() for k, v in out.items()}, g)
    (o0, g0), (o1, g1) = runs[False], runs[True]
    for k in o0:
        assert _rel(o1[k], o0[k]) < 1e-5, k
    assert _max_rel(g1, g0) < 1e-4


def test_eval_chunked_factored_equals_dense() -> None:
    """Long inputs in eval mode (token chunks, time chunks): the same slots and logits."""
    torch.manual_seed(0)
    model = build_model("2b", chunk_frames=16, token_chunk=72 * 8).eval()
    x = torch.randn(1, 12, 216, 40)
    outs = []
    with torch.no_grad():
        for factored in (False, True):
            model.slot_attention.factored_tokens = factored
            outs.append(model(x))
    for k in outs[0]:
        assert _rel(outs[1][k], outs[0][k]) < 1e-5, k


def test_bf16_autocast_runs() -> None:
    """Under CPU bf16 autocast the factored map gives finite outputs close to the dense map's, in
    the same dtypes (bf16, as before it), and float32 gradients."""
    torch.manual_seed(0)
    model = build_model("2b").train()
    x = torch.randn(2, 12, 216, 23)
    outs = []
    for factored in (False, True):
        model.slot_attention.factored_tokens = factored
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        assert out["slot_logits"].dtype == out["mix_logits"].dtype == torch.bfloat16
        out["slot_logits"].float().sigmoid().mean().backward()
        assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)
        outs.append(out["slot_logits"].float().detach())
    assert torch.isfinite(outs[1]).all()
    assert _rel(outs[1], outs[0]) < 5e-2
