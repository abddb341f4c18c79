"""Torch datasets over the feature cache written by :func:`slotmpe.features.build_feature_cache`.

* :func:`load_piece` opens one ``{piece_id}.npz``; the large arrays are memory-mapped (the cache
  is written uncompressed, so each ``.npy`` member is a contiguous block of the file), the string
  and scalar members are read into memory.
* :class:`WindowDataset` gives ``W``-frame windows (default 23): random offsets for training,
  re-drawn per epoch from ``(seed, epoch)`` with :meth:`WindowDataset.set_epoch`, or fixed
  deterministic windows for validation. The HCQT input of a window is sliced from the cached wide
  CQT on the fly (:func:`slotmpe.features.hcqt_from_cqt`), which costs a few microseconds.
* :class:`FileDataset` gives whole files (``W = T``) for evaluation, plus ``piece_id``.

Item (torch tensors; ``K = max_sources``, 8 by default):

=================  ===========  ===========================================================
key                dtype        shape / meaning
=================  ===========  ===========================================================
``x``              float32      ``(12, 216, W)`` HCQT input (6 harmonic maps, 6 masks)
``mix``            float32      ``(72, W)`` mixture roll
``family``         float32      ``(4, 72, W)`` family rolls (``constants.FAMILIES`` order)
``sources``        float32      ``(K, 72, W)`` per-source rolls, zero-padded after the sources
``source_present`` bool         ``(K,)`` source exists and is active in at least one frame
``source_emb``     float32      ``(K, 128)`` timbre embedding of each source (zeros if unknown)
``poly``           int64        ``(W,)`` mixture polyphony class 0..7
``source_poly``    float32      ``(K, W)`` active pitches per frame of each source
``mask_target``    float32      ``(K, 72, W)`` (``mask_targets=True`` only) each present source's
                                share of the pitched stems' energy per cell (ideal ratio mask,
                                :mod:`slotmpe.stem_masks`; 0 for absent or padded sources)
``mask_valid``     bool         ``(72, W)`` (``mask_targets=True`` only) cells with stem energy
                                above the floor (all False for a piece without stem audio)
``remixed``        bool         ``()`` (``mark_remix=True`` only) whether the item is a remix
                                (:mod:`slotmpe.remix`; always False here)
=================  ===========  ===========================================================

Sources keep the manifest order. If a piece has more than ``K`` pitched sources, the ``K`` with the
most active (pitch, frame) cells in the window (whole file for :class:`FileDataset`) are kept, in
manifest order (ties: earlier source first), and a warning is logged once per piece.

Epochs: with ``train=True`` an epoch has ``windows_per_epoch`` windows (``None``: one per ``W``
frames of audio, ``sum(T // W)`` over the split's pieces); each window picks a piece with
probability proportional to its number of possible offsets ``T - W + 1`` and a uniform offset, so
every training frame position is equally likely. With ``train=False`` each piece is cut into
consecutive windows starting at 0, stride ``W``, plus one window ending at the last frame when
``T`` is not a multiple of ``W`` (every frame covered); ``windows_per_epoch`` then keeps that many
evenly spaced windows. Pieces shorter than ``W`` frames are left out (with a warning).

Multi-process loading: workers open pieces themselves (open memory maps are not pickled). Call
``set_epoch`` before creating the epoch's iterator; with ``persistent_workers=True`` the workers
would keep the previous epoch's windows, so do not combine the two.
"""

from __future__ import annotations

import os
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from slotmpe.constants import (
    EMBED_DIM,
    FAMILIES,
    FAMILY_INDEX,
    MAX_SLOTS,
    N_PITCHES,
    WINDOW_FRAMES,
)
from slotmpe.features import INDEX_COLUMNS, INDEX_NAME, N_WIDE, PIECE_KEYS, hcqt_from_cqt
from slotmpe.stem_masks import estimate_stem_gains, window_ratio_masks
from slotmpe.utils import get_logger

log = get_logger(__name__)

_NPY_SUFFIX = ".npy"


class FeatureCacheError(ValueError):
    """A feature-cache file or index is missing or malformed; the message names the file."""


# --------------------------------------------------------------------------------------------
# Piece files
# --------------------------------------------------------------------------------------------


def _member_layout(fh: Any, info: zipfile.ZipInfo) -> tuple[int, np.dtype, tuple[int, ...], bool]:
    """Byte offset of the array data, dtype, shape and Fortran order of a stored ``.npy`` member."""
    fh.seek(info.header_offset)
    local = fh.read(30)
    if local[:4] != b"PK\x03\x04":
        raise ValueError(f"bad local header of member {info.filename}")
    name_len = int.from_bytes(local[26:28], "little")
    extra_len = int.from_bytes(local[28:30], "little")
    fh.seek(info.header_offset + 30 + name_len + extra_len)
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    return fh.tell(), np.dtype(dtype), tuple(shape), bool(fortran)


def load_piece(path: str | os.PathLike[str], mmap: bool = True) -> dict[str, np.ndarray]:
    """Arrays of one cached piece (keys ``features.PIECE_KEYS``; see CONTRACTS.md).

    With ``mmap`` (default) the numeric arrays of at least one dimension are read-only views of a
    memory map of the file (one open file per call); the strings (``track_ids``, ``instruments``,
    ``families``) and the 0-d ``has_stems`` / ``n_frames`` are in memory. Compressed members (not
    written by this package) are read normally. Raises :class:`FeatureCacheError` naming the file
    when it is missing, unreadable or lacks a key.
    """
    p = Path(path)
    if not p.is_file():
        raise FeatureCacheError(f"{p}: feature file does not exist (rebuild the feature cache)")
    out: dict[str, np.ndarray] = {}
    try:
        if not mmap:
            with np.load(p, allow_pickle=False) as z:
                out = {k: z[k] for k in z.files}
        else:
            with zipfile.ZipFile(p) as zf, open(p, "rb") as fh:
                layouts: dict[str, tuple[int, np.dtype, tuple[int, ...], bool]] = {}
                for info in zf.infolist():
                    if not info.filename.endswith(_NPY_SUFFIX):
                        continue
                    key = info.filename[: -len(_NPY_SUFFIX)]
                    if info.compress_type != zipfile.ZIP_STORED:
                        with zf.open(info) as member:
                            out[key] = np.lib.format.read_array(member, allow_pickle=False)
                        continue
                    layouts[key] = _member_layout(fh, info)
            buf: np.memmap | None = None
            for key, (offset, dtype, shape, fortran) in layouts.items():
                if dtype.hasobject:
                    raise ValueError(f"member {key} holds Python objects")
                n_items = int(np.prod(shape, dtype=np.int64))
                if n_items == 0:
                    out[key] = np.zeros(shape, dtype=dtype)
                    continue
                if buf is None:
                    buf = np.memmap(p, dtype=np.uint8, mode="r")
                arr = np.ndarray(shape, dtype, buffer=buf, offset=offset, order="F" if fortran else "C")
                out[key] = arr if (arr.ndim and dtype.kind not in "US") else np.array(arr)
    except FeatureCacheError:
        raise
    except Exception as exc:
        raise FeatureCacheError(f"{p}: cannot read feature file ({exc})") from exc
    missing = [k for k in PIECE_KEYS if k not in out]
    if missing:
        raise FeatureCacheError(f"{p}: feature file lacks key(s) {missing} (rebuild the cache)")
    return out


def read_index(feature_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The cache's ``index.csv`` (``piece_id, split, n_frames, n_sources``), checked."""
    path = Path(feature_dir) / INDEX_NAME
    if not path.is_file():
        raise FeatureCacheError(f"{path}: feature index does not exist (run the feature step)")
    df = pd.read_csv(path, dtype={"piece_id": str, "split": str})
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise FeatureCacheError(f"{path}: index lacks column(s) {missing}")
    return df


def check_family_labels(
    feature_dir: str | os.PathLike[str], splits: tuple[str, ...], what: str
) -> None:
    """Refuse a cache whose ``splits`` hold a pitched source in no family (family-level tasks).

    Sources of a user's instrument outside the built-in vocabulary given without a family have
    family ``constants.UNKNOWN_FAMILY`` and are in no family roll, so a family-level experiment
    (``what``, e.g. "experiment 1b") would learn and be scored against incomplete targets. Raises
    :class:`FeatureCacheError` naming the cache, the count and the first tracks.
    """
    fdir = Path(feature_dir)
    index = read_index(fdir)
    missing: list[str] = []
    for pid in index.loc[index["split"].isin(splits), "piece_id"].astype(str):
        piece = load_piece(fdir / f"{pid}.npz")
        for tid, fam in zip(piece["track_ids"], piece["families"], strict=True):
            if str(fam) not in FAMILY_INDEX:
                missing.append(str(tid))
    if missing:
        raise FeatureCacheError(
            f"{fdir}: {what} is a family-level task and needs the family of every pitched source, "
            f"but {len(missing)} source(s) of the {'/'.join(splits)} split(s) have none, e.g. "
            f"{missing[:5]} (instruments outside the built-in vocabulary given without a family); "
            f"add a family column ({', '.join(FAMILIES)}) to the dataset's metadata.csv and "
            "rebuild, or run only standard and stem experiments on this dataset"
        )


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


def _max_open_pieces() -> int:
    """How many piece files one process keeps mapped (each map holds a file descriptor)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 16
    except (ImportError, OSError, ValueError):  # pragma: no cover - platform without rlimits
        soft = 1024
    return int(max(8, min(1024, soft // 4)))


def _check_embeddings(embeddings: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for tid, e in (embeddings or {}).items():
        arr = np.asarray(e, dtype=np.float32).reshape(-1)
        if arr.shape != (EMBED_DIM,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"embedding of track {tid!r} must be {EMBED_DIM} finite values, got {np.shape(e)}")
        out[str(tid)] = arr
    return out


class _PieceSet(Dataset):
    """Shared machinery: the split's pieces, a per-process LRU of memory-mapped pieces, items."""

    def __init__(
        self,
        feature_dir: str | os.PathLike[str],
        split: str,
        embeddings: dict[str, np.ndarray] | None,
        max_sources: int,
        min_frames: int,
        mask_targets: bool = False,
    ) -> None:
        self.feature_dir = Path(feature_dir)
        self.mask_targets = bool(mask_targets)
        self.mark_remix = False  # items carry "remixed" (set by slotmpe.remix)
        self.split = split
        self.max_sources = int(max_sources)
        if self.max_sources < 1:
            raise ValueError(f"max_sources must be >= 1, got {max_sources}")
        index = read_index(self.feature_dir)
        rows = index[index["split"] == split]
        short = rows[rows["n_frames"] < min_frames]
        if len(short):
            log.warning(
                "%s: %d %s piece(s) shorter than %d frames left out: %s",
                self.feature_dir, len(short), split, min_frames, ", ".join(short["piece_id"][:5]),
            )
        rows = rows[rows["n_frames"] >= min_frames]
        self.piece_ids: list[str] = rows["piece_id"].astype(str).tolist()
        self.n_frames: np.ndarray = rows["n_frames"].to_numpy(dtype=np.int64)
        self.embeddings = _check_embeddings(embeddings)
        self._cache: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._max_open = _max_open_pieces()
        self._warned_many: set[int] = set()
        self._gains: dict[int, np.ndarray] = {}

    def stem_gains(self, i: int) -> np.ndarray | None:
        """Gains ``(S,)`` of piece ``i``'s stem CQTs on its mixture's scale
        (:func:`slotmpe.stem_masks.estimate_stem_gains`, computed once per process), or ``None``
        for a piece without stem audio."""
        piece = self._piece(i)
        if not bool(piece["has_stems"]) or piece["stem_cqt"].shape[0] == 0:
            return None
        g = self._gains.get(i)
        if g is None:
            g = estimate_stem_gains(piece["cqt"], piece["stem_cqt"])
            self._gains[i] = g
        return g

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()  # memory maps are reopened in each worker
        return state

    def _piece(self, i: int) -> dict[str, Any]:
        """Piece ``i`` (memory-mapped arrays + source embeddings ``(S, 128)``), LRU-cached."""
        piece = self._cache.get(i)
        if piece is not None:
            self._cache.move_to_end(i)
            return piece
        path = self.feature_dir / f"{self.piece_ids[i]}.npz"
        piece = load_piece(path)
        t = int(piece["n_frames"])
        if t != self.n_frames[i] or piece["cqt"].shape != (N_WIDE, t):
            raise FeatureCacheError(
                f"{path}: cqt {piece['cqt'].shape} / n_frames {t} disagree with the index "
                f"({self.n_frames[i]} frames); rebuild the feature cache"
            )
        zero = np.zeros(EMBED_DIM, dtype=np.float32)
        ids = [str(s) for s in piece["track_ids"]]
        piece["emb"] = (
            np.stack([self.embeddings.get(s, zero) for s in ids])
            if ids
            else np.zeros((0, EMBED_DIM), dtype=np.float32)
        )
        self._cache[i] = piece
        while len(self._cache) > self._max_open:
            self._cache.popitem(last=False)
        return piece

    def _select(self, i: int, rolls: np.ndarray) -> np.ndarray:
        """Indices (ascending) of at most ``max_sources`` sources of ``rolls`` ``(S, 72, W)``."""
        n_src = rolls.shape[0]
        if n_src <= self.max_sources:
            return np.arange(n_src)
        if i not in self._warned_many:
            self._warned_many.add(i)
            log.warning(
                "piece %s has %d pitched sources; keeping the %d most active per item",
                self.piece_ids[i], n_src, self.max_sources,
            )
        activity = rolls.reshape(n_src, -1).sum(axis=1)
        order = np.argsort(-activity, kind="stable")[: self.max_sources]
        return np.sort(order)

    def _item(self, i: int, start: int, stop: int) -> dict[str, torch.Tensor]:
        """Item of piece ``i`` over frames ``[start, stop)`` (see the module docstring)."""
        piece = self._piece(i)
        width = stop - start
        k = self.max_sources
        cqt = np.asarray(piece["cqt"][:, start:stop], dtype=np.float32)  # (N_WIDE, W)
        x = hcqt_from_cqt(cqt)  # (12, 216, W)
        src_all = np.asarray(piece["source_rolls"][:, :, start:stop])  # (S, 72, W) bool
        sel = self._select(i, src_all)
        n = len(sel)
        sources = np.zeros((k, N_PITCHES, width), dtype=np.float32)
        sources[:n] = src_all[sel]
        present = np.zeros(k, dtype=bool)
        present[:n] = src_all[sel].any(axis=(1, 2))
        source_poly = np.zeros((k, width), dtype=np.float32)
        source_poly[:n] = piece["source_poly"][sel, start:stop]
        emb = np.zeros((k, EMBED_DIM), dtype=np.float32)
        emb[:n] = piece["emb"][sel]
        item = {
            "x": torch.from_numpy(x),
            "mix": torch.from_numpy(np.asarray(piece["mix_roll"][:, start:stop], dtype=np.float32)),
            "family": torch.from_numpy(
                np.asarray(piece["family_rolls"][:, :, start:stop], dtype=np.float32)
            ),
            "sources": torch.from_numpy(sources),
            "source_present": torch.from_numpy(present),
            "source_emb": torch.from_numpy(emb),
            "poly": torch.from_numpy(np.asarray(piece["poly"][start:stop], dtype=np.int64)),
            "source_poly": torch.from_numpy(source_poly),
        }
        if self.mask_targets:
            masks = np.zeros((k, N_PITCHES, width), dtype=np.float32)
            valid = np.zeros((N_PITCHES, width), dtype=bool)
            gains = self.stem_gains(i)
            if gains is not None and n:
                stems = np.asarray(piece["stem_cqt"][sel, :, start:stop])  # (n, N_WIDE, W)
                masks[:n], valid = window_ratio_masks(stems, gains[sel], present[:n])
            item["mask_target"] = torch.from_numpy(masks)
            item["mask_valid"] = torch.from_numpy(valid)
        if self.mark_remix:
            item["remixed"] = torch.tensor(False)
        return item


class WindowDataset(_PieceSet):
    """Fixed-length windows of one split of a feature cache (see the module docstring).

    Args:
        feature_dir: ``data/{dataset}/features`` (with ``index.csv``).
        split: "train", "val" or "test".
        train: random windows re-drawn per epoch (True) or fixed deterministic windows (False).
        window: frames per window ``W`` (23 for the slot model, 46 for the timbre encoder).
        windows_per_epoch: windows per epoch; ``None`` = ``sum(T // W)`` when training, all fixed
            windows otherwise (a number keeps that many evenly spaced fixed windows).
        seed: non-negative seed; windows of epoch ``e`` depend only on ``(seed, e)``.
        embeddings: track_id -> ``(128,)`` timbre embedding for ``source_emb`` (zeros if absent).
        max_sources: ``K``, the padded number of sources per item.
        mask_targets: add ``mask_target`` / ``mask_valid`` (stem ratio masks, extension 4h) to
            every item; the attribute may also be switched on after construction.
    """

    def __init__(
        self,
        feature_dir: str | os.PathLike[str],
        split: str,
        train: bool,
        window: int = WINDOW_FRAMES,
        windows_per_epoch: int | None = None,
        seed: int = 0,
        embeddings: dict[str, np.ndarray] | None = None,
        max_sources: int = MAX_SLOTS,
        mask_targets: bool = False,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 frame, got {window}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if windows_per_epoch is not None and windows_per_epoch < 0:
            raise ValueError(f"windows_per_epoch must be >= 0, got {windows_per_epoch}")
        super().__init__(feature_dir, split, embeddings, max_sources, min_frames=window,
                         mask_targets=mask_targets)
        self.train = bool(train)
        self.window = int(window)
        self.windows_per_epoch = windows_per_epoch
        self.seed = int(seed)
        self.epoch = 0
        self.windows = np.zeros((0, 2), dtype=np.int64)  # (N, 2): piece index, start frame
        if self.train:
            self.set_epoch(0)
        else:
            self.windows = self._fixed_windows()

    def _fixed_windows(self) -> np.ndarray:
        w = self.window
        rows = []
        for i, t in enumerate(self.n_frames):
            starts = np.arange(0, t - w + 1, w, dtype=np.int64)
            if (t - w) % w:
                starts = np.append(starts, t - w)
            rows.append(np.stack([np.full_like(starts, i), starts], axis=1))
        win = np.concatenate(rows) if rows else np.zeros((0, 2), dtype=np.int64)
        n = self.windows_per_epoch
        if n is not None and n < len(win):
            keep = np.unique(np.linspace(0, len(win) - 1, n).round().astype(np.int64)) if n else []
            win = win[keep]
        return win

    def set_epoch(self, epoch: int) -> None:
        """Draw the random windows of ``epoch`` (training only; no-op for fixed windows)."""
        self.epoch = int(epoch)
        if not self.train:
            return
        n_pos = self.n_frames - self.window + 1  # possible offsets per piece
        total = int(n_pos.sum()) if len(n_pos) else 0
        n = (
            self.windows_per_epoch
            if self.windows_per_epoch is not None
            else int((self.n_frames // self.window).sum())
        )
        if total == 0 or n == 0:
            self.windows = np.zeros((0, 2), dtype=np.int64)
            return
        rng = np.random.default_rng([self.seed, self.epoch])
        # a uniform draw over all (piece, offset) positions of the split
        flat = rng.integers(0, total, size=n)
        bounds = np.cumsum(n_pos)
        piece = np.searchsorted(bounds, flat, side="right")
        start = flat - (bounds[piece] - n_pos[piece])
        self.windows = np.stack([piece, start], axis=1).astype(np.int64)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        i, start = (int(v) for v in self.windows[idx])
        return self._item(i, start, start + self.window)


class FileDataset(_PieceSet):
    """Whole pieces of one split for evaluation: the window item over ``W = T`` plus ``piece_id``.

    Args:
        feature_dir: ``data/{dataset}/features``.
        split: "train", "val" or "test".
        embeddings: track_id -> ``(128,)`` timbre embedding (zeros if absent).
        max_sources: ``K``, the padded number of sources per item.
        mask_targets: add ``mask_target`` / ``mask_valid`` (whole-file stem ratio masks).
    """

    def __init__(
        self,
        feature_dir: str | os.PathLike[str],
        split: str,
        embeddings: dict[str, np.ndarray] | None = None,
        max_sources: int = MAX_SLOTS,
        mask_targets: bool = False,
    ) -> None:
        super().__init__(feature_dir, split, embeddings, max_sources, min_frames=1,
                         mask_targets=mask_targets)

    def __len__(self) -> int:
        return len(self.piece_ids)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        item: dict[str, Any] = self._item(idx, 0, int(self.n_frames[idx]))
        item["piece_id"] = self.piece_ids[idx]
        return item
