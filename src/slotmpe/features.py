"""Input features: the wide log-CQT, the fast-HCQT input and the per-piece feature cache.

One front end serves training, evaluation, ``slotmpe transcribe`` and the timbre encoder:

1. **Wide CQT** (:func:`cqt_wide`), computed once per file with librosa's recursive CQT at 16 kHz,
   hop 512, 36 bins per octave, centred frames (frame ``t`` at ``t * 512 / 16000`` s,
   ``T = 1 + n_samples // 512``). It has ``N_WIDE = 325`` bins starting at
   ``WIDE_FMIN = FMIN / 2 ~= 15.13 Hz`` (one octave = 36 bins below the first model bin, so the 0.5
   subharmonic is valid for every model bin) up to a top bin centred at ~7751 Hz, the highest bin
   whose filter still fits below the 8 kHz Nyquist frequency. Model bin ``b`` (0..215, MIDI 23..94,
   pitch ``p`` centred on ``3p + 1``) is wide bin ``WIDE_OFFSET + b`` with ``WIDE_OFFSET = 36``.
2. **Magnitude calibration and log compression** (:func:`log_compress`): the complex response is
   computed without librosa's length scaling and divided by each filter's length, so a sinusoid of
   amplitude ``A`` at a bin's centre frequency reads ``A / 2`` in that bin at every frequency. The
   magnitude ``M`` is then expressed in dB relative to the file's maximum, floored at
   ``-TOP_DB = -80`` dB and mapped linearly to ``[0, 1]``::

       x = 1 + max(20 log10(M / max(M)), -80) / 80

   i.e. 1 at the loudest bin of the file, 0 at 80 dB below it or quieter (an all-zero file gives all
   zeros). The reference is per *file* (mixture and each stem separately), so features do not depend
   on the recording level; a crop of a file has the same features as the crop of the file's
   features up to a constant offset (the reference).
3. **Fast-HCQT** (:func:`hcqt_from_cqt`): for harmonics ``(0.5, 1, 2, 3, 4, 5)`` the wide CQT is
   shifted by ``constants.HARMONIC_SHIFTS = (-36, 0, 36, 57, 72, 84)`` bins so that channel ``h`` at
   model bin ``b`` holds wide bin ``WIDE_OFFSET + b + shift_h``. Channels 0-5 are these maps,
   channels 6-11 their validity masks (1 where the source bin exists, else the value is 0 and the
   mask 0). With this wide range only the 5th harmonic of the top 11 model bins (b >= 205) is
   missing. The result is ``(12, 216, T)``, or ``(B, 12, 216, T)`` for a batch.

The cache (:func:`build_feature_cache`) stores the wide CQT (float16, ``(N_WIDE, T)``) per piece; the
HCQT is sliced from it on the fly (:mod:`slotmpe.data`), which is cheap and keeps the cache 12x
smaller than storing the HCQT.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import librosa
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from slotmpe.audio import AudioError, check_audio, load_audio, resample, to_mono
from slotmpe.constants import (
    BINS_PER_OCTAVE,
    HARMONIC_SHIFTS,
    HOP_LENGTH,
    N_BINS,
    N_PITCHES,
    SAMPLE_RATE,
    WINDOW_FRAMES,
    n_frames_for,
)
from slotmpe.cqt import (  # noqa: F401 (torch-free parts shared with transcribe; re-exported)
    HCQT_BLOCKS,
    N_WIDE,
    TOP_DB,
    WIDE_FMIN,
    WIDE_OFFSET,
    hcqt_np,
    log_compress,
    wide_frequencies,
)
from slotmpe.targets import piece_targets
from slotmpe.utils import atomic_path, get_logger

log = get_logger(__name__)


# Feature cache: keys of each piece file (CONTRACTS.md) and the index columns.
PIECE_KEYS: tuple[str, ...] = (
    "cqt",
    "stem_cqt",
    "source_rolls",
    "family_rolls",
    "mix_roll",
    "poly",
    "source_poly",
    "track_ids",
    "instruments",
    "families",
    "has_stems",
    "n_frames",
)
INDEX_COLUMNS: tuple[str, ...] = ("piece_id", "split", "n_frames", "n_sources")
INDEX_NAME = "index.csv"
SKIPPED_NAME = "skipped.csv"

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


class FeatureError(ValueError):
    """Bad input for the feature step (too short, no usable annotations, ...); names the file."""


# --------------------------------------------------------------------------------------------
# Wide CQT
# --------------------------------------------------------------------------------------------


@cache
def _filter_lengths() -> np.ndarray:
    """Length in samples (at 16 kHz) of each wide-CQT filter, float32 ``(N_WIDE, 1)``."""
    lengths, _ = librosa.filters.wavelet_lengths(
        freqs=wide_frequencies(), sr=SAMPLE_RATE, window="hann", filter_scale=1
    )
    return np.asarray(lengths, dtype=np.float32)[:, None]


def _as_mono_16k(audio: np.ndarray, sr: int, name: str) -> np.ndarray:
    """Validate mono ``(n,)`` (or ``(n, channels)``) audio and resample it to 16 kHz float32."""
    y = to_mono(np.asarray(audio, dtype=np.float32))
    check_audio(y, name, allow_silent=True)  # empty or NaN/inf -> AudioError
    if int(sr) <= 0:
        raise AudioError(f"{name}: invalid sample rate {sr}")
    return resample(y, int(sr), SAMPLE_RATE)


def cqt_wide(audio: np.ndarray, sr: int = SAMPLE_RATE, name: str = "audio") -> np.ndarray:
    """Log-compressed wide CQT of a mono signal.

    Args:
        audio: float samples ``(n,)`` (or ``(n, channels)``, averaged), any sample rate.
        sr: sample rate of ``audio``; resampled to 16 kHz (soxr HQ) when different.
        name: used in error messages (e.g. the file name).

    Returns:
        float32 ``(N_WIDE, T)`` in ``[0, 1]`` with ``T = 1 + n16 // 512`` (``n16`` = samples at
        16 kHz); model bin ``b`` is row ``WIDE_OFFSET + b``. Raises :class:`~slotmpe.audio.AudioError`
        for empty or non-finite audio.
    """
    y = _as_mono_16k(audio, sr, name)
    n_frames = n_frames_for(len(y))
    with warnings.catch_warnings():
        # the lowest octaves are computed on heavily downsampled signals; for short inputs librosa
        # warns that its n_fft exceeds their length (harmless: the signal is zero-padded).
        warnings.filterwarnings("ignore", message="n_fft=.*is too large", category=UserWarning)
        spec = librosa.cqt(
            y,
            sr=SAMPLE_RATE,
            hop_length=HOP_LENGTH,
            fmin=WIDE_FMIN,
            n_bins=N_WIDE,
            bins_per_octave=BINS_PER_OCTAVE,
            scale=False,
            pad_mode="constant",
            res_type="soxr_hq",
        )
    mag = np.abs(spec).astype(np.float32, copy=False)
    mag /= _filter_lengths()  # a sinusoid of amplitude A reads A / 2 at its bin
    if mag.shape[1] >= n_frames:
        mag = mag[:, :n_frames]
    else:  # pragma: no cover - librosa returns 1 + n // hop frames; kept as a guard
        mag = np.pad(mag, ((0, 0), (0, n_frames - mag.shape[1])))
    return log_compress(mag)


# --------------------------------------------------------------------------------------------
# Fast-HCQT
# --------------------------------------------------------------------------------------------


HCQT_VALID: np.ndarray = np.zeros((len(HARMONIC_SHIFTS), N_BINS), dtype=bool)  # (6, 216)
for _h, (_b0, _b1, _r0, _r1) in enumerate(HCQT_BLOCKS):
    HCQT_VALID[_h, _b0:_b1] = True


def hcqt_from_cqt(cqt: ArrayT) -> ArrayT:
    """Fast-HCQT input from a wide CQT (numpy or torch; same type, float dtype and device out).

    Args:
        cqt: ``(N_WIDE, T)`` or batched ``(B, N_WIDE, T)`` wide CQT (:func:`cqt_wide`); any
            further leading dimensions are kept too.

    Returns:
        ``(12, 216, T)`` or ``(B, 12, 216, T)`` (``(..., 12, 216, T)``): channel ``i < 6`` is harmonic
        ``constants.HARMONICS[i]`` (value at model bin ``b`` = ``cqt[WIDE_OFFSET + b + shift_i]``,
        0 where that row does not exist), channel ``6 + i`` its validity mask (1.0 / 0.0). Each
        harmonic is one contiguous block copy of rows, so this costs about as much as copying the
        output once.
    """
    if cqt.ndim < 2 or cqt.shape[-2] != N_WIDE:
        raise ValueError(
            f"hcqt_from_cqt expects (..., N_WIDE={N_WIDE}, T), got {tuple(cqt.shape)}"
        )
    shape = (*cqt.shape[:-2], 2 * len(HARMONIC_SHIFTS), N_BINS, cqt.shape[-1])
    n_h = len(HARMONIC_SHIFTS)
    if isinstance(cqt, torch.Tensor):
        dtype = cqt.dtype if cqt.is_floating_point() else torch.float32
        out_t = torch.zeros(shape, dtype=dtype, device=cqt.device)
        for h, (b0, b1, r0, r1) in enumerate(HCQT_BLOCKS):
            out_t[..., h, b0:b1, :] = cqt[..., r0:r1, :]
            out_t[..., n_h + h, b0:b1, :] = 1.0
        return out_t
    return hcqt_np(cqt)


def hcqt(audio: np.ndarray, sr: int = SAMPLE_RATE, name: str = "audio") -> np.ndarray:
    """Model input of a mono signal at any sample rate: float32 numpy ``(12, 216, T)``.

    ``T = 1 + n16 // 512`` frames (``n16`` = number of samples after resampling to 16 kHz); see
    :func:`cqt_wide` and :func:`hcqt_from_cqt`. Use ``torch.from_numpy`` for a tensor.
    """
    return hcqt_from_cqt(cqt_wide(audio, sr, name=name))


# --------------------------------------------------------------------------------------------
# Feature cache
# --------------------------------------------------------------------------------------------


@dataclass
class _Track:
    track_id: str
    instrument: str
    family: str
    pitched: bool
    stem: Path | None
    notes: Path | None


@dataclass
class _PieceJob:
    piece_id: str
    split: str
    mix: Path | None
    tracks: list[_Track]
    out_path: Path
    notes_frames: list[Any] = field(default_factory=list)


@dataclass
class _PieceResult:
    piece_id: str
    split: str
    n_frames: int = 0
    n_sources: int = 0
    skipped: str | None = None


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad or cut ``(m,)`` to ``(n,)``."""
    if len(y) >= n:
        return y[:n]
    return np.pad(y, (0, n - len(y)))


def _load_mixture(job: _PieceJob) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Mixture audio ``(n,)`` at 16 kHz and the pitched stems' audio by track id (length ``n``).

    Without a mix file the mixture is the sum of all stems (pitched and non-pitched).
    """
    stems: dict[str, np.ndarray] = {}
    for tr in job.tracks:
        if tr.stem is not None and (tr.pitched or job.mix is None):
            y, _ = load_audio(tr.stem, allow_silent=True)
            if float(np.max(np.abs(y))) == 0.0:
                log.warning("%s: stem is digitally silent", tr.stem)
            stems[tr.track_id] = y
    if job.mix is not None:
        mix, _ = load_audio(job.mix)  # AudioError for silent / NaN / unreadable
        name = str(job.mix)
    else:
        if not stems:
            raise FeatureError(f"piece {job.piece_id}: no mix_path and no stem audio")
        n = max(len(y) for y in stems.values())
        mix = np.sum([_fit_length(y, n) for y in stems.values()], axis=0).astype(np.float32)
        name = f"piece {job.piece_id} (sum of stems)"
        check_audio(mix, name)
    n = len(mix)
    for tid, y in stems.items():
        if abs(len(y) - n) > SAMPLE_RATE // 2:
            log.warning(
                "piece %s: stem %s has %.2f s, the mix %.2f s; padded/cut to the mix",
                job.piece_id, tid, len(y) / SAMPLE_RATE, n / SAMPLE_RATE,
            )
        stems[tid] = _fit_length(y, n)
    if n_frames_for(n) < WINDOW_FRAMES:
        raise FeatureError(
            f"{name}: audio is {n / SAMPLE_RATE:.3f} s, shorter than one {WINDOW_FRAMES}-frame "
            f"window ({(WINDOW_FRAMES - 1) * HOP_LENGTH / SAMPLE_RATE:.3f} s)"
        )
    return mix, stems


def _process_piece(job: _PieceJob) -> _PieceResult:
    """Compute and write one piece file; raises FeatureError / AudioError / ManifestError."""
    mix, stems = _load_mixture(job)
    n_samples = len(mix)
    duration = n_samples / SAMPLE_RATE
    cqt = cqt_wide(mix, SAMPLE_RATE, name=str(job.mix or job.piece_id))
    n_frames = cqt.shape[1]

    pitched = [tr for tr in job.tracks if tr.pitched]
    notes = job.notes_frames
    n_notes_total = 0
    for tr, nf in zip(pitched, notes, strict=True):
        label = str(tr.notes) if tr.notes is not None else f"track {tr.track_id}"
        if tr.notes is None or len(nf) == 0:
            log.warning("piece %s: pitched track %s has no notes (%s)", job.piece_id, tr.track_id, label)
            continue
        n_notes_total += len(nf)
        late = int((nf["onset_s"].to_numpy() >= duration).sum())
        if late:
            log.warning(
                "%s: %d of %d notes start after the end of the audio (%.2f s)",
                label, late, len(nf), duration,
            )
    tg = piece_targets(
        notes,
        [tr.family for tr in pitched],
        n_frames,
        names=[str(tr.notes) if tr.notes is not None else tr.track_id for tr in pitched],
    )
    for tr, nf, roll in zip(pitched, notes, tg.source_rolls, strict=True):
        if len(nf) and not roll.any():
            log.warning(
                "%s: no note of track %s overlaps the audio (0..%.2f s, MIDI 23..94)",
                tr.notes, tr.track_id, duration,
            )
    if n_notes_total == 0:
        raise FeatureError(f"piece {job.piece_id}: no annotated notes in any pitched track")
    if not tg.mix_roll.any():
        raise FeatureError(
            f"piece {job.piece_id}: annotations do not overlap the audio "
            f"({job.mix or 'mix'}, {duration:.2f} s) within MIDI 23..94"
        )

    has_stems = bool(pitched) and all(tr.track_id in stems for tr in pitched)
    if not has_stems and stems:
        log.warning(
            "piece %s: only some pitched tracks have stem audio; stem_cqt left empty", job.piece_id
        )
    if has_stems:
        stem_cqt = np.stack(
            [cqt_wide(stems[tr.track_id], SAMPLE_RATE, name=str(tr.stem)) for tr in pitched]
        ).astype(np.float16)
    else:
        stem_cqt = np.zeros((0, N_WIDE, n_frames), dtype=np.float16)

    arrays: dict[str, np.ndarray] = {
        "cqt": cqt.astype(np.float16),
        "stem_cqt": stem_cqt,
        "source_rolls": tg.source_rolls,
        "family_rolls": tg.family_rolls,
        "mix_roll": tg.mix_roll,
        "poly": tg.poly,
        "source_poly": tg.source_poly,
        "track_ids": np.array([tr.track_id for tr in pitched], dtype=str),
        "instruments": np.array([tr.instrument for tr in pitched], dtype=str),
        "families": np.array([tr.family for tr in pitched], dtype=str),
        "has_stems": np.array(has_stems),
        "n_frames": np.array(n_frames, dtype=np.int64),
    }
    assert tuple(arrays) == PIECE_KEYS
    assert tg.source_rolls.shape == (len(pitched), N_PITCHES, n_frames)
    with atomic_path(job.out_path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # uncompressed: members can be memory-mapped (data.load_piece)
    return _PieceResult(job.piece_id, job.split, n_frames, len(pitched))


def _run_job(job: _PieceJob, strict: bool) -> _PieceResult:
    """Process a piece; in non-strict mode bad input becomes a logged skip."""
    from slotmpe.datasets.manifest import ManifestError, read_notes

    try:
        job.notes_frames = [
            read_notes(tr.notes) if tr.notes is not None else _empty_notes()
            for tr in job.tracks
            if tr.pitched
        ]
        return _process_piece(job)
    except (AudioError, FeatureError, ManifestError) as exc:
        if strict:
            raise
        log.warning("skipping piece %s: %s", job.piece_id, exc)
        return _PieceResult(job.piece_id, job.split, skipped=str(exc))


def _empty_notes() -> pd.DataFrame:
    return pd.DataFrame({"onset_s": [], "offset_s": [], "midi": []})


def _jobs_from_manifest(manifest_path: Path, out_dir: Path) -> list[_PieceJob]:
    from slotmpe.datasets.manifest import read_manifest, resolve_path

    df = read_manifest(manifest_path)
    root = manifest_path.parent

    def opt_path(p: object) -> Path | None:
        s = "" if p is None or (isinstance(p, float) and math.isnan(p)) else str(p)
        return resolve_path(root, s) if s else None

    jobs: list[_PieceJob] = []
    for piece_id, rows in df.groupby("piece_id", sort=False):
        splits = rows["split"].unique()
        mixes = rows["mix_path"].unique()
        if len(splits) != 1 or len(mixes) != 1:
            raise FeatureError(
                f"{manifest_path}: piece {piece_id} has several splits {list(splits)} "
                f"or mix paths {list(mixes)}"
            )
        tracks = [
            _Track(
                track_id=str(r.track_id),
                instrument=str(r.instrument),
                family=str(r.family),
                pitched=bool(r.pitched),
                stem=opt_path(r.stem_path),
                notes=opt_path(r.notes_path),
            )
            for r in rows.itertuples(index=False)
        ]
        jobs.append(
            _PieceJob(
                piece_id=str(piece_id),
                split=str(splits[0]),
                mix=opt_path(mixes[0]),
                tracks=tracks,
                out_path=out_dir / f"{piece_id}.npz",
            )
        )
    return jobs


def build_feature_cache(
    manifest_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    threads: int = 1,
    strict: bool = False,
) -> Path:
    """Compute features and targets of every piece of a manifest; returns the ``index.csv`` path.

    Writes, atomically, ``out_dir/{piece_id}.npz`` (uncompressed, keys :data:`PIECE_KEYS`, see
    CONTRACTS.md), ``out_dir/index.csv`` (``piece_id, split, n_frames, n_sources``, manifest
    order) and ``out_dir/skipped.csv`` (``piece_id, split, reason``). Audio is read and resampled
    to 16 kHz once here. Stems are padded/cut to the mixture's length.

    Bad input: unreadable, NaN/inf or silent mixture audio, audio shorter than one 23-frame window,
    malformed notes files, and pieces whose annotations do not overlap the audio (or that have no
    notes at all) raise an error naming the file when ``strict``; otherwise (default) the piece is
    skipped with a logged warning and listed in ``skipped.csv``. If no piece survives, a
    :class:`FeatureError` is raised either way. A silent stem is kept (with a warning); a track
    whose notes all fall outside the audio or MIDI 23..94 gets an empty roll (with a warning).

    Args:
        manifest_path: ``data/{dataset}/manifest.parquet`` (paths inside relative to its folder).
        out_dir: ``data/{dataset}/features``.
        threads: worker processes (one piece per process at a time).
        strict: raise on bad input instead of skipping the piece.
    """
    manifest_path = Path(manifest_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = _jobs_from_manifest(manifest_path, out)
    if not jobs:
        raise FeatureError(f"{manifest_path}: manifest has no pieces")
    n_workers = max(1, min(int(threads or 1), len(jobs)))
    log.info("features of %d pieces from %s -> %s (%d workers)", len(jobs), manifest_path, out, n_workers)
    results: dict[str, _PieceResult] = {}
    bar = tqdm(total=len(jobs), desc=f"features {manifest_path.parent.name}", unit="piece")
    try:
        if n_workers == 1:
            for job in jobs:
                results[job.piece_id] = _run_job(job, strict)
                bar.update()
        else:
            with cf.ProcessPoolExecutor(max_workers=n_workers) as pool:
                futures = {pool.submit(_run_job, job, strict): job.piece_id for job in jobs}
                for fut in cf.as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update()
    finally:
        bar.close()
    ordered = [results[j.piece_id] for j in jobs]
    kept = [r for r in ordered if r.skipped is None]
    skipped = [r for r in ordered if r.skipped is not None]
    with atomic_path(out / SKIPPED_NAME) as tmp:
        pd.DataFrame(
            [(r.piece_id, r.split, r.skipped) for r in skipped], columns=["piece_id", "split", "reason"]
        ).to_csv(tmp, index=False)
    if not kept:
        raise FeatureError(f"{manifest_path}: every piece was skipped (see {out / SKIPPED_NAME})")
    if skipped:
        log.warning("skipped %d of %d pieces (listed in %s)", len(skipped), len(jobs), out / SKIPPED_NAME)
    index_path = out / INDEX_NAME
    with atomic_path(index_path) as tmp:
        pd.DataFrame(
            [(r.piece_id, r.split, r.n_frames, r.n_sources) for r in kept], columns=list(INDEX_COLUMNS)
        ).to_csv(tmp, index=False)
    hours = sum(r.n_frames for r in kept) * HOP_LENGTH / SAMPLE_RATE / 3600.0
    log.info("wrote %d pieces (%.2f h of audio) and %s", len(kept), hours, index_path)
    return index_path
