"""Frame-level training targets: pitch rolls, family rolls, mixture roll and polyphony.

Time convention (``constants``): frame ``t`` is centred at ``t * 512 / 16000`` s. A note with onset
``a`` and offset ``b`` (seconds) is active in exactly the frames whose *centre* lies in ``[a, b)``;
a note that falls entirely between two frame centres therefore covers no frame. Example: a note
from 1.000 s to 2.000 s covers frames 32..62 (centres 1.024 .. 1.984 s).

Pitch convention: roll row ``p`` is MIDI ``23 + p`` (72 rows, MIDI 23..94). MIDI numbers are rounded
to the nearest integer; notes outside 23..94 are dropped and counted in a logged warning.

Arrays:

* source roll: bool ``(72, T)``; per piece ``source_rolls`` bool ``(S, 72, T)`` (pitched tracks,
  manifest order);
* family rolls: bool ``(4, 72, T)`` in ``constants.FAMILIES`` order (union of the sources of each
  family);
* mixture roll: bool ``(72, T)``, union of all pitched sources;
* polyphony: uint8 ``(T,)`` = number of active *pitches* in the mixture roll per frame, clipped to
  ``0..7`` (the 8 polyphony classes); per-source polyphony: uint8 ``(S, T)`` = active pitches of each
  source roll per frame (not clipped to 7; capped at 255 only by the dtype).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from slotmpe.constants import (
    FAMILIES,
    FAMILY_INDEX,
    HOP_LENGTH,
    MIDI_MAX,
    MIDI_MIN,
    N_PITCHES,
    N_POLY_CLASSES,
    SAMPLE_RATE,
    UNKNOWN_FAMILY,
)
from slotmpe.utils import get_logger

log = get_logger(__name__)

MAX_POLY_CLASS: int = N_POLY_CLASSES - 1  # 7


def frame_centres(n_frames: int) -> np.ndarray:
    """Centre times in seconds, float64 ``(T,)``: ``t * HOP_LENGTH / SAMPLE_RATE``."""
    return np.arange(n_frames, dtype=np.float64) * HOP_LENGTH / SAMPLE_RATE


def notes_to_roll(notes: pd.DataFrame, n_frames: int, name: str = "notes") -> np.ndarray:
    """Binary pitch roll of a note list.

    Args:
        notes: frame with columns ``onset_s``, ``offset_s`` (seconds) and ``midi`` (one row a note).
        n_frames: number of frames ``T`` (``constants.n_frames_for(n_samples)``).
        name: used in warnings (e.g. the notes file or track id).

    Returns:
        bool array ``(72, T)``; row ``p`` is MIDI ``23 + p``; frame ``t`` is set for a note iff
        ``onset_s <= t * 512 / 16000 < offset_s``. Notes outside MIDI 23..94 are dropped (counted in
        a warning); notes past the end of the audio are cut at frame ``T``.
    """
    if n_frames < 0:
        raise ValueError(f"{name}: n_frames must be >= 0, got {n_frames}")
    missing = {"onset_s", "offset_s", "midi"} - set(notes.columns)
    if missing:
        raise ValueError(f"{name}: notes lack column(s) {sorted(missing)}")
    roll = np.zeros((N_PITCHES, n_frames), dtype=bool)
    if len(notes) == 0 or n_frames == 0:
        return roll
    onset = notes["onset_s"].to_numpy(dtype=np.float64)
    offset = notes["offset_s"].to_numpy(dtype=np.float64)
    midi = np.rint(notes["midi"].to_numpy(dtype=np.float64)).astype(np.int64)
    if not (np.all(np.isfinite(onset)) and np.all(np.isfinite(offset))):
        raise ValueError(f"{name}: note times contain NaN/inf")
    in_range = (midi >= MIDI_MIN) & (midi <= MIDI_MAX)
    n_out = int((~in_range).sum())
    if n_out:
        log.warning(
            "%s: dropped %d of %d notes outside MIDI %d..%d", name, n_out, len(midi), MIDI_MIN, MIDI_MAX
        )
    centres = frame_centres(n_frames)
    # first frame whose centre is >= onset, first frame whose centre is >= offset -> [start, stop)
    start = np.searchsorted(centres, onset[in_range], side="left")
    stop = np.searchsorted(centres, offset[in_range], side="left")
    for p, a, b in zip(midi[in_range] - MIDI_MIN, start, stop, strict=True):
        if b > a:
            roll[p, a:b] = True
    return roll


def polyphony(roll: np.ndarray, clip: int | None = MAX_POLY_CLASS) -> np.ndarray:
    """Active pitches per frame of a roll ``(..., 72, T)`` -> uint8 ``(..., T)``.

    ``clip=7`` (default) gives the polyphony classes 0..7; ``clip=None`` caps only at 255.
    """
    counts = np.asarray(roll, dtype=bool).sum(axis=-2)
    upper = 255 if clip is None else min(int(clip), 255)
    return np.minimum(counts, upper).astype(np.uint8)


@dataclass(frozen=True)
class PieceTargets:
    """All frame-level targets of one piece (``S`` pitched sources, ``T`` frames)."""

    source_rolls: np.ndarray  # bool (S, 72, T)
    family_rolls: np.ndarray  # bool (4, 72, T), constants.FAMILIES order
    mix_roll: np.ndarray  # bool (72, T)
    poly: np.ndarray  # uint8 (T,), clipped 0..7
    source_poly: np.ndarray  # uint8 (S, T), unclipped (capped at 255)

    @property
    def n_frames(self) -> int:
        """Number of frames ``T``."""
        return int(self.mix_roll.shape[-1])


def targets_from_rolls(source_rolls: np.ndarray, families: Sequence[str]) -> PieceTargets:
    """Family rolls, mixture roll and polyphony from per-source rolls.

    Args:
        source_rolls: bool ``(S, 72, T)`` for the pitched sources of a piece.
        families: family name of each source, one of ``constants.FAMILIES`` or
            ``constants.UNKNOWN_FAMILY`` (such a source is in no family roll).
    """
    source_rolls = np.asarray(source_rolls, dtype=bool)
    if source_rolls.ndim != 3 or source_rolls.shape[1] != N_PITCHES:
        raise ValueError(f"source_rolls must be (S, {N_PITCHES}, T), got {source_rolls.shape}")
    if len(families) != source_rolls.shape[0]:
        raise ValueError(f"{len(families)} families given for {source_rolls.shape[0]} sources")
    n_frames = source_rolls.shape[2]
    family_rolls = np.zeros((len(FAMILIES), N_PITCHES, n_frames), dtype=bool)
    for roll, fam in zip(source_rolls, families, strict=True):
        if fam == UNKNOWN_FAMILY:
            continue  # user data without a family: in no family roll (family tasks refuse it)
        if fam not in FAMILY_INDEX:
            raise ValueError(
                f"pitched source has family {fam!r}; expected one of {FAMILIES} or {UNKNOWN_FAMILY!r}"
            )
        family_rolls[FAMILY_INDEX[fam]] |= roll
    mix_roll = (
        source_rolls.any(axis=0) if len(families) else np.zeros((N_PITCHES, n_frames), dtype=bool)
    )
    return PieceTargets(
        source_rolls=source_rolls,
        family_rolls=family_rolls,
        mix_roll=mix_roll,
        poly=polyphony(mix_roll),
        source_poly=polyphony(source_rolls, clip=None),
    )


def piece_targets(
    notes: Sequence[pd.DataFrame],
    families: Sequence[str],
    n_frames: int,
    names: Sequence[str] | None = None,
) -> PieceTargets:
    """Build every target of a piece from the note lists of its pitched sources.

    Args:
        notes: one note frame (``onset_s, offset_s, midi``) per pitched source, manifest order.
        families: family of each source (one of ``constants.FAMILIES``).
        n_frames: number of frames ``T`` of the piece's audio.
        names: a label per source for warnings (track ids or file names).

    Returns:
        :class:`PieceTargets` with ``source_rolls`` ``(S, 72, T)``, ``family_rolls`` ``(4, 72, T)``,
        ``mix_roll`` ``(72, T)``, ``poly`` ``(T,)`` and ``source_poly`` ``(S, T)``.
    """
    if len(notes) != len(families):
        raise ValueError(f"{len(notes)} note lists given for {len(families)} families")
    labels = list(names) if names is not None else [f"source {i}" for i in range(len(notes))]
    rolls = [notes_to_roll(n, n_frames, name=lab) for n, lab in zip(notes, labels, strict=True)]
    stacked = (
        np.stack(rolls) if rolls else np.zeros((0, N_PITCHES, n_frames), dtype=bool)
    )
    return targets_from_rolls(stacked, families)
