"""Tests of slotmpe.models: shapes, slot symmetry, masks, gates, gradients, checkpoints, sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slotmpe.experiments import EXPERIMENTS, active_loss_terms
from slotmpe.models import (
    CheckpointError,
    build_model,
    count_parameters,
    load_checkpoint,
    save_checkpoint,
)
from slotmpe.models.decoder import gated_slot_logits

torch.set_num_threads(1)


def _x(b: int, t: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 12, 216, t, generator=g)


def _model(name: str, seed: int = 0, **widths: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, **widths)


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_output_shapes_window(name: str) -> None:
    exp = EXPERIMENTS[name]
    m = _model(name).eval()
    with torch.no_grad():
        out = m(_x(2, 23))
    k = exp.n_slots
    expected = {"mix_logits": (2, 72, 23)}
    if exp.uses_slots:
        expected |= {
            "slot_logits": (2, k, 72, 23),
            "activity_logits": (2, k),
            "masks": (2, k, 72, 23),
            "union_prob": (2, 72, 23),
            "union_logits": (2, 72, 23),
        }
    if exp.timbre_head:
        expected["timbre"] = (2, k, 128)
    if exp.poly_head:
        expected["poly_logits"] = (2, 8, 23)
    assert {key: tuple(v.shape) for key, v in out.items()} == expected
    for v in out.values():
        assert torch.isfinite(v).all()
    if exp.timbre_head:
        assert torch.allclose(out["timbre"].norm(dim=-1), torch.ones(2, k), atol=1e-5)


# narrow widths for the long-input tests: the chunking logic does not depend on widths
NARROW = {
    "trunk_channels": (8, 8, 8),
    "global_channels": (8, 8),
    "slot_channels": (8, 8),
    "slot_dim": 16,
    "ffn_hidden": 16,
    "mask_dim": 16,
    "decoder_channels": 8,
    "timbre_hidden": 16,
    "embed_dim": 16,
    "poly_channels": 4,
    "poly_hidden": 8,
}


def test_long_input_chunked_equals_single_pass() -> None:
    """A long file runs in chunks (time and tokens) and gives the single-pass result."""
    t = 700
    m = _model("3c", **NARROW).eval()
    x = _x(1, t, seed=1)
    with torch.no_grad():
        m.chunk_frames = 10_000
        m.slot_attention.token_chunk = 10**9
        full = m(x)
        m.chunk_frames = 160
        m.slot_attention.token_chunk = 72 * 100
        chunked = m(x)
    assert full["slot_logits"].shape == (1, 8, 72, t)
    assert full["poly_logits"].shape == (1, 8, t)
    for key in full:
        torch.testing.assert_close(chunked[key], full[key], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["1a", "2b"])
def test_long_input_shapes(name: str) -> None:
    t = 3000  # ~96 s of audio, processed in chunks of the default size
    m = _model(name, **NARROW).eval()
    with torch.no_grad():
        out = m(_x(1, t))
    assert out["mix_logits"].shape == (1, 72, t)
    if name == "2b":
        assert out["slot_logits"].shape == (1, 8, 72, t)
        assert out["masks"].shape == (1, 8, 72, t)
        assert out["timbre"].shape == (1, 8, 16)
        assert torch.isfinite(out["slot_logits"]).all()


@pytest.mark.parametrize("name", ["1c", "3c"])
def test_permuting_queries_permutes_slots(name: str) -> None:
    m = _model(name).eval()
    x = _x(2, 23, seed=2)
    q = m.slot_attention.queries.detach()
    perm = torch.randperm(q.shape[0], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = m(x)
        b = m(x, queries=q[perm])
    for key in ("slot_logits", "activity_logits", "masks") + (("timbre",) if "timbre" in a else ()):
        torch.testing.assert_close(b[key], a[key][:, perm], atol=1e-5, rtol=1e-4)
    for key in ("mix_logits", "union_prob", "union_logits") + (
        ("poly_logits",) if "poly_logits" in a else ()
    ):
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["1b", "2b"])
def test_masks_sum_to_one_over_slots(name: str) -> None:
    m = _model(name).eval()
    with torch.no_grad():
        out = m(_x(2, 23, seed=4))
    masks = out["masks"]
    assert (masks >= 0).all()
    torch.testing.assert_close(masks.sum(1), torch.ones_like(masks[:, 0]), atol=1e-5, rtol=0)


def test_union_is_noisy_or_of_slots() -> None:
    m = _model("2a").eval()
    with torch.no_grad():
        out = m(_x(1, 23, seed=5))
    p = torch.sigmoid(out["slot_logits"].double())
    expected = 1 - torch.prod(1 - p, dim=1)
    torch.testing.assert_close(out["union_prob"].double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        torch.sigmoid(out["union_logits"].double()), expected, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("name", ["1c", "2b"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_decoder_matches_literal_masked_map(name: str, channels_last: bool) -> None:
    """The factorised first decoder layer (and the last 1x1 layer as a matrix-vector product,
    the ReLU in the convolutions' layout) equals decoding the explicit masked (FiLM) map with
    the literal convolutions, in both layouts; the token map may be given dense or factored."""
    m = _model(name).eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    m = m.to(memory_format=fmt)
    with torch.no_grad():
        feat = m.encode(_x(2, 23, seed=11).contiguous(memory_format=fmt))[1]
        slots, _ = m.slot_attention(feat)
        gate = torch.sigmoid(m.decoder.activity_logits(slots))
        film = m.film(m.timbre_head(slots)) if m.film is not None else None
        tokens = m.slot_attention.tokens(feat)
        masks, z = m.decoder(tokens, slots, gate, film)
        masks_ref, z_ref = m.decoder.forward_reference(tokens, slots, gate, film)
        masks_f, z_f = m.decoder(m.slot_attention.token_map(feat), slots, gate, film)
    torch.testing.assert_close(masks, masks_ref)
    torch.testing.assert_close(z, z_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(masks_f, masks_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(z_f, z_ref, atol=1e-4, rtol=1e-4)


def test_folded_slot_attention_matches_literal() -> None:
    """Folding W_k / W_v onto the slots equals literal slot attention (also when chunked)."""
    m = _model("2b").eval()
    with torch.no_grad():
        feat = m.encode(_x(2, 23, seed=12))[1]
        ref_slots, ref_attn = m.slot_attention.forward_reference(feat)
        slots, attn = m.slot_attention(feat)
        m.slot_attention.token_chunk = 72 * 5  # five frames per chunk
        chunked, none = m.slot_attention(feat)
    torch.testing.assert_close(slots, ref_slots, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(attn, ref_attn, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(chunked, ref_slots, atol=1e-4, rtol=1e-4)
    assert none is None


def test_forward_flops_per_window() -> None:
    """The model stays light: forward FLOPs per 23-frame window (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    limits = {"1a": 0.15e9, "3c": 0.8e9}
    for name, limit in limits.items():
        m = _model(name).train()
        counter = FlopCounterMode(display=False)
        with counter:
            m(_x(2, 23, seed=13))
        assert counter.get_total_flops() / 2 <= limit, (name, counter.get_total_flops() / 2)


def test_gated_slot_logits_is_logit_of_product() -> None:
    z = torch.linspace(-12, 12, 49, dtype=torch.float64).reshape(1, 1, 49, 1).expand(1, 3, 49, 1)
    a = torch.tensor([[-25.0, 0.3, 12.0]], dtype=torch.float64)
    got = gated_slot_logits(z, a)
    p = torch.sigmoid(a)[:, :, None, None] * torch.sigmoid(z)
    torch.testing.assert_close(got, torch.log(p) - torch.log1p(-p), atol=1e-6, rtol=1e-6)
    # extreme inputs stay finite in float32; a fully open gate returns z
    big = gated_slot_logits(torch.full((1, 1, 1, 1), 200.0), torch.tensor([[300.0]]))
    assert torch.isfinite(big).all() and big.item() > 100
    open_gate = gated_slot_logits(z.float(), torch.tensor([[float("inf")] * 3]))
    torch.testing.assert_close(open_gate, z.float())


def test_zero_activity_gate_silences_slot() -> None:
    m = _model("3c").eval()
    x = _x(2, 23, seed=6)
    gate = torch.ones(2, 8)
    gate[:, 3] = 0.0
    with torch.no_grad():
        free = m(x)
        out = m(x, activity_override=gate)
    probs = torch.sigmoid(out["slot_logits"])
    assert (probs[:, 3] == 0).all()
    assert (probs[:, [0, 1, 2, 4, 5, 6, 7]] > 0).all()
    # the silenced slot no longer contributes to the noisy-OR
    others = torch.sigmoid(out["slot_logits"][:, [0, 1, 2, 4, 5, 6, 7]])
    torch.testing.assert_close(
        out["union_prob"], 1 - torch.prod(1 - others, dim=1), atol=1e-5, rtol=1e-4
    )
    # a gate of one leaves the predicted activity out of the slot probability
    assert not torch.allclose(out["slot_logits"][:, 0], free["slot_logits"][:, 0])
    # the predicted activity logits are still reported unchanged
    torch.testing.assert_close(out["activity_logits"], free["activity_logits"])


def _surrogate_loss(out: dict[str, torch.Tensor], terms: tuple[str, ...]) -> torch.Tensor:
    """A loss touching exactly the outputs the active loss terms of the experiment use."""
    g = torch.Generator().manual_seed(7)
    loss = F.binary_cross_entropy_with_logits(
        out["mix_logits"], (torch.rand(out["mix_logits"].shape, generator=g) < 0.1).float()
    )
    if {"fixed_slot", "slot", "inactive"} & set(terms):
        tgt = (torch.rand(out["slot_logits"].shape, generator=g) < 0.1).float()
        loss = loss + F.binary_cross_entropy_with_logits(out["slot_logits"], tgt)
    if "union" in terms:
        tgt = (torch.rand(out["union_logits"].shape, generator=g) < 0.1).float()
        loss = loss + F.binary_cross_entropy_with_logits(out["union_logits"], tgt)
    if "activity" in terms:
        tgt = (torch.rand(out["activity_logits"].shape, generator=g) < 0.5).float()
        loss = loss + F.binary_cross_entropy_with_logits(out["activity_logits"], tgt)
    if "timbre" in terms:
        tgt = F.normalize(torch.randn(out["timbre"].shape, generator=g), dim=-1)
        loss = loss + (1 - (out["timbre"] * tgt).sum(-1)).mean()
    if "poly_mix" in terms:
        tgt = torch.randint(0, 8, out["poly_logits"][:, 0].shape, generator=g)
        loss = loss + F.cross_entropy(out["poly_logits"], tgt)
    if "poly_slot" in terms:
        loss = loss + torch.sigmoid(out["slot_logits"]).sum(2).mean() * 0.01
    return loss


UNTRAINED = {
    "1a": ("slot_branch.", "slot_attention.", "decoder."),  # slot head present but unused
    "3a": ("poly_head.",),  # polyphony head present, no loss
}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_gradients_reach_trained_parameters(name: str) -> None:
    exp = EXPERIMENTS[name]
    m = _model(name).train()
    out = m(_x(2, 23, seed=8))
    _surrogate_loss(out, active_loss_terms(exp)).backward()
    skip = UNTRAINED.get(name, ())
    missing, unexpected = [], []
    for pname, p in m.named_parameters():
        has = p.grad is not None and bool(p.grad.abs().sum() > 0)
        if pname.startswith(skip):
            if has:
                unexpected.append(pname)
        elif not has:
            missing.append(pname)
    assert not missing, f"{name}: no gradient for {missing}"
    assert not unexpected, f"{name}: unused parameters got gradients: {unexpected}"


def test_checkpoint_round_trip(tmp_path) -> None:
    m = _model("3c", seed=9).eval()
    x = _x(1, 40, seed=10)
    with torch.no_grad():
        ref = m(x)
    path = tmp_path / "sub" / "model.pt"
    save_checkpoint(path, m, {"epoch": 3, "val_loss": np.float32(0.25)})
    loaded, meta = load_checkpoint(path)
    assert meta["experiment"] == "3c"
    assert meta["class"] == "slotmpe.models.slotmpe.SlotMPE"
    assert meta["extra"] == {"epoch": 3, "val_loss": 0.25}
    assert {"torch", "slotmpe"} <= set(meta["versions"])
    assert not loaded.training
    with torch.no_grad():
        got = loaded(x)
    assert set(got) == set(ref)
    for key in ref:
        torch.testing.assert_close(got[key], ref[key], atol=0, rtol=0)
    # written atomically: no temporary file is left beside it
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["model.pt"]


def test_checkpoint_custom_widths_round_trip(tmp_path) -> None:
    m = _model("1b", decoder_channels=16, ffn_hidden=64, n_iters=2)
    save_checkpoint(tmp_path / "m.pt", m, {})
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta["kwargs"]["decoder_channels"] == 16
    assert count_parameters(loaded) == count_parameters(m)


def test_checkpoint_errors(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(bad)
    with pytest.raises(TypeError, match="extra"):
        save_checkpoint(tmp_path / "x.pt", _model("1a"), {"obj": object()})
    assert not (tmp_path / "x.pt").exists()
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a slotmpe checkpoint"):
        load_checkpoint(other)


def test_unknown_width_and_experiment() -> None:
    with pytest.raises(TypeError, match="unknown SlotMPE width"):
        build_model("1a", not_a_width=3)
    with pytest.raises(KeyError, match="unknown experiment"):
        build_model("9z")
    with pytest.raises(ValueError, match=r"\(B, 12, 216, T\)"):
        _model("1a")(torch.zeros(1, 12, 200, 23))


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_parameter_counts_match_table1(name: str) -> None:
    exp = EXPERIMENTS[name]
    n = count_parameters(build_model(name))
    assert abs(n - exp.paper_params) / exp.paper_params < 0.03, (name, n, exp.paper_params)


def test_parameter_counts_differ_only_by_added_components() -> None:
    counts = {n: count_parameters(build_model(n)) for n in EXPERIMENTS}
    assert counts["1a"] == counts["1b"] == counts["1c"]
    assert counts["3a"] == counts["3b"] == counts["3c"]
    m2b, m3a = build_model("2b"), build_model("3a")
    assert counts["2a"] - counts["1c"] == count_parameters(m2b.timbre_head) + 4 * 192
    assert counts["2b"] - counts["2a"] == count_parameters(m2b.film)
    assert counts["3a"] - counts["2b"] == count_parameters(m3a.poly_head)


def test_unsupervised_polyphony_head_is_a_pure_addition() -> None:
    """3a is 2b plus a polyphony head that feeds nothing: with one seed the shared weights and
    every pitch/slot/timbre output are identical, so 3a vs 2b isolates the head exactly."""
    m2b, m3a = _model("2b").eval(), _model("3a").eval()
    shared = m2b.state_dict()
    for k, v in m3a.state_dict().items():
        if k.startswith("poly_head."):
            continue
        assert torch.equal(v, shared[k]), k
    x = _x(1, 23)
    with torch.no_grad():
        o2b, o3a = m2b(x), m3a(x)
    assert set(o3a) - set(o2b) == {"poly_logits"}
    for k, v in o2b.items():
        assert torch.equal(v, o3a[k]), k
