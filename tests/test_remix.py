"""Tests of extension 4i (issue 23): remix augmentation and the datasets of an experiment row."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from test_stem_masks import cache  # noqa: F401 (module-scoped feature-cache fixture)
from torch.utils.data import DataLoader, default_collate

from slotmpe.constants import FAMILY_INDEX
from slotmpe.cqt import WIDE_OFFSET
from slotmpe.data import WindowDataset
from slotmpe.experiments import default_loss_weights, get_experiment
from slotmpe.remix import RemixDataset, experiment_datasets

torch.set_num_threads(1)


def _train(cache: Path, n: int = 12, **kw: object) -> WindowDataset:  # noqa: F811
    return WindowDataset(cache, "train", train=True, windows_per_epoch=n, seed=3, **kw)


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_remix_is_seeded_by_seed_epoch_index(cache: Path) -> None:  # noqa: F811
    ds = RemixDataset(_train(cache), prob=1.0)
    first = [ds[i] for i in range(len(ds))]
    again = RemixDataset(_train(cache), prob=1.0)
    assert all(_equal(a, b) for a, b in zip(first, [again[i] for i in range(len(ds))], strict=True))
    assert not _equal(first[0], first[1])
    ds.set_epoch(1)
    assert ds.epoch == 1 and not all(_equal(first[i], ds[i]) for i in range(len(ds)))
    # the remix stream is independent of the order items are read in
    again.set_epoch(0)
    assert _equal(again[5], first[5])
    # picklable (DataLoader workers)
    clone = pickle.loads(pickle.dumps(ds))
    assert _equal(clone[2], ds[2])


def test_remix_items_are_consistent(cache: Path) -> None:  # noqa: F811
    base = _train(cache, mask_targets=True)
    ds = RemixDataset(base, prob=1.0)
    real = base[0]
    for i in range(len(ds)):
        item = ds[i]
        assert item.keys() == real.keys()
        for k in item:
            assert item[k].dtype == real[k].dtype and item[k].shape == real[k].shape, k
        src, present = item["sources"], item["source_present"]
        assert present.any()
        assert torch.equal(item["mix"], src.amax(0))
        assert torch.equal(item["poly"], item["mix"].sum(0).clamp(max=7).long())
        assert torch.equal(item["source_poly"], src.sum(1))
        assert torch.equal(present, src.flatten(1).amax(1) > 0)
        x = item["x"]
        assert float(x[:6].min()) >= 0.0 and float(x[:6].max()) <= 1.0
        m, v = item["mask_target"], item["mask_valid"]
        if v.any():
            torch.testing.assert_close(m.sum(0)[v], torch.ones(int(v.sum())), atol=1e-5, rtol=0)


def test_single_stem_remix_is_the_stem_up_to_level(cache: Path) -> None:  # noqa: F811
    """One stem at 0 dB extra gain: the input is that stem's cached CQT window, shifted by a
    constant in the log domain (a different compression reference), with its own targets."""
    base = _train(cache, embeddings={"a_vn": np.full(128, 0.5, np.float32)})
    ds = RemixDataset(base, prob=1.0, gain_db=0.0)
    ds.stems()
    ds._counts = np.ones_like(ds._counts)  # force one stem per remix
    seen = 0
    for i in range(len(ds)):
        item = ds[i]
        n_src = int(item["source_present"].sum())
        assert n_src == 1
        fam = item["family"].flatten(1).amax(1)
        assert int(fam.sum()) == 1
        roll = item["sources"][0]
        # find the stem and window it came from
        for pi in range(len(base.piece_ids)):
            piece = base._piece(pi)
            for s in range(piece["source_rolls"].shape[0]):
                rolls = np.asarray(piece["source_rolls"][s])
                for a in range(rolls.shape[1] - 22):
                    if not np.array_equal(rolls[:, a:a + 23], roll.numpy().astype(bool)):
                        continue
                    stem = np.asarray(piece["stem_cqt"][s, WIDE_OFFSET:WIDE_OFFSET + 216, a:a + 23],
                                      np.float32)
                    x1 = item["x"][1].numpy()
                    both = (stem > 0.05) & (x1 > 0.05)
                    if both.sum() < 20:
                        continue
                    d = x1[both] - stem[both]
                    if np.ptp(d) < 3e-3:  # float16 rounding of both maps
                        seen += 1
                        assert fam[FAMILY_INDEX[str(piece["families"][s])]] == 1
                        want = 0.5 if str(piece["track_ids"][s]) == "a_vn" else 0.0
                        assert torch.allclose(item["source_emb"][0], torch.full((128,), want))
                        break
                else:
                    continue
                break
    assert seen >= len(ds) // 2


def test_remix_probability(cache: Path) -> None:  # noqa: F811
    base = _train(cache, n=40)
    none = RemixDataset(base, prob=0.0)
    assert all(_equal(none[i], base[i]) for i in range(len(base)))
    half = RemixDataset(base, prob=0.5)
    same = sum(_equal(half[i], base[i]) for i in range(len(base)))
    assert 8 <= same <= 32
    with pytest.raises(ValueError, match="probability"):
        RemixDataset(base, prob=1.5)


def test_experiment_datasets(cache: Path) -> None:  # noqa: F811
    def pair() -> tuple[WindowDataset, WindowDataset]:
        return _train(cache), WindowDataset(cache, "val", train=False)

    tr, va = experiment_datasets(get_experiment("2b"), *pair())
    assert isinstance(tr, WindowDataset) and "mask_target" not in tr[0] and "mask_target" not in va[0]
    tr, va = experiment_datasets(get_experiment("4h"), *pair())
    assert isinstance(tr, WindowDataset) and "mask_target" in tr[0] and "mask_target" in va[0]
    tr, va = experiment_datasets(get_experiment("4i"), *pair())
    assert isinstance(tr, RemixDataset) and "mask_target" not in tr[0]
    tr, va = experiment_datasets(get_experiment("4j"), *pair())
    assert isinstance(tr, RemixDataset) and "mask_target" in tr[0] and "mask_target" in va[0]


def test_train_step_on_remixed_masked_batches(cache: Path) -> None:  # noqa: F811
    """The path training takes for 4j: experiment datasets -> loader -> train_step."""
    from slotmpe.models import build_model
    from slotmpe.training import make_optimizer, train_step

    exp = get_experiment("4j")
    tr, _ = experiment_datasets(exp, _train(cache, n=8), WindowDataset(cache, "val", train=False))
    tr.set_epoch(0)
    batch = next(iter(DataLoader(tr, batch_size=4, shuffle=False)))
    torch.manual_seed(0)
    model = build_model("4j")
    opt = make_optimizer(model, 1e-3)
    losses = train_step(model, batch, exp, default_loss_weights(exp), opt)
    assert "mask" in losses and all(torch.isfinite(v) for v in losses.values())
    # the mask term alone reaches the slot queries (its gradient trains the mask competition)
    model.zero_grad()
    only = {t: (1.0 if t == "mask" else 0.0) for t in default_loss_weights(exp)}
    from slotmpe.training import forward_losses

    forward_losses(model, batch, exp, only)["total"].backward()
    assert model.slot_attention.queries.grad.abs().sum() > 0
    assert default_collate([tr[0], tr[1]])["mask_target"].shape == (2, 8, 72, 23)


def test_remix_row_refuses_batches_that_were_not_remixed(cache: Path) -> None:  # noqa: F811
    """A loop that forgot experiment_datasets would silently train 2b under the name 4i."""
    from slotmpe import losses as L
    from slotmpe.models import build_model

    exp = get_experiment("4i")
    plain = default_collate([_train(cache)[i] for i in range(2)])
    model = build_model("4i")
    with torch.no_grad():
        out = model(plain["x"])
    with pytest.raises(ValueError, match="remix"):
        L.compute_losses(exp, out, plain, default_loss_weights(exp))
    tr, va = experiment_datasets(exp, _train(cache), WindowDataset(cache, "val", train=False))
    for ds in (tr, va):
        batch = default_collate([ds[i] for i in range(2)])
        assert batch["remixed"].dtype == torch.bool
        assert torch.isfinite(L.compute_losses(exp, out, batch, default_loss_weights(exp))["total"])
    assert not bool(default_collate([va[0]])["remixed"].any())
