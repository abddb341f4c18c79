"""Stem ratio masks on the 72-pitch grid from the cached per-stem CQTs (extension 4h, issue 23).

The feature cache (:mod:`slotmpe.features`) stores, per piece, the mixture's wide CQT ``cqt``
``(N_WIDE, T)`` and each pitched stem's wide CQT ``stem_cqt`` ``(S, N_WIDE, T)``, all float16 and
*log-compressed with each file's own maximum as reference* (:func:`slotmpe.cqt.log_compress`)::

    x = 1 + max(20 log10(M / max(M)), -80) / 80

Three steps turn them into each stem's share of the mixture energy per (pitch, frame) cell:

1. **Undo the compression** (:func:`log_expand`): ``M / max(M) = 10 ** ((x - 1) * 80 / 20)``; a
   cell at the floor (``x == 0``, 80 dB or more below the file's maximum) becomes 0. This recovers
   each file's magnitudes up to its own (unstored) reference ``max(M)``.
2. **Put the stems on the mixture's scale** (:func:`estimate_stem_gains`): the references differ per
   file, so one gain ``g_s = max(M_s) / max(M_mix)`` per stem is estimated from the cached maps
   (a low quantile of the mixture/stem ratio where the stem is strong; see the function), so that
   ``M_mix / max(M_mix) ~= sum_s g_s M_s / max(M_s)``. Magnitudes add only approximately (the
   stems' phases interfere; ``benchmarks/bench_remix.py`` measures the error); non-pitched stems
   (drums) have no cached CQT and take no share.
3. **Energy per pitch cell and ratio** (:func:`pitch_energy`, :func:`ratio_masks`): model bin ``b``
   (0..215) is wide row ``WIDE_OFFSET + b`` and pitch ``p`` (MIDI ``23 + p``) owns the three bins
   ``3p, 3p + 1, 3p + 2`` (centre ``3p + 1``, +-1/3 semitone), so the energy of cell ``(p, t)`` is
   the sum of the squared linear magnitudes of those three bins. Stem ``s``'s ratio mask is its
   energy over the summed energy of the stems taken into account (the *ideal ratio mask* in the
   power domain); a cell whose summed energy is below ``10 ** (-MASK_FLOOR_DB / 10)`` (relative to
   the mixture's maximum bin power, i.e. silence) is marked invalid and its masks are 0.
"""

from __future__ import annotations

import numpy as np

from slotmpe.constants import N_BINS, N_PITCHES
from slotmpe.cqt import N_WIDE, TOP_DB, WIDE_OFFSET

BINS_PER_PITCH: int = N_BINS // N_PITCHES  # 3
MASK_FLOOR_DB: float = 60.0  # cells more than 60 dB below the mixture's peak power are silence
GAIN_FIT_FRAMES: int = 512  # frames (evenly spaced) used to estimate the stem gains of a piece
GAIN_STRONG_DB: float = 20.0  # a stem's cells within 20 dB of its maximum estimate its gain
GAIN_QUANTILE: float = 0.3  # quantile of the mixture/stem ratio over those cells


def log_expand(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`slotmpe.cqt.log_compress`: linear magnitude relative to the file's maximum.

    ``x`` any shape, values in ``[0, 1]`` (float16 or float32) -> float32 of the same shape,
    ``10 ** ((x - 1) * TOP_DB / 20)`` where ``x > 0`` and 0 at the floor (``x <= 0``).
    """
    xf = np.asarray(x, dtype=np.float32)
    out = np.power(np.float32(10.0), (xf - np.float32(1.0)) * np.float32(TOP_DB / 20.0))
    out[xf <= 0.0] = 0.0
    return out


def estimate_stem_gains(
    mix_cqt: np.ndarray,
    stem_cqt: np.ndarray,
    max_frames: int = GAIN_FIT_FRAMES,
    strong_db: float = GAIN_STRONG_DB,
    quantile: float = GAIN_QUANTILE,
) -> np.ndarray:
    """Gains putting each stem's expanded CQT on the mixture's scale.

    ``g_s`` is the ``quantile`` (30th percentile) of the ratio ``log_expand(mix) /
    log_expand(stem_s)`` over the cells where stem ``s`` is within ``strong_db`` (20 dB) of its
    own maximum. Where a stem is strong it dominates most of its cells, so the ratio there is its
    gain; other stems sounding in the same cells only raise the ratio (hence a low quantile), phase
    cancellation lowers it now and then (hence not the minimum). On the tiny profile's 72 stems
    (both embedded datasets) this was closer to the true gains (``max |CQT(stem)| / max |CQT(mix)|``
    from the audio) than a non-negative least-squares fit of the mixture by the stems, which set
    some strongly overlapping stems to 0; ``benchmarks/bench_remix.py`` reports the error.

    Args:
        mix_cqt: log-compressed mixture wide CQT ``(N_WIDE, T)`` (cache member ``cqt``).
        stem_cqt: log-compressed stem wide CQTs ``(S, N_WIDE, T)`` (cache member ``stem_cqt``).
        max_frames: at most this many evenly spaced frames are looked at.
        strong_db: a stem's cells within this many dB of its maximum enter its estimate.
        quantile: quantile (0..1) of the ratios.

    Returns:
        float32 ``(S,)`` (0 for an all-silent stem; ``(0,)`` for ``S = 0``).
    """
    n_src = stem_cqt.shape[0]
    if stem_cqt.ndim != 3 or stem_cqt.shape[1:] != mix_cqt.shape or mix_cqt.shape[0] != N_WIDE:
        raise ValueError(
            f"estimate_stem_gains: stem_cqt {stem_cqt.shape} must be (S, {N_WIDE}, T) with T of "
            f"mix_cqt {mix_cqt.shape}"
        )
    gains = np.zeros(n_src, dtype=np.float32)
    if n_src == 0:
        return gains
    t = mix_cqt.shape[1]
    frames = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(np.int64))
    mix = log_expand(mix_cqt[:, frames])
    level = np.float32(10.0 ** (-strong_db / 20.0))
    for s in range(n_src):
        stem = log_expand(stem_cqt[s][:, frames])
        strong = stem >= level
        if strong.any():
            gains[s] = np.quantile(mix[strong] / stem[strong], quantile)
    return gains


def pitch_energy(lin: np.ndarray) -> np.ndarray:
    """Energy per (pitch, frame) cell: ``lin`` ``(..., N_WIDE, W)`` linear wide-CQT magnitudes ->
    float32 ``(..., 72, W)``, the summed squares of model bins ``3p, 3p + 1, 3p + 2``."""
    if lin.shape[-2] != N_WIDE:
        raise ValueError(f"pitch_energy expects (..., {N_WIDE}, W), got {lin.shape}")
    band = np.asarray(lin[..., WIDE_OFFSET : WIDE_OFFSET + N_BINS, :], dtype=np.float32)
    sq = band * band
    shape = (*sq.shape[:-2], N_PITCHES, BINS_PER_PITCH, sq.shape[-1])
    return sq.reshape(shape).sum(axis=-2)


def ratio_masks(
    energy: np.ndarray, include: np.ndarray | None = None, floor_db: float = MASK_FLOOR_DB
) -> tuple[np.ndarray, np.ndarray]:
    """Ideal ratio masks of stems from their cell energies.

    Args:
        energy: ``(S, 72, W)`` per-stem cell energy on the mixture's scale (:func:`pitch_energy`
            of gained, expanded magnitudes; a mixture peak bin has power 1).
        include: ``(S,)`` bool, the stems that share the energy (e.g. those present in the window);
            others get all-zero masks. Default: all.
        floor_db: cells whose included energy is below ``10 ** (-floor_db / 10)`` are invalid.

    Returns:
        ``(masks, valid)``: float32 ``(S, 72, W)`` with ``masks[s] = E_s / sum_{s' included} E_s'``
        on valid cells (0 elsewhere and for excluded stems; summing to 1 over the included stems on
        every valid cell) and bool ``(72, W)`` ``valid``.
    """
    energy = np.asarray(energy, dtype=np.float32)
    n_src = energy.shape[0]
    inc = np.ones(n_src, dtype=bool) if include is None else np.asarray(include, dtype=bool)
    if inc.shape != (n_src,):
        raise ValueError(f"include must be ({n_src},), got {inc.shape}")
    e = energy * inc[:, None, None]
    total = e.sum(axis=0)  # (72, W)
    valid = total > np.float32(10.0 ** (-floor_db / 10.0))
    masks = np.divide(e, total, out=np.zeros_like(e), where=valid[None])
    return masks.astype(np.float32, copy=False), valid


def window_ratio_masks(
    stem_cqt: np.ndarray, gains: np.ndarray, include: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Ratio masks of one window: ``stem_cqt`` ``(S, N_WIDE, W)`` (log-compressed, cache values),
    ``gains`` ``(S,)`` (:func:`estimate_stem_gains`) -> ``(masks (S, 72, W), valid (72, W))``."""
    lin = log_expand(stem_cqt) * np.asarray(gains, dtype=np.float32)[:, None, None]
    return ratio_masks(pitch_energy(lin), include)
