"""Tests of slotmpe.data: piece loading, window and file datasets (shapes, content, determinism)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from slotmpe.audio import write_audio
from slotmpe.constants import SAMPLE_RATE, midi_to_hz
from slotmpe.data import FeatureCacheError, FileDataset, WindowDataset, load_piece
from slotmpe.datasets.manifest import write_manifest
from slotmpe.features import N_WIDE, PIECE_KEYS, build_feature_cache, hcqt_from_cqt

torch.set_num_threads(1)

FAMILY = {"violin": "strings", "flute": "woodwinds", "trumpet": "brass", "piano": "keyboards"}


def make_piece(root: Path, pid: str, split: str, seconds: float,
               parts: list[tuple[str, str, list[tuple[float, float, int]]]]) -> list[dict]:
    """Sine stems + mix + notes CSVs of one piece; returns its manifest rows."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    mix = np.zeros(n, np.float32)
    rows = []
    for tid, inst, notes in parts:
        y = np.zeros(n, np.float32)
        for on, off, m in notes:
            seg = (t >= on) & (t < off)
            y[seg] += 0.2 * np.sin(2 * np.pi * midi_to_hz(m) * t[seg])
        write_audio(root / pid / f"{tid}.wav", y)
        pd.DataFrame(notes, columns=["onset_s", "offset_s", "midi"]).to_csv(
            root / pid / f"{tid}.csv", index=False)
        mix += y
        rows.append(dict(dataset="toy", piece_id=pid, split=split, track_id=tid, instrument=inst,
                         family=FAMILY[inst], pitched=True, stem_path=f"{pid}/{tid}.wav",
                         mix_path=f"{pid}/mix.wav", notes_path=f"{pid}/{tid}.csv",
                         duration_s=n / SAMPLE_RATE))
    write_audio(root / pid / "mix.wav", mix)
    return rows


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dataset")
    rows = make_piece(root, "a", "train", 3.0, [
        ("a_vn", "violin", [(0.0, 1.5, 72), (1.5, 3.0, 74)]),
        ("a_fl", "flute", [(2.0, 3.0, 84)]),
    ])
    rows += make_piece(root, "b", "train", 2.0, [("b_pn", "piano", [(0.0, 2.0, 48), (0.0, 1.0, 55)])])
    rows += make_piece(root, "c", "val", 2.2, [
        ("c_tp", "trumpet", [(0.0, 1.0, 60)]),
        ("c_vn", "violin", [(0.5, 2.0, 76)]),
        ("c_fl", "flute", [(1.2, 2.2, 81)]),
    ])
    write_manifest(pd.DataFrame(rows), root / "manifest.parquet")
    return build_feature_cache(root / "manifest.parquet", root / "features").parent


ITEM_SPEC = {
    "x": (torch.float32, (12, 216)),
    "mix": (torch.float32, (72,)),
    "family": (torch.float32, (4, 72)),
    "sources": (torch.float32, (8, 72)),
    "source_present": (torch.bool, (8,)),
    "source_emb": (torch.float32, (8, 128)),
    "poly": (torch.int64, ()),
    "source_poly": (torch.float32, (8,)),
}


def check_item(item: dict, width: int) -> None:
    for key, (dtype, lead) in ITEM_SPEC.items():
        shape = lead + (width,) if key not in ("source_present", "source_emb") else lead
        assert item[key].dtype == dtype, key
        assert tuple(item[key].shape) == shape, (key, tuple(item[key].shape))


def test_load_piece_mmap_matches_plain_load(cache: Path) -> None:
    a = load_piece(cache / "a.npz")
    b = load_piece(cache / "a.npz", mmap=False)
    assert set(a) == set(b) == set(PIECE_KEYS)
    for k in PIECE_KEYS:
        np.testing.assert_array_equal(a[k], b[k])
        assert a[k].dtype == b[k].dtype
    assert isinstance(a["cqt"].base, np.memmap) and not a["cqt"].flags.writeable
    with pytest.raises(FeatureCacheError, match="nope.npz"):
        load_piece(cache / "nope.npz")


def test_window_items_shapes_and_content(cache: Path) -> None:
    ds = WindowDataset(cache, "train", train=True, seed=3)
    t_a, t_b = 1 + 48000 // 512, 1 + 32000 // 512
    assert len(ds) == t_a // 23 + t_b // 23
    for i in range(len(ds)):
        item = ds[i]
        check_item(item, 23)
        piece_i, s = ds.windows[i]
        p = load_piece(cache / f"{ds.piece_ids[piece_i]}.npz")
        sl = slice(int(s), int(s) + 23)
        np.testing.assert_array_equal(item["x"].numpy(), hcqt_from_cqt(p["cqt"][:, sl].astype(np.float32)))
        np.testing.assert_array_equal(item["mix"].numpy(), p["mix_roll"][:, sl])
        np.testing.assert_array_equal(item["family"].numpy(), p["family_rolls"][:, :, sl])
        n_src = p["source_rolls"].shape[0]
        np.testing.assert_array_equal(item["sources"][:n_src].numpy(), p["source_rolls"][:, :, sl])
        assert not item["sources"][n_src:].any() and not item["source_present"][n_src:].any()
        assert item["source_present"][:n_src].tolist() == p["source_rolls"][:, :, sl].any(axis=(1, 2)).tolist()
        np.testing.assert_array_equal(item["poly"].numpy(), p["poly"][sl])
        np.testing.assert_array_equal(item["source_poly"][:n_src].numpy(), p["source_poly"][:, sl])
        assert not item["source_emb"].any()  # no embeddings given


def test_random_windows_are_seeded_and_reshuffled(cache: Path) -> None:
    a = WindowDataset(cache, "train", train=True, windows_per_epoch=50, seed=7)
    b = WindowDataset(cache, "train", train=True, windows_per_epoch=50, seed=7)
    c = WindowDataset(cache, "train", train=True, windows_per_epoch=50, seed=8)
    assert len(a) == 50
    np.testing.assert_array_equal(a.windows, b.windows)
    assert not np.array_equal(a.windows, c.windows)
    first = a.windows.copy()
    a.set_epoch(1)
    assert not np.array_equal(first, a.windows)
    a.set_epoch(0)
    np.testing.assert_array_equal(first, a.windows)
    torch.testing.assert_close(a[5], b[5])
    # offsets stay inside the pieces and both pieces are drawn
    assert (a.windows[:, 1] >= 0).all() and (a.windows[:, 1] + 23 <= a.n_frames[a.windows[:, 0]]).all()
    big = WindowDataset(cache, "train", train=True, windows_per_epoch=2000, seed=0)
    share_a = (big.windows[:, 0] == 0).mean()
    n_pos = a.n_frames - 22
    assert share_a == pytest.approx(n_pos[0] / n_pos.sum(), abs=0.05)


def test_fixed_windows_cover_every_frame(cache: Path) -> None:
    ds = WindowDataset(cache, "val", train=False)
    t = int(ds.n_frames[0])
    covered = np.zeros(t, bool)
    for _, s in ds.windows:
        covered[s : s + 23] = True
    assert covered.all() and ds.windows[0, 1] == 0 and ds.windows[-1, 1] == t - 23
    ds.set_epoch(5)
    again = WindowDataset(cache, "val", train=False)
    np.testing.assert_array_equal(ds.windows, again.windows)
    thin = WindowDataset(cache, "val", train=False, windows_per_epoch=2)
    assert len(thin) == 2 and thin.windows[0, 1] == 0 and thin.windows[-1, 1] == t - 23
    check_item(ds[len(ds) - 1], 23)


def test_embeddings_and_source_limit(cache: Path) -> None:
    emb = {"c_vn": np.full(128, 0.5, np.float32), "c_fl": np.arange(128, dtype=np.float32)}
    ds = FileDataset(cache, "val", embeddings=emb)
    item = ds[0]
    assert item["piece_id"] == "c"
    check_item(item, int(ds.n_frames[0]))
    assert item["source_present"].tolist() == [True, True, True] + [False] * 5
    assert not item["source_emb"][0].any()  # c_tp has no embedding
    np.testing.assert_array_equal(item["source_emb"][1].numpy(), emb["c_vn"])
    np.testing.assert_array_equal(item["source_emb"][2].numpy(), emb["c_fl"])
    # K = 2 keeps the two most active sources: violin (47 frames), trumpet (32) over flute (31)
    two = FileDataset(cache, "val", embeddings=emb, max_sources=2)[0]
    p = load_piece(cache / "c.npz")
    np.testing.assert_array_equal(two["sources"].numpy(), p["source_rolls"][[0, 1]])
    with pytest.raises(ValueError, match="c_vn"):
        FileDataset(cache, "val", embeddings={"c_vn": np.zeros(3)})


def test_window_longer_than_piece_and_empty_split(cache: Path) -> None:
    ds = WindowDataset(cache, "train", train=True, window=80)  # piece b (63 frames) left out
    assert ds.piece_ids == ["a"] and len(ds) == 1
    check_item(ds[0], 80)
    assert len(WindowDataset(cache, "test", train=False)) == 0


def test_dataloader_and_pickling(cache: Path) -> None:
    ds = WindowDataset(cache, "train", train=True, windows_per_epoch=12, seed=1)
    _ = ds[0]  # opens a memory map
    clone = pickle.loads(pickle.dumps(ds))
    torch.testing.assert_close(clone[3], ds[3])
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert batch["x"].shape == (4, 12, 216, 23) and batch["sources"].shape == (4, 8, 72, 23)
    files = list(DataLoader(FileDataset(cache, "train"), batch_size=1))
    assert [f["piece_id"] for f in files] == [["a"], ["b"]]
    assert files[0]["x"].shape[-1] == 1 + 48000 // 512


def test_missing_index(tmp_path: Path) -> None:
    with pytest.raises(FeatureCacheError, match="index.csv"):
        WindowDataset(tmp_path, "train", train=True)
    assert N_WIDE == 325
