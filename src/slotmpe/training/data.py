"""Data of a training run: the timbre embeddings table, the datasets and per-epoch loaders."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from slotmpe.constants import EMBED_DIM
from slotmpe.training.config import TrainConfig, resolve_windows_per_epoch


def load_embeddings_table(path: str | Path) -> dict[str, np.ndarray]:
    """Read ``embeddings.parquet`` (columns ``track_id``, ``e0``..``e127``) into ``{track_id: (128,)}``.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file for a missing file, missing columns,
    duplicated track ids or non-finite values.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"timbre embeddings file {path} does not exist")
    df = pd.read_parquet(path)
    cols = [f"e{i}" for i in range(EMBED_DIM)]
    missing = [c for c in ["track_id", *cols] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing[:5]}{'...' if len(missing) > 5 else ''}")
    ids = df["track_id"].astype(str)
    if ids.duplicated().any():
        raise ValueError(f"{path}: duplicated track_id(s) {sorted(set(ids[ids.duplicated()]))[:5]}")
    mat = df[cols].to_numpy(dtype=np.float32)
    if not np.isfinite(mat).all():
        raise ValueError(f"{path}: non-finite embedding values")
    return {t: mat[i] for i, t in enumerate(ids)}


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch), 0x5107]).generate_state(1)[0])


def _worker_init(worker_id: int) -> None:
    """Seed numpy/python in a DataLoader worker from torch's per-worker seed."""
    s = torch.initial_seed() % (2**32)
    np.random.seed(s)
    random.seed(s)


def _epoch_loader(ds: Dataset, cfg: TrainConfig, epoch: int, shuffle: bool, pin: bool) -> DataLoader:
    """A loader whose order and worker seeds depend only on ``(cfg.seed, epoch)``."""
    g = torch.Generator()
    g.manual_seed(_epoch_seed(cfg.seed, epoch))
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        generator=g,
        num_workers=cfg.num_workers,
        worker_init_fn=_worker_init if cfg.num_workers else None,
        pin_memory=pin,
        drop_last=False,
        persistent_workers=False,
    )


def make_datasets(
    feature_dir: Path, cfg: TrainConfig, embeddings: dict[str, np.ndarray] | None
) -> tuple[Any, Any]:
    """Training :class:`slotmpe.data.WindowDataset` (random windows) and the fixed validation
    windows (``cfg.val_windows`` evenly spaced ones, or all)."""
    from slotmpe.data import WindowDataset

    train = WindowDataset(feature_dir, "train", train=True, window=cfg.window,
                          windows_per_epoch=None, seed=cfg.seed, embeddings=embeddings)
    per_epoch = resolve_windows_per_epoch(cfg.windows_per_epoch, len(train))  # len = one pass
    if per_epoch is not None:
        train.windows_per_epoch = per_epoch
        train.set_epoch(0)
    val = WindowDataset(feature_dir, "val", train=False, window=cfg.window,
                        windows_per_epoch=cfg.val_windows, seed=cfg.seed, embeddings=embeddings)
    if len(train) == 0:
        raise ValueError(f"{feature_dir}: no training windows (split 'train' is empty or too short)")
    if len(val) == 0:
        raise ValueError(f"{feature_dir}: no validation windows (split 'val' is empty or too short)")
    return train, val


