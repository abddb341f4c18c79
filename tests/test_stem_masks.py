"""Tests of extension 4h (issue 23): stem ratio masks, their dataset items and the mask loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_data import make_piece

from slotmpe import losses as L
from slotmpe.cqt import N_WIDE, WIDE_OFFSET, log_compress
from slotmpe.data import FileDataset, WindowDataset
from slotmpe.datasets.manifest import write_manifest
from slotmpe.experiments import default_loss_weights, get_experiment
from slotmpe.features import build_feature_cache
from slotmpe.stem_masks import (
    estimate_stem_gains,
    log_expand,
    pitch_energy,
    ratio_masks,
    window_ratio_masks,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two training pieces and one validation piece of sine stems (the mix is their sum)."""
    root = tmp_path_factory.mktemp("stems")
    rows = make_piece(root, "a", "train", 3.0, [
        ("a_vn", "violin", [(0.0, 1.5, 72), (1.5, 3.0, 74)]),
        ("a_fl", "flute", [(2.0, 3.0, 84)]),
    ])
    rows += make_piece(root, "b", "train", 2.0, [("b_pn", "piano", [(0.0, 2.0, 48), (0.0, 1.0, 55)])])
    rows += make_piece(root, "c", "val", 2.2, [
        ("c_tp", "trumpet", [(0.0, 1.0, 60)]),
        ("c_vn", "violin", [(0.5, 2.0, 76)]),
    ])
    write_manifest(pd.DataFrame(rows), root / "manifest.parquet")
    return build_feature_cache(root / "manifest.parquet", root / "features").parent


# ------------------------------------------------------------------------------ stem_masks


def test_log_expand_inverts_log_compress() -> None:
    rng = np.random.default_rng(0)
    mag = rng.uniform(0, 3, size=(N_WIDE, 40)).astype(np.float32)
    mag[0, :5] = 0.0  # below the floor
    x = log_compress(mag)
    lin = log_expand(x)
    audible = mag > mag.max() * 1e-4
    np.testing.assert_allclose(lin[audible], mag[audible] / mag.max(), rtol=1e-4)
    assert np.all(lin[~audible & (x == 0)] == 0)
    # float16 storage as in the cache: ~1 % relative error at most
    lin16 = log_expand(x.astype(np.float16))
    np.testing.assert_allclose(lin16[audible], mag[audible] / mag.max(), rtol=1e-2)


def test_stem_gains_recover_known_levels() -> None:
    """Stems with known peak levels, each compressed to its own maximum, get back their levels."""
    rng = np.random.default_rng(1)
    t = 60
    stems = np.zeros((3, N_WIDE, t), np.float32)
    for s, rows in enumerate(((40, 80), (120, 160), (200, 260))):
        stems[s, rows[0]:rows[1]] = rng.uniform(0.5, 1.0, size=(rows[1] - rows[0], t))
    true_peak = np.array([0.5, 2.0, 1.0], np.float32)
    stems *= (true_peak / stems.reshape(3, -1).max(1))[:, None, None]
    mix = stems.sum(0)
    gains = estimate_stem_gains(log_compress(mix), np.stack([log_compress(s) for s in stems]))
    np.testing.assert_allclose(gains, true_peak / mix.max(), rtol=1e-3)
    assert estimate_stem_gains(log_compress(mix), np.zeros((0, N_WIDE, t))).shape == (0,)
    with pytest.raises(ValueError, match="must be"):
        estimate_stem_gains(log_compress(mix), stems[:, :10])


def test_pitch_energy_maps_three_bins_to_one_pitch() -> None:
    lin = np.zeros((2, N_WIDE, 4), np.float32)
    lin[0, WIDE_OFFSET + 3 * 10 + 0, 0] = 1.0  # pitch 10 (MIDI 33), lower bin
    lin[0, WIDE_OFFSET + 3 * 10 + 2, 0] = 2.0  # pitch 10, upper bin
    lin[1, WIDE_OFFSET + 3 * 71 + 1, 3] = 3.0  # pitch 71 (MIDI 94), centre bin
    lin[1, WIDE_OFFSET - 1, 3] = 5.0  # below the model range: ignored
    e = pitch_energy(lin)
    assert e.shape == (2, 72, 4)
    assert e[0, 10, 0] == pytest.approx(5.0) and e[1, 71, 3] == pytest.approx(9.0)
    assert e.sum() == pytest.approx(14.0)


def test_ratio_masks_share_and_floor() -> None:
    e = np.zeros((3, 72, 2), np.float32)
    e[0, 5, 0], e[1, 5, 0], e[2, 5, 0] = 3.0, 1.0, 4.0
    e[0, 6, 1] = 1e-9  # far below the -60 dB floor
    m, valid = ratio_masks(e, include=np.array([True, True, False]))
    assert valid[5, 0] and not valid[6, 1] and valid.sum() == 1
    np.testing.assert_allclose(m[:, 5, 0], [0.75, 0.25, 0.0])
    assert m[:, ~valid].sum() == 0
    m_all, _ = ratio_masks(e)
    np.testing.assert_allclose(m_all[:, 5, 0], [0.375, 0.125, 0.5])


# ------------------------------------------------------------------------------ dataset items


def test_window_items_carry_ratio_masks(cache: Path) -> None:
    plain = WindowDataset(cache, "train", train=False)
    assert "mask_target" not in plain[0]  # off by default: the paper's rows are unchanged
    ds = WindowDataset(cache, "train", train=False, mask_targets=True)
    for idx in range(len(ds)):
        item = ds[idx]
        m, v = item["mask_target"], item["mask_valid"]
        assert m.shape == (8, 72, 23) and m.dtype == torch.float32
        assert v.shape == (72, 23) and v.dtype == torch.bool
        present = item["source_present"]
        assert m[~present].abs().sum() == 0
        if v.any():
            torch.testing.assert_close(m.sum(0)[v], torch.ones(int(v.sum())), atol=1e-5, rtol=0)
        # a sounding note's own cell belongs (almost) only to its stem
        src = item["sources"]
        for s in torch.nonzero(present).flatten().tolist():
            on = src[s].bool() & v
            if on.any():
                assert float(m[s][on].mean()) > 0.9
    # piece a, first window: only the violin (MIDI 72 = pitch 49) sounds
    first = ds[0]
    assert float(first["mask_target"][0, 49, 5:20].min()) > 0.99


def test_file_dataset_mask_targets_and_gains(cache: Path) -> None:
    ds = FileDataset(cache, "val", mask_targets=True)
    item = ds[0]
    assert item["mask_target"].shape[-1] == item["x"].shape[-1]
    gains = ds.stem_gains(0)
    assert gains is not None and gains.shape == (2,) and np.all(gains > 0)
    piece = ds._piece(0)
    m, v = window_ratio_masks(np.asarray(piece["stem_cqt"]), gains)
    np.testing.assert_allclose(item["mask_target"][:2].numpy(), m, atol=1e-6)


# ------------------------------------------------------------------------------ loss


def _toy_masks() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    masks = torch.softmax(torch.randn(2, 4, 72, 5, generator=g), dim=1)
    target = torch.zeros(2, 3, 72, 5)
    target[:, 0] = torch.rand(2, 72, 5, generator=g)
    target[:, 1] = 1 - target[:, 0]
    valid = torch.rand(2, 72, 5, generator=g) > 0.3
    return masks, target, valid


def test_mask_loss_matched_unmatched_and_validity() -> None:
    masks, target, valid = _toy_masks()
    matches = [(np.array([2, 0]), np.array([0, 1])), (np.array([1]), np.array([0]))]
    v = L.mask_loss(masks, target, valid, matches)
    # reference: slot 2 <- source 0, slot 0 <- source 1 (item 0); slot 1 <- source 0 (item 1)
    y = torch.zeros_like(masks)
    y[0, 2], y[0, 0], y[1, 1] = target[0, 0], target[0, 1], target[1, 0]
    m = masks.clamp(1e-6, 1 - 1e-6)
    bce = -(y * m.log() + (1 - y) * (1 - m).log())
    w = valid[:, None].expand_as(bce)
    assert v.item() == pytest.approx(bce[w].mean().item(), rel=1e-5)
    # invalid cells carry no target: changing the masks there changes nothing
    other = masks.clone()
    other[~valid[:, None].expand_as(masks)] = 0.5
    assert L.mask_loss(other, target, valid, matches).item() == pytest.approx(v.item(), rel=1e-6)
    # the ideal masks score better than the swapped assignment
    ideal = y.clone()
    ideal[0, 3] = 1 - y[0].sum(0)  # unmatched slots take the rest (here 0)
    assert L.mask_loss(ideal, target, valid, matches) < L.mask_loss(
        ideal, target, valid, [(np.array([0, 2]), np.array([0, 1])), matches[1]])
    # no valid cell: an exact zero that still backpropagates
    z = L.mask_loss(masks.requires_grad_(), target, torch.zeros_like(valid), matches)
    assert z.item() == 0.0
    z.backward()


def test_4h_terms_and_missing_targets_error(cache: Path) -> None:
    from torch.utils.data import default_collate

    from slotmpe.models import build_model

    exp = get_experiment("4h")
    w = default_loss_weights(exp)
    assert w["mask"] == 1.0 and default_loss_weights(get_experiment("2b"))["mask"] == 0.0
    model = build_model("4h")
    plain = default_collate([WindowDataset(cache, "train", train=False)[i] for i in range(2)])
    with torch.no_grad():
        out = model(plain["x"])
    with pytest.raises(ValueError, match="mask_target"):
        L.compute_losses(exp, out, plain, w)
    ds = WindowDataset(cache, "train", train=False, mask_targets=True)
    batch = default_collate([ds[i] for i in range(2)])
    losses = L.compute_losses(exp, out, batch, w)
    assert "mask" in losses and torch.isfinite(losses["mask"])
    assert "mask" not in L.compute_losses(get_experiment("2b"), out, batch,
                                          default_loss_weights(get_experiment("2b")))
