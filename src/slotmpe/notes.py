"""Note making: frame probabilities ``(72, T)`` -> :class:`Note` lists per :class:`Track`.

The one frame-to-note step of the package: ``slotmpe transcribe`` (:mod:`slotmpe.transcribe`) and
the note-level metrics of the evaluation (:mod:`slotmpe.evaluation`) both call
:func:`make_tracks` / :func:`probs_to_notes`, with the settings of a :class:`NoteParams`
(:class:`NoteOptions` here, :class:`slotmpe.transcribe.options.TranscribeOptions` there).

Per pitch row of a ``(72, T)`` probability map:

* a frame is *on* where ``prob >= threshold``;
* runs of on-frames of the same pitch separated by at most ``merge_gap_ms`` of off-frames are
  merged into one note (gap frames become part of the note);
* notes shorter than ``min_note_ms`` (rounded up to whole 32 ms frames) are dropped, after merging
  and after trimming to the end of the audio: a note cut by the file's end is measured as cut
  (a 0.09 s file cannot give a 96 ms note);
* times follow the target convention of :mod:`slotmpe.targets` (a note covers the frames whose
  centres lie in ``[onset, offset)``, frame ``t`` centred at ``t * 512 / 16000`` s): a note spanning
  frames ``t0..t1`` gets ``onset_s = t0 * 0.032`` and ``offset_s = (t1 + 1) * 0.032``, so converting
  the notes back to a roll reproduces exactly the frames they came from; :func:`make_tracks` then
  clips offsets to the audio's duration (the last frame's 32 ms would otherwise reach past it);
* ``confidence`` is the mean probability over the note's frames (merged gap frames included), and the
  MIDI velocity is ``round(127 * confidence)`` clipped to 1..127.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from slotmpe.constants import (
    FAMILIES,
    FRAME_RATE,
    HOP_LENGTH,
    MIDI_MAX,
    MIDI_MIN,
    N_PITCHES,
    SAMPLE_RATE,
)

MIX: str = "mix"  # value of the CSV ``slot`` column for mixture notes
FRAME_SECONDS: float = HOP_LENGTH / SAMPLE_RATE  # 0.032 s per frame
DEFAULT_THRESHOLD: float = 0.5  # used when thresholds.json is absent or lacks a key
DEFAULT_ACTIVITY_THRESHOLD: float = 0.5
DEFAULT_MIN_NOTE_MS: float = 96.0  # 3 frames
DEFAULT_MERGE_GAP_MS: float = 64.0  # gaps of up to 2 frames are bridged


class NoteParams(Protocol):
    """The settings :func:`make_tracks` reads (thresholds are probabilities, times in ms)."""

    @property
    def mix_threshold(self) -> float: ...
    @property
    def slot_threshold(self) -> float: ...
    @property
    def activity_threshold(self) -> float: ...
    @property
    def min_note_ms(self) -> float: ...
    @property
    def merge_gap_ms(self) -> float: ...


@dataclass(frozen=True)
class NoteOptions:
    """Plain :class:`NoteParams` with transcribe's defaults (what the evaluation uses)."""

    mix_threshold: float = DEFAULT_THRESHOLD
    slot_threshold: float = DEFAULT_THRESHOLD
    activity_threshold: float = DEFAULT_ACTIVITY_THRESHOLD
    min_note_ms: float = DEFAULT_MIN_NOTE_MS
    merge_gap_ms: float = DEFAULT_MERGE_GAP_MS

    def __post_init__(self) -> None:
        for name in ("mix_threshold", "slot_threshold", "activity_threshold"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {v}")
        for name in ("min_note_ms", "merge_gap_ms"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")


_TIME_EPS = 1e-6


@dataclass(frozen=True)
class Note:
    """One note: ``slot`` is the 1-based slot number or :data:`MIX`; times in seconds."""

    slot: int | str
    onset_s: float
    offset_s: float
    midi: int
    confidence: float


@dataclass
class Track:
    """The notes of one output track (one active slot, or the mixture).

    ``instrument``/``similarity``/``program``: the slot's named instrument (or family), its cosine
    similarity to that instrument's prototype and its General MIDI program
    (:mod:`slotmpe.instruments`, set by :func:`slotmpe.transcribe.naming.name_tracks`);
    ``name_confidence`` the calibrated probability of the nearest instrument (``None`` for a model
    whose prototypes carry no calibration).
    """

    slot: int | str
    name: str
    notes: list[Note]
    instrument: str = ""
    similarity: float | None = None
    program: int = 0
    name_confidence: float | None = None



def ms_to_min_frames(ms: float) -> int:
    """Fewest frames whose duration (frames * 32 ms) is at least ``ms`` (>= 1)."""
    return max(1, math.ceil(ms / 1000.0 * FRAME_RATE - _TIME_EPS))


def ms_to_gap_frames(ms: float) -> int:
    """Most off-frames whose duration is at most ``ms`` (gaps this long or shorter are bridged)."""
    return max(0, math.floor(ms / 1000.0 * FRAME_RATE + _TIME_EPS))


def _runs(on: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and end (exclusive) indices of the True runs of a 1-D bool array."""
    padded = np.concatenate(([False], on, [False])).astype(np.int8)
    d = np.diff(padded)
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


def probs_to_notes(
    prob: np.ndarray,
    threshold: float,
    min_note_frames: int = 3,
    merge_gap_frames: int = 2,
    slot: int | str = MIX,
    duration_s: float | None = None,
) -> list[Note]:
    """Notes from a ``(72, T)`` probability map (row ``p`` is MIDI ``23 + p``).

    Frames with ``prob >= threshold`` are on; same-pitch runs separated by at most
    ``merge_gap_frames`` off-frames are merged; with ``duration_s`` offsets are trimmed to it
    (:func:`trim_to_duration`); then notes shorter than ``min_note_frames`` frames are dropped.
    Returns notes sorted by onset then pitch, with ``confidence`` = mean probability
    over the note's frames (see the module docstring for the time convention).
    """
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 2 or prob.shape[0] != N_PITCHES:
        raise ValueError(f"prob must have shape ({N_PITCHES}, T), got {prob.shape}")
    if min_note_frames < 1 or merge_gap_frames < 0:
        raise ValueError("min_note_frames must be >= 1 and merge_gap_frames >= 0")
    on = prob >= threshold
    notes: list[Note] = []
    for p in np.flatnonzero(on.any(axis=1)):
        starts, ends = _runs(on[p])
        if merge_gap_frames > 0 and len(starts) > 1:
            keep = (starts[1:] - ends[:-1]) > merge_gap_frames  # True where a real gap starts
            starts = np.concatenate((starts[:1], starts[1:][keep]))
            ends = np.concatenate((ends[:-1][keep], ends[-1:]))
        csum = np.concatenate(([0.0], np.cumsum(prob[p], dtype=np.float64)))
        for s, e in zip(starts, ends, strict=True):
            offset_s = trim_to_duration(int(s), int(e), min_note_frames, duration_s)
            if offset_s is None:
                continue
            notes.append(
                Note(
                    slot=slot,
                    onset_s=float(s) * FRAME_SECONDS,
                    offset_s=offset_s,
                    midi=int(MIDI_MIN + p),
                    confidence=float((csum[e] - csum[s]) / (e - s)),
                )
            )
    notes.sort(key=lambda n: (n.onset_s, n.midi))
    return notes


def trim_to_duration(start: int, end: int, min_note_frames: int, duration_s: float | None
                     ) -> float | None:
    """Offset in seconds of the note on frames ``[start, end)``, or None when it is dropped.

    The offset is ``end * 0.032`` s, trimmed to ``duration_s`` when given; the note is kept when
    the trimmed duration is at least ``min_note_frames`` frames (so trimming comes before the
    length filter).
    """
    offset = float(end) * FRAME_SECONDS
    if duration_s is not None:
        offset = min(offset, float(duration_s))
    length = offset - float(start) * FRAME_SECONDS
    return offset if length >= min_note_frames * FRAME_SECONDS - _TIME_EPS else None


def notes_to_roll(notes: Iterable[Note], n_frames: int) -> np.ndarray:
    """Bool ``(72, T)`` roll of notes (frames whose centres lie in ``[onset, offset)``)."""
    roll = np.zeros((N_PITCHES, n_frames), dtype=bool)
    for n in notes:
        if not MIDI_MIN <= n.midi <= MIDI_MAX:
            continue
        t0 = max(0, math.ceil(n.onset_s * FRAME_RATE - _TIME_EPS))
        t1 = min(n_frames, math.ceil(n.offset_s * FRAME_RATE - _TIME_EPS))
        roll[n.midi - MIDI_MIN, t0:t1] = True
    return roll


def activity_is_trained(exp: Any) -> bool:
    """Whether ``exp`` trains the slot-activity output (True when the experiment is unknown)."""
    if exp is None:
        return True
    from slotmpe.experiments import active_loss_terms

    return "activity" in active_loss_terms(exp)


def slot_track_name(k: int, exp: Any = None) -> str:
    """MIDI track name of 0-based slot ``k``: ``"slot {k+1}"`` (+ family for fixed-order 1b)."""
    name = f"slot {k + 1}"
    if exp is not None and getattr(exp, "matching", None) == "fixed" and k < len(FAMILIES):
        name += f" ({FAMILIES[k]})"
    return name


def make_tracks(
    probs: Mapping[str, np.ndarray],
    options: NoteParams,
    uses_slots: bool,
    exp: Any = None,
    use_activity: bool = True,
    duration_s: float | None = None,
) -> list[Track]:
    """Tracks from :func:`slotmpe.inference.predict` probabilities.

    ``probs["mix"]`` is ``(72, T)``; with ``uses_slots``, ``probs["slots"]`` is ``(K, 72, T)`` and
    ``probs["activity"]`` ``(K,)``. Slots below ``options.activity_threshold`` are dropped unless
    ``use_activity`` is False (models whose activity output is not trained, i.e. the fixed-order
    model 1b) or the activity is missing. Returns the kept slot tracks that hold notes, in slot
    order, then the mixture track (always present). With ``duration_s``, note offsets are trimmed
    to the audio's duration before the length filter (:func:`trim_to_duration`).
    """
    def notes_of(prob: np.ndarray, thr: float, slot: int | str) -> list[Note]:
        return probs_to_notes(prob, thr, min_frames, gap_frames, slot, duration_s)

    min_frames = ms_to_min_frames(options.min_note_ms)
    gap_frames = ms_to_gap_frames(options.merge_gap_ms)
    tracks: list[Track] = []
    slots = probs.get("slots")
    if uses_slots and slots is not None:
        slots = np.asarray(slots)
        activity = probs.get("activity")
        act = (np.ones(slots.shape[0]) if activity is None or not use_activity
               else np.asarray(activity, dtype=np.float64).reshape(-1))
        for k in range(slots.shape[0]):
            if act[k] < options.activity_threshold:
                continue
            notes = notes_of(slots[k], options.slot_threshold, k + 1)
            if notes:
                tracks.append(Track(slot=k + 1, name=slot_track_name(k, exp), notes=notes))
    mix_notes = notes_of(probs["mix"], options.mix_threshold, MIX)
    tracks.append(Track(slot=MIX, name="mixture", notes=mix_notes))
    return tracks


def clip_notes(notes: list[Note], duration_s: float) -> list[Note]:
    """Notes with offsets clipped to ``duration_s`` (notes starting at or after it are dropped)."""
    out = []
    for n in notes:
        if n.onset_s >= duration_s - _TIME_EPS:
            continue
        out.append(replace(n, offset_s=duration_s) if n.offset_s > duration_s else n)
    return out
