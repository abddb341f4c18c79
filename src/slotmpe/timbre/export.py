"""Export of one timbre embedding per pitched stem (``embeddings.parquet``) and its readers."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slotmpe.constants import EMBED_DIM
from slotmpe.models.timbre_encoder import TimbreEncoder
from slotmpe.timbre.config import EMBEDDING_COLUMNS, TimbreConfig
from slotmpe.timbre.retrieval import embed_windows
from slotmpe.timbre.stems import load_stems, stem_window
from slotmpe.utils import atomic_path, get_logger

log = get_logger(__name__)

# ----------------------------------------------------------------------------------- export


def _config_from_extra(extra: dict[str, Any]) -> TimbreConfig:
    """The TimbreConfig stored in a checkpoint's ``extra`` (defaults where absent)."""
    stored = dict(extra.get("timbre_config") or {})
    names = {f.name for f in dataclasses.fields(TimbreConfig)}
    return TimbreConfig(**{k: v for k, v in stored.items() if k in names})


def export_embeddings(encoder_path: Path, feature_dir: Path, out_path: Path, seed: int = 0) -> Path:
    """One L2-normalised timbre embedding per pitched stem (with stem audio) of every split.

    Per stem, up to ``export_windows`` active windows (seeded choice among the active starts;
    evenly spaced windows for a stem without active frames, with a warning) are embedded, the
    embeddings averaged and L2-normalised.

    Writes ``out_path`` (parquet, atomic): columns ``track_id, piece_id, split, instrument, family,
    e0..e127`` (float32), one row per pitched stem, in index/manifest order.

    Returns:
        ``out_path``.
    """
    from slotmpe import models

    model, meta = models.load_checkpoint(Path(encoder_path), map_location="cpu")
    if not isinstance(model, TimbreEncoder):
        raise TypeError(f"{encoder_path} holds a {type(model).__name__}, not a TimbreEncoder")
    model.eval()
    cfg = _config_from_extra(dict(meta.get("extra") or {}))
    stems = load_stems(Path(feature_dir), ("train", "val", "test"), cfg)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for stem in stems:
        starts = stem.starts
        if starts.size == 0:
            log.warning(
                "%s/%s: no active frames (rule %s); embedding evenly spaced windows",
                stem.piece_id, stem.track_id, stem.rule,
            )
            last = stem.cqt.shape[1] - cfg.window
            starts = np.unique(np.linspace(0, last, cfg.export_windows).round().astype(np.int64))
        elif starts.size > cfg.export_windows:
            starts = np.sort(rng.choice(starts, size=cfg.export_windows, replace=False))
        wins = np.stack([stem_window(stem, int(s), cfg.window) for s in starts])
        emb = embed_windows(model, wins).mean(axis=0)
        emb = emb / max(float(np.linalg.norm(emb)), 1e-12)
        row: dict[str, Any] = {
            "track_id": stem.track_id,
            "piece_id": stem.piece_id,
            "split": stem.split,
            "instrument": stem.instrument,
            "family": stem.family,
        }
        row.update({f"e{i}": np.float32(x) for i, x in enumerate(emb)})
        rows.append(row)
    df = pd.DataFrame(rows, columns=list(EMBEDDING_COLUMNS))
    if df["track_id"].duplicated().any():
        dup = df.loc[df["track_id"].duplicated(), "track_id"].tolist()[:5]
        raise ValueError(f"{feature_dir}: duplicate track ids {dup}")
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        df.to_parquet(tmp, index=False)
    log.info("exported %d stem embeddings to %s", len(df), out_path)
    return out_path


def read_embeddings(path: Path) -> pd.DataFrame:
    """The embeddings parquet, validated (columns of :data:`EMBEDDING_COLUMNS`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"timbre embeddings {path} not found")
    df = pd.read_parquet(path)
    missing = [c for c in EMBEDDING_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing[:6]}{'...' if len(missing) > 6 else ''}")
    return df


def load_embeddings(path: Path) -> dict[str, np.ndarray]:
    """``track_id -> (128,) float32`` unit embedding, from :func:`export_embeddings`'s parquet."""
    df = read_embeddings(path)
    mat = df[[f"e{i}" for i in range(EMBED_DIM)]].to_numpy(np.float32)
    return {str(t): mat[i].copy() for i, t in enumerate(df["track_id"])}


