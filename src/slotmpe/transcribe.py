"""Source-aware transcription of a user's audio: frame probabilities -> notes -> MIDI, CSV, PNG.

``transcribe_file`` is what ``slotmpe transcribe`` runs for every input file:

1. :func:`slotmpe.audio.load_audio` reads any soundfile-readable file (WAV/FLAC/OGG/MP3 where
   libsndfile supports it), any sample rate, mono or stereo, as mono 16 kHz float32.
2. :func:`slotmpe.features.hcqt` computes the ``(12, 216, T)`` model input over the whole file.
3. :func:`slotmpe.inference.predict` runs the model, exactly as the evaluation does: the whole file
   in one pass (one slot set for the whole file) up to ``inference.DEFAULT_MAX_FRAMES`` frames, and
   beyond that in overlapping chunks whose slot order is re-aligned by Hungarian matching
   (``--max-frames`` changes the chunk length).
4. Notes are created from frame probabilities (:func:`probs_to_notes`) for the mixture map and for
   every *active* slot map, then written as ``<name>.mid``, ``<name>.notes.csv`` and ``<name>.png``.

Memory. Within one model pass the model itself runs its time-local stages in exact overlapping time
chunks and accumulates slot attention over token chunks (:class:`slotmpe.models.slotmpe.SlotMPE`),
so activations do not grow with the file beyond a few full-length maps; ``max_frames`` caps the
frames of one pass. The rest is held for the whole file and is O(duration) with small constants:
audio (16 kHz mono float32, 3.8 MB per minute; the file is decoded once at its own rate), the HCQT
(``12 x 216`` float32 per frame, ~19 MB per minute) and the output probabilities (``(K + 1) x 72``
float32 per frame, ~0.8 MB per minute for K = 8). ``benchmarks/bench_inference.py`` measures the
peak for a 10-minute file.

Note creation (per pitch row of a ``(72, T)`` probability map):

* a frame is *on* where ``prob >= threshold``;
* runs of on-frames of the same pitch separated by at most ``merge_gap_ms`` of off-frames are
  merged into one note (gap frames become part of the note);
* notes shorter than ``min_note_ms`` are dropped (after merging);
* times follow the target convention of :mod:`slotmpe.targets` (a note covers the frames whose
  centres lie in ``[onset, offset)``, frame ``t`` centred at ``t * 512 / 16000`` s): a note spanning
  frames ``t0..t1`` gets ``onset_s = t0 * 0.032`` and ``offset_s = (t1 + 1) * 0.032``, so converting
  the notes back to a roll reproduces exactly the frames they came from;
* ``confidence`` is the mean probability over the note's frames (merged gap frames included), and the
  MIDI velocity is ``round(127 * confidence)`` clipped to 1..127.

Tracks. Slots are an unordered set, so no instrument name is known per slot: MIDI tracks are named
``"slot 1"`` .. ``"slot K"`` (1-based slot index of the model; for the fixed-order family model 1b the
family is appended, e.g. ``"slot 1 (brass)"``), plus a ``"mixture"`` track holding the mixture-branch
notes. Every track uses the neutral General MIDI program 0 (Acoustic Grand Piano); the mixture track
doubles the slot tracks' notes, so mute it when listening to the separated parts. Slots whose activity
probability is below ``activity_threshold`` are dropped, as are active slots with no note above
threshold; the fixed-order family model 1b does not train its activity output, so there no slot is
dropped by activity. Models without trained slots (experiment 1a; its slot head exists but is unused) give
only the mixture track.

CSV columns: ``slot, onset_s, offset_s, midi, confidence``; ``slot`` is the 1-based slot number
(as in the MIDI track names) or the string ``"mix"`` for mixture notes. Rows are ordered by track
(slots, then mixture), onset, then pitch.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from slotmpe.audio import AudioError, load_audio
from slotmpe.constants import (
    FAMILIES,
    FRAME_RATE,
    HOP_LENGTH,
    MIDI_MAX,
    MIDI_MIN,
    N_PITCHES,
    SAMPLE_RATE,
)
from slotmpe.utils import atomic_path

MIX: str = "mix"  # value of the CSV ``slot`` column for mixture notes
FRAME_SECONDS: float = HOP_LENGTH / SAMPLE_RATE  # 0.032 s per frame
DEFAULT_THRESHOLD: float = 0.5  # used when thresholds.json is absent or lacks a key
DEFAULT_ACTIVITY_THRESHOLD: float = 0.5
DEFAULT_MIN_NOTE_MS: float = 96.0  # 3 frames
DEFAULT_MERGE_GAP_MS: float = 64.0  # gaps of up to 2 frames are bridged
# ``max_frames="default"`` means slotmpe.inference.DEFAULT_MAX_FRAMES, the evaluation's limit
# (resolved at run time so that importing this module, e.g. for the CLI's help, needs no torch).
DEFAULT_MAX_FRAMES: Literal["default"] = "default"
MIDI_RESOLUTION: int = 1000  # ticks per beat
MIDI_TEMPO: float = 120.0  # bpm; with MIDI_RESOLUTION one tick is 0.5 ms
DEFAULT_PROGRAM: int = 0  # General MIDI Acoustic Grand Piano, for every track
AUDIO_EXTENSIONS: tuple[str, ...] = (
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au",
    ".snd", ".caf", ".w64", ".rf64",
)  # fmt: skip
_TIME_EPS = 1e-6


class TranscriptionError(RuntimeError):
    """A problem with a model file or an output; the message names the file and the problem."""


@dataclass(frozen=True)
class TranscribeOptions:
    """Settings of :func:`transcribe_file` (thresholds are probabilities in [0, 1])."""

    mix_threshold: float = DEFAULT_THRESHOLD
    slot_threshold: float = DEFAULT_THRESHOLD
    activity_threshold: float = DEFAULT_ACTIVITY_THRESHOLD
    min_note_ms: float = DEFAULT_MIN_NOTE_MS
    merge_gap_ms: float = DEFAULT_MERGE_GAP_MS
    device: str = "cpu"
    max_frames: int | None | Literal["default"] = DEFAULT_MAX_FRAMES
    write_png: bool = True

    def __post_init__(self) -> None:
        for name in ("mix_threshold", "slot_threshold", "activity_threshold"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {v}")
        if self.min_note_ms < 0 or self.merge_gap_ms < 0:
            raise ValueError("min_note_ms and merge_gap_ms must be >= 0")
        mf = self.max_frames
        if mf != DEFAULT_MAX_FRAMES and mf is not None and (not isinstance(mf, int) or mf < 2):
            raise ValueError(f"max_frames must be an int >= 2, None or 'default', got {mf!r}")

    def resolved_max_frames(self) -> int | None:
        """The chunk length passed to :func:`slotmpe.inference.predict` (None = whole file)."""
        if self.max_frames == DEFAULT_MAX_FRAMES:
            from slotmpe.inference import DEFAULT_MAX_FRAMES as inference_default

            return inference_default
        return self.max_frames  # type: ignore[return-value]


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
    """The notes of one output track (one active slot, or the mixture)."""

    slot: int | str
    name: str
    notes: list[Note]


@dataclass
class TranscriptionResult:
    """What :func:`transcribe_file` wrote and found for one input file."""

    audio_path: Path
    midi_path: Path
    csv_path: Path
    png_path: Path | None
    duration_s: float
    n_frames: int
    tracks: list[Track]
    slot_activity: list[float] = field(default_factory=list)  # (K,) activity probabilities
    thresholds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of the whole call

    @property
    def active_slots(self) -> list[int]:
        """1-based numbers of the slots written as tracks."""
        return [int(t.slot) for t in self.tracks if t.slot != MIX]

    @property
    def n_notes(self) -> dict[str, int]:
        """Notes per track name."""
        return {t.name: len(t.notes) for t in self.tracks}

    def summary(self) -> str:
        """One line for the terminal."""
        slots = ", ".join(f"{t.name}: {len(t.notes)}" for t in self.tracks if t.slot != MIX)
        mix = next((len(t.notes) for t in self.tracks if t.slot == MIX), 0)
        return (
            f"{self.audio_path.name}: {self.duration_s:.1f} s, {mix} mixture notes"
            + (f"; {len(self.active_slots)} active slots ({slots})" if slots else "")
            + f" -> {self.midi_path}"
        )


# --------------------------------------------------------------------------------------------
# thresholds


def _threshold_value(value: Any) -> float | None:
    """A probability from a thresholds.json entry (a number or ``{"threshold": x}``), else None."""
    if isinstance(value, Mapping):
        value = value.get("threshold")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) and 0.0 <= v <= 1.0 else None


def read_thresholds(model_path: str | os.PathLike[str]) -> dict[str, float]:
    """Tuned thresholds from ``thresholds.json`` beside ``model_path``.

    The file is ``{"mix": float, "slots": float, ...}`` (written by
    :func:`slotmpe.evaluation.tune_thresholds`). Returns the keys found among ``"mix"`` and
    ``"slots"`` (``"slot"`` is accepted for the latter; a value may also be a mapping with a
    ``"threshold"`` entry); a missing or unreadable file, or a missing/invalid key, is simply
    left out, so callers fall back to :data:`DEFAULT_THRESHOLD`.
    """
    path = Path(model_path).with_name("thresholds.json")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, Mapping):
        return {}
    out: dict[str, float] = {}
    for key, aliases in (("mix", ("mix", "std")), ("slots", ("slots", "slot"))):
        for alias in aliases:
            v = _threshold_value(data.get(alias))
            if v is not None:
                out[key] = v
                break
    return out


def resolve_thresholds(
    model_path: str | os.PathLike[str], override: float | None = None
) -> tuple[float, float, str]:
    """``(mix_threshold, slot_threshold, source)`` for a model.

    ``override`` (``--threshold``) wins for both outputs; otherwise each comes from
    ``thresholds.json`` beside the model, else :data:`DEFAULT_THRESHOLD`. ``source`` says which.
    """
    if override is not None:
        return float(override), float(override), "command line"
    tuned = read_thresholds(model_path)
    mix = tuned.get("mix", DEFAULT_THRESHOLD)
    slots = tuned.get("slots", DEFAULT_THRESHOLD)
    if len(tuned) == 2:
        source = "thresholds.json"
    elif tuned:
        source = "thresholds.json (partly default 0.5)"
    else:
        source = f"default {DEFAULT_THRESHOLD:g}"
    return mix, slots, source


# --------------------------------------------------------------------------------------------
# note creation


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
) -> list[Note]:
    """Notes from a ``(72, T)`` probability map (row ``p`` is MIDI ``23 + p``).

    Frames with ``prob >= threshold`` are on; same-pitch runs separated by at most
    ``merge_gap_frames`` off-frames are merged, then notes shorter than ``min_note_frames`` frames
    are dropped. Returns notes sorted by onset then pitch, with ``confidence`` = mean probability
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
        long_enough = (ends - starts) >= min_note_frames
        csum = np.concatenate(([0.0], np.cumsum(prob[p], dtype=np.float64)))
        for s, e in zip(starts[long_enough], ends[long_enough], strict=True):
            notes.append(
                Note(
                    slot=slot,
                    onset_s=float(s) * FRAME_SECONDS,
                    offset_s=float(e) * FRAME_SECONDS,
                    midi=int(MIDI_MIN + p),
                    confidence=float((csum[e] - csum[s]) / (e - s)),
                )
            )
    notes.sort(key=lambda n: (n.onset_s, n.midi))
    return notes


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


def _experiment_of(model: Any, meta: Mapping[str, Any]) -> Any:
    """The :class:`slotmpe.experiments.Experiment` of a model (attribute ``exp`` or meta), or None."""
    exp = getattr(model, "exp", None)
    if exp is not None and hasattr(exp, "uses_slots"):
        return exp
    from slotmpe.experiments import get_experiment

    for key in ("experiment", "exp", "exp_name", "experiment_name"):
        name = meta.get(key)
        if isinstance(name, str):
            try:
                return get_experiment(name)
            except KeyError:
                continue
        if name is not None and hasattr(name, "uses_slots"):
            return name
    return None


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
    options: TranscribeOptions,
    uses_slots: bool,
    exp: Any = None,
    use_activity: bool = True,
) -> list[Track]:
    """Tracks from :func:`slotmpe.inference.predict` probabilities.

    ``probs["mix"]`` is ``(72, T)``; with ``uses_slots``, ``probs["slots"]`` is ``(K, 72, T)`` and
    ``probs["activity"]`` ``(K,)``. Slots below ``options.activity_threshold`` are dropped unless
    ``use_activity`` is False (models whose activity output is not trained, i.e. the fixed-order
    model 1b) or the activity is missing. Returns the kept slot tracks that hold notes, in slot
    order, then the mixture track (always present).
    """
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
            notes = probs_to_notes(slots[k], options.slot_threshold, min_frames, gap_frames, k + 1)
            if notes:
                tracks.append(Track(slot=k + 1, name=slot_track_name(k, exp), notes=notes))
    mix_notes = probs_to_notes(probs["mix"], options.mix_threshold, min_frames, gap_frames, MIX)
    tracks.append(Track(slot=MIX, name="mixture", notes=mix_notes))
    return tracks


# --------------------------------------------------------------------------------------------
# writers


def velocity_of(confidence: float) -> int:
    """MIDI velocity 1..127 from a confidence in [0, 1]."""
    return int(min(127, max(1, round(127 * confidence))))


def write_midi(path: str | os.PathLike[str], tracks: Sequence[Track]) -> Path:
    """Write one MIDI track per :class:`Track` (program 0, named as the track), atomically."""
    import pretty_midi

    # 1000 ticks per beat at 120 bpm = 0.5 ms per tick: frame times (multiples of 32 ms) are exact.
    pm = pretty_midi.PrettyMIDI(resolution=MIDI_RESOLUTION, initial_tempo=MIDI_TEMPO)
    for tr in tracks:
        inst = pretty_midi.Instrument(program=DEFAULT_PROGRAM, is_drum=False, name=tr.name)
        for n in tr.notes:
            inst.notes.append(
                pretty_midi.Note(
                    velocity=velocity_of(n.confidence), pitch=n.midi, start=n.onset_s, end=n.offset_s
                )
            )
        pm.instruments.append(inst)
    out = Path(path)
    with atomic_path(out) as tmp:
        pm.write(str(tmp))
    return out


def write_notes_csv(path: str | os.PathLike[str], tracks: Sequence[Track]) -> Path:
    """Write ``slot,onset_s,offset_s,midi,confidence`` rows (slot 1..K or ``mix``), atomically."""
    out = Path(path)
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["slot", "onset_s", "offset_s", "midi", "confidence"])
        for tr in tracks:
            for n in tr.notes:
                w.writerow([n.slot, f"{n.onset_s:.3f}", f"{n.offset_s:.3f}", n.midi,
                            f"{n.confidence:.4f}"])
    return out


def read_notes_csv(path: str | os.PathLike[str]) -> list[Note]:
    """Read a file written by :func:`write_notes_csv` back into notes."""
    notes: list[Note] = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            slot: int | str = row["slot"] if row["slot"] == MIX else int(row["slot"])
            notes.append(Note(slot, float(row["onset_s"]), float(row["offset_s"]),
                              int(row["midi"]), float(row["confidence"])))
    return notes


def plot_pianoroll(
    path: str | os.PathLike[str],
    tracks: Sequence[Track],
    duration_s: float,
    title: str = "",
) -> Path:
    """Piano-roll PNG: one colour per slot (tab10 by slot number), mixture notes as grey boxes.

    Within a pitch row every slot track has its own thin lane, so notes that several slots share
    (unisons, or a slot duplicating another) stay visible.

    x axis in seconds, y axis MIDI pitch labelled with note names (every C, or every pitch for a
    narrow range). The width grows with the duration (capped), so long files stay readable.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from pretty_midi import note_number_to_name

    all_notes = [n for tr in tracks for n in tr.notes]
    if all_notes:
        lo = max(0, min(n.midi for n in all_notes) - 2)
        hi = min(127, max(n.midi for n in all_notes) + 2)
    else:
        lo, hi = MIDI_MIN, MIDI_MAX
    width = float(np.clip(duration_s / 4.0, 8.0, 60.0))
    height = float(np.clip((hi - lo) * 0.12 + 1.5, 3.5, 10.0))
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    cmap = colormaps["tab10"]
    handles = []
    for tr in tracks:  # mixture first as background boxes, then slots on top
        if tr.slot != MIX or not tr.notes:
            continue
        ax.barh([n.midi for n in tr.notes], [n.offset_s - n.onset_s for n in tr.notes],
                left=[n.onset_s for n in tr.notes], height=1.0, facecolor="none",
                edgecolor="0.45", linewidth=0.8, zorder=1)
        handles.append(Patch(facecolor="none", edgecolor="0.45", label=tr.name))
    slot_tracks = [tr for tr in tracks if tr.slot != MIX]
    lane = 0.9 / max(1, len(slot_tracks))  # each slot gets its own lane inside a pitch row
    for i, tr in enumerate(slot_tracks):
        colour = cmap((int(tr.slot) - 1) % 10)
        y0 = -0.45 + (i + 0.5) * lane
        ax.barh([n.midi + y0 for n in tr.notes], [n.offset_s - n.onset_s for n in tr.notes],
                left=[n.onset_s for n in tr.notes], height=lane * 0.9, color=colour, alpha=0.9,
                linewidth=0, zorder=2)
        handles.append(Patch(color=colour, label=f"{tr.name} ({len(tr.notes)} notes)"))
    ax.set_xlim(0.0, max(duration_s, FRAME_SECONDS))
    ax.set_ylim(lo - 0.5, hi + 0.5)
    step = 1 if hi - lo <= 14 else 12
    ticks = [m for m in range(lo, hi + 1) if step == 1 or m % 12 == 0]
    ax.set_yticks(ticks, [note_number_to_name(m) for m in ticks])
    ax.set_yticks(range(lo, hi + 1), minor=True)
    ax.grid(axis="y", which="major", linewidth=0.5, alpha=0.4)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("pitch")
    if title:
        ax.set_title(title)
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize="small", framealpha=0.8)
    else:
        ax.text(0.5, 0.5, "no notes above threshold", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(str(tmp), format="png")
    return out


# --------------------------------------------------------------------------------------------
# model and files


def load_model(path: str | os.PathLike[str], device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """Load a pipeline checkpoint (``results/{dataset}/{exp}/seed{seed}/model.pt``) in eval mode.

    Raises :class:`TranscriptionError` with one clear line for a missing, empty or unreadable file.
    """
    p = Path(path)
    if not p.exists():
        raise TranscriptionError(f"{p}: model file does not exist")
    if p.is_dir():
        raise TranscriptionError(f"{p}: is a directory, expected a model.pt file")
    if p.stat().st_size == 0:
        raise TranscriptionError(f"{p}: model file is empty")
    from slotmpe.models import load_checkpoint

    try:
        model, meta = load_checkpoint(p, map_location="cpu")
    except Exception as exc:  # torch raises many types for corrupt/foreign files
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TranscriptionError(f"{p}: cannot load model ({msg})") from exc
    model.eval()
    model.to(device)
    return model, dict(meta or {})


def find_audio_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand directories into their audio files (sorted, non-recursive, by extension).

    Files given explicitly are kept whatever their extension (a bad one fails later, on its own).
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(
                sorted(c for c in p.iterdir() if c.is_file() and c.suffix.lower() in AUDIO_EXTENSIONS
                       and not c.name.startswith("."))
            )
        else:
            out.append(p)
    return out


def output_names(files: Sequence[Path]) -> list[str]:
    """Unique output base names: the file stem, ``stem_ext`` when stems collide, then ``_2``, ..."""
    stems = [f.stem for f in files]
    names = [f"{f.stem}_{f.suffix.lstrip('.')}" if stems.count(f.stem) > 1 else f.stem
             for f in files]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def _to_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def transcribe_audio(
    audio: np.ndarray,
    model: Any,
    meta: Mapping[str, Any],
    options: TranscribeOptions,
    name: str = "audio",
) -> tuple[list[Track], dict[str, np.ndarray]]:
    """Transcribe mono 16 kHz ``audio`` ``(n,)``: ``(tracks, probabilities)`` without writing files.

    Probabilities are :func:`slotmpe.inference.predict`'s dict (``mix`` ``(72, T)``, ``slots``
    ``(K, 72, T)``, ``activity`` ``(K,)``, ...), as numpy arrays.
    """
    from slotmpe.features import hcqt
    from slotmpe.inference import predict

    x = hcqt(audio, SAMPLE_RATE, name=name)  # (12, 216, T)
    probs = predict(model, x, device=options.device, max_frames=options.resolved_max_frames())
    del x
    probs = {k: _to_numpy(v) for k, v in probs.items()}
    exp = _experiment_of(model, meta)
    uses_slots = bool(getattr(exp, "uses_slots", "slots" in probs))
    return make_tracks(probs, options, uses_slots, exp, activity_is_trained(exp)), probs


def transcribe_file(
    path: str | os.PathLike[str],
    model: Any,
    meta: Mapping[str, Any],
    outdir: str | os.PathLike[str],
    options: TranscribeOptions | None = None,
    name: str | None = None,
) -> TranscriptionResult:
    """Transcribe one audio file into ``outdir/<name>.mid``, ``.notes.csv`` and ``.png``.

    ``name`` defaults to the file's stem. ``model``/``meta`` come from :func:`load_model`.
    Raises :class:`slotmpe.audio.AudioError` (naming the file) for missing, unreadable, empty or
    silent audio; nothing is written then.
    """
    t_start = time.perf_counter()
    options = options or TranscribeOptions()
    src = Path(path)
    if src.is_file() and src.stat().st_size == 0:
        raise AudioError(f"{src}: file is empty (0 bytes)")
    audio, _ = load_audio(src)  # mono float32 at 16 kHz
    duration = len(audio) / SAMPLE_RATE
    tracks, probs = transcribe_audio(audio, model, meta, options, name=str(src))
    del audio
    out = Path(outdir)
    base = name or src.stem
    midi_path = write_midi(out / f"{base}.mid", tracks)
    csv_path = write_notes_csv(out / f"{base}.notes.csv", tracks)
    png_path = (
        plot_pianoroll(out / f"{base}.png", tracks, duration, title=src.name)
        if options.write_png
        else None
    )
    activity = probs.get("activity")
    return TranscriptionResult(
        audio_path=src,
        midi_path=midi_path,
        csv_path=csv_path,
        png_path=png_path,
        duration_s=duration,
        n_frames=int(np.asarray(probs["mix"]).shape[-1]),
        tracks=tracks,
        slot_activity=[] if activity is None else [float(a) for a in np.ravel(activity)],
        thresholds={"mix": options.mix_threshold, "slots": options.slot_threshold,
                    "activity": options.activity_threshold},
        seconds=time.perf_counter() - t_start,
    )
