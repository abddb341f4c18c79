"""Stem windows for the timbre encoder: gain, fast-HCQT, the activity rule and stem loading.

The activity rule is described in the docstring of :mod:`slotmpe.timbre`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from slotmpe.timbre.config import TimbreConfig
from slotmpe.utils import get_logger

log = get_logger(__name__)

# ----------------------------------------------------------------------------------- features


def _features() -> Any:
    """The features module (imported lazily: it pulls in the CQT dependencies)."""
    from slotmpe import features

    return features


def apply_gain_db(logcqt: torch.Tensor, gain_db: torch.Tensor) -> torch.Tensor:
    """Apply a gain in dB to log-compressed CQT windows, consistently with the features module.

    :func:`slotmpe.features.log_compress` maps magnitudes linearly in dB to ``[0, 1]``
    (``x = 1 + dB / TOP_DB``, floor 0 at ``-TOP_DB`` dB re the file maximum). A gain of ``g`` dB
    therefore adds ``g / TOP_DB`` to every cell above the floor, clipped at the floor (0); cells at
    the floor stay there (their true level is unknown). Values may exceed 1 for positive gains
    (louder than the file's original maximum).

    Args:
        logcqt: ``(N, F, T)`` log-CQT windows (:func:`slotmpe.features.cqt_wide` values).
        gain_db: ``(N,)`` gains in dB.

    Returns:
        ``(N, F, T)`` the windows as if their audio had been scaled by ``10 ** (gain_db / 20)``.
    """
    shift = (gain_db.to(logcqt.dtype) / float(_features().TOP_DB)).view(-1, 1, 1)
    return torch.where(logcqt > 0, (logcqt + shift).clamp_min(0.0), torch.zeros_like(logcqt))


def silence_level() -> float:
    """Log-CQT value of silence (the floor of the log compression: 0); masks and padding use it."""
    return 0.0


def windows_to_hcqt(windows: torch.Tensor) -> torch.Tensor:
    """Wide log-CQT windows ``(N, N_WIDE, W)`` -> fast-HCQT ``(N, 12, 216, W)`` (float32)."""
    return _features().hcqt_from_cqt(windows.float()).float()


# ----------------------------------------------------------------------------------- activity


def energy_activity(stem_cqt: np.ndarray, energy_db: float = 30.0) -> np.ndarray:
    """Energy-based frame activity of one stem (rule in the module docstring).

    Args:
        stem_cqt: ``(F, T)`` log-CQT of the stem (features' compression: ``1 + dB / TOP_DB``).
        energy_db: frames whose loudest bin is within this many dB of the stem's reference level
            (the 99th percentile over frames of the loudest bin) are active.

    Returns:
        ``(T,)`` bool; all False for a silent stem (every frame at the floor).
    """
    e = np.asarray(stem_cqt, dtype=np.float32).max(axis=0)
    if e.size == 0:
        return np.zeros(0, dtype=bool)
    hi = float(np.percentile(e, 99.0))
    return (e > 0.0) & (e >= hi - energy_db / float(_features().TOP_DB))


def frame_activity(
    stem_cqt: np.ndarray,
    roll: np.ndarray | None,
    energy_db: float = 30.0,
    agreement_min: float = 0.5,
) -> tuple[np.ndarray, str]:
    """Active frames of one stem and the rule that chose them (see the module docstring).

    Args:
        stem_cqt: ``(F, T)`` log-CQT of the stem.
        roll: ``(72, T)`` bool pitch labels, or ``None`` when there are none.
        energy_db: energy rule parameter (:func:`energy_activity`).
        agreement_min: minimum label precision and coverage against energy for reliable labels.

    Returns:
        ``(active (T,) bool, rule)`` with rule in ``{"labels", "energy", "labels_no_energy",
        "silent"}``.
    """
    energy = energy_activity(stem_cqt, energy_db)
    labels = (
        np.zeros_like(energy)
        if roll is None
        else np.asarray(roll, dtype=bool).any(axis=0)[: energy.shape[0]]
    )
    if labels.shape != energy.shape:
        raise ValueError(f"pitch labels cover {labels.shape[0]} frames, the CQT {energy.shape[0]}")
    n_l, n_e = int(labels.sum()), int(energy.sum())
    if n_l > 0:
        both = int((labels & energy).sum())
        if n_e > 0 and both / n_l >= agreement_min and both / n_e >= agreement_min:
            return labels, "labels"
        if n_e == 0:
            return labels, "labels_no_energy"
    if n_e > 0:
        return energy, "energy"
    return np.zeros_like(energy), "silent"


def active_starts(active: np.ndarray, window: int, min_frac: float = 0.5) -> np.ndarray:
    """Start frames of the active windows of one stem.

    Args:
        active: ``(T,)`` bool frame activity, ``T >= window``.
        window: window length in frames.
        min_frac: minimum active fraction of a window.

    Returns:
        int64 ``(n,)`` sorted starts with active fraction ``>= min_frac``; if there are none, the
        starts with the largest (non-zero) fraction; empty if no frame is active.
    """
    if active.shape[0] < window:
        raise ValueError(f"{active.shape[0]} frames is shorter than the window ({window})")
    cs = np.concatenate([[0], np.cumsum(active.astype(np.int64))])
    frac = (cs[window:] - cs[:-window]) / float(window)
    good = np.flatnonzero(frac >= min_frac - 1e-9)
    if good.size == 0 and frac.max(initial=0.0) > 0:
        good = np.flatnonzero(frac >= frac.max() - 1e-9)
    return good.astype(np.int64)


@dataclass
class Stem:
    """One pitched stem of the feature cache with its activity.

    ``cqt``: float16 ``(N_WIDE, T')`` log-CQT, padded with silence to at least ``window`` frames;
    ``starts``: int64 ``(n,)`` active window starts (empty: no active frames).
    """

    piece_id: str
    split: str
    track_id: str
    instrument: str
    family: str
    cqt: np.ndarray
    starts: np.ndarray
    rule: str
    n_frames: int


def read_index(feature_dir: Path) -> pd.DataFrame:
    """``feature_dir/index.csv`` (piece_id, split, ...); raises ``FileNotFoundError``/``ValueError``."""
    path = Path(feature_dir) / "index.csv"
    if not path.is_file():
        raise FileNotFoundError(f"feature index {path} not found")
    df = pd.read_csv(path, dtype={"piece_id": str, "split": str})
    missing = {"piece_id", "split"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    return df


def load_stems(
    feature_dir: Path, splits: Sequence[str], cfg: TimbreConfig, silence: float | None = None
) -> list[Stem]:
    """Load every pitched stem with stem audio of the given splits, in index/manifest order.

    Args:
        feature_dir: folder with ``index.csv`` and the ``{piece_id}.npz`` files.
        splits: splits to load.
        cfg: window length and activity-rule settings.
        silence: padding value for stems shorter than the window (default :func:`silence_level`).

    Returns:
        the stems (silent ones included, with empty ``starts``).
    """
    from slotmpe.data import load_piece

    feature_dir = Path(feature_dir)
    index = read_index(feature_dir)
    pad_value = silence_level() if silence is None else silence
    stems: list[Stem] = []
    for row in index.itertuples(index=False):
        if row.split not in splits:
            continue
        path = feature_dir / f"{row.piece_id}.npz"
        piece = load_piece(path)
        track_ids = [str(t) for t in np.asarray(piece["track_ids"]).reshape(-1)]
        stem_cqt = np.asarray(piece["stem_cqt"])
        if stem_cqt.shape[0] == 0:
            if track_ids:
                log.info(
                    "%s: %d pitched track(s) without stem audio skipped", path.name, len(track_ids)
                )
            continue
        if stem_cqt.shape[0] != len(track_ids):
            raise ValueError(
                f"{path}: stem_cqt has {stem_cqt.shape[0]} stems but track_ids {len(track_ids)}"
            )
        rolls = piece.get("source_rolls")
        instruments = [str(t) for t in np.asarray(piece["instruments"]).reshape(-1)]
        families = [str(t) for t in np.asarray(piece["families"]).reshape(-1)]
        for s, track in enumerate(track_ids):
            cqt = stem_cqt[s]
            roll = None if rolls is None or len(rolls) <= s else np.asarray(rolls[s])
            active, rule = frame_activity(
                cqt, roll, cfg.energy_db, cfg.label_agreement_min
            )
            n_frames = cqt.shape[1]
            if n_frames < cfg.window:
                pad = cfg.window - n_frames
                cqt = np.pad(cqt, ((0, 0), (0, pad)), constant_values=pad_value)
                active = np.pad(active, (0, pad))
            starts = (
                active_starts(active, cfg.window, cfg.min_active_frac)
                if active.any()
                else np.zeros(0, dtype=np.int64)
            )
            stems.append(
                Stem(
                    piece_id=str(row.piece_id),
                    split=str(row.split),
                    track_id=track,
                    instrument=instruments[s],
                    family=families[s],
                    cqt=np.ascontiguousarray(cqt, dtype=np.float16),
                    starts=starts,
                    rule=rule,
                    n_frames=int(n_frames),
                )
            )
    return stems


def stem_window(stem: Stem, start: int, window: int) -> np.ndarray:
    """``(N_WIDE, window)`` float32 slice of a stem's log-CQT."""
    return stem.cqt[:, start : start + window].astype(np.float32)


def pick_starts(rng: np.random.Generator, starts: np.ndarray, n: int) -> np.ndarray:
    """``n`` starts from ``starts`` (without replacement when there are enough)."""
    return rng.choice(starts, size=n, replace=bool(starts.size < n))


