"""Reading notes from MIDI files with mido, with correct timing wherever the tempo events are.

:func:`read_midi_notes` is the one MIDI reader of the package: it returns every note of a file as a
table with times in seconds. Rules (also stated in the README's folder-format section):

* **Timing.** Types 0 and 1: one tempo map merged from the ``set_tempo`` events of *every* track
  (DAWs often put the tempo on the note track, not on track 0; pretty_midi reads tempo from
  track 0 only). Until the first ``set_tempo`` the tempo is 120 bpm (the MIDI default). Two
  different tempos at the same tick in different tracks: the one of the later track wins (with a
  warning). SMPTE time division (negative ``ticks_per_beat``) is handled: a tick lasts
  ``1 / (frames_per_second * ticks_per_frame)`` s and tempo events are ignored. Type 2 files
  (independent patterns with no common time line) raise :class:`MidiError`.
* **Pairing note-on and note-off.** A ``note_on`` with velocity 0 is a note-off. Within one track,
  note-offs close the open notes of the same channel and pitch first-in first-out: on 0 s, on
  0.5 s, off 1 s, off 2 s gives the notes 0-1 s and 0.5-2 s (as most sequencers and mido users
  expect; pretty_midi closes both at 1 s and loses 1-2 s). Such same-pitch overlaps are kept and
  counted in one warning per file. A note-off with no open note is ignored (counted in a
  warning). A note never closed ends at the end of the file (the last event of any track), with a
  warning; notes of zero length (on and off at the same tick) are dropped with a warning.
* **Programs and drums.** ``program`` is the channel's last ``program_change`` before the note
  (in the merged time line of all tracks; 0 if none); ``is_drum`` is channel 10 (``channel`` 9,
  0-based), as in General MIDI.

Warnings go to this module's logger and name the file and the count.
"""

from __future__ import annotations

import os
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from slotmpe.utils import get_logger

log = get_logger(__name__)

DEFAULT_TEMPO_US: int = 500_000
"""Microseconds per beat before the first ``set_tempo`` (120 bpm, the MIDI default)."""
DRUM_CHANNEL: int = 9
"""0-based channel of General MIDI percussion (channel 10)."""
NOTE_COLUMNS: tuple[str, ...] = (
    "onset_s",
    "offset_s",
    "midi",
    "velocity",
    "channel",
    "program",
    "is_drum",
    "track",
    "track_name",
)
"""Columns of :func:`read_midi_notes`, in order."""


class MidiError(ValueError):
    """A MIDI file cannot be read or timed; the message names the file."""


def _tick_seconds(
    tempo_ticks: np.ndarray, tempo_us: np.ndarray, ticks_per_beat: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Breakpoints of a tempo map: ticks ``(m,)``, seconds at them ``(m,)``, seconds per tick ``(m,)``.

    ``tempo_ticks``/``tempo_us`` are the (sorted, de-duplicated) tempo changes; a breakpoint at
    tick 0 with the default tempo is added when the first change is later.
    """
    ticks = np.asarray(tempo_ticks, dtype=np.int64)
    tempi = np.asarray(tempo_us, dtype=np.float64)
    if len(ticks) == 0 or ticks[0] > 0:
        ticks = np.concatenate([[0], ticks])
        tempi = np.concatenate([[float(DEFAULT_TEMPO_US)], tempi])
    sec_per_tick = tempi / 1e6 / float(ticks_per_beat)
    seconds = np.concatenate([[0.0], np.cumsum(np.diff(ticks) * sec_per_tick[:-1])])
    return ticks, seconds, sec_per_tick


def ticks_to_seconds(
    ticks: np.ndarray,
    tempo_ticks: np.ndarray,
    tempo_us: np.ndarray,
    ticks_per_beat: int,
) -> np.ndarray:
    """Absolute times in seconds ``(n,)`` of absolute ``ticks`` ``(n,)`` under a tempo map.

    Args:
        ticks: absolute tick positions ``(n,)``.
        tempo_ticks: ticks of the tempo changes ``(m,)``, ascending, unique.
        tempo_us: microseconds per beat from each change on ``(m,)``; before the first change the
            tempo is :data:`DEFAULT_TEMPO_US`.
        ticks_per_beat: the file's (positive) time division.
    """
    bt, bs, spt = _tick_seconds(tempo_ticks, tempo_us, ticks_per_beat)
    t = np.asarray(ticks, dtype=np.int64)
    i = np.searchsorted(bt, t, side="right") - 1
    return bs[i] + (t - bt[i]) * spt[i]


def _open(path: Path):  # noqa: ANN202 - mido has no type hints
    import mido

    if not path.is_file():
        raise MidiError(f"{path}: MIDI file does not exist")
    try:
        return mido.MidiFile(str(path))
    except Exception as exc:  # mido raises OSError, EOFError, ValueError, KeyError for bad files
        raise MidiError(f"{path}: cannot read MIDI file ({type(exc).__name__}: {exc})") from exc


def read_midi_notes(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Every note of a MIDI file, timed with the merged tempo map (rules in the module doc).

    Returns a frame with one row per note and the columns :data:`NOTE_COLUMNS`: ``onset_s``,
    ``offset_s`` (float64 seconds), ``midi`` (int64 pitch 0..127), ``velocity`` (int64),
    ``channel`` (int64, 0-based), ``program`` (int64 0..127), ``is_drum`` (bool, channel 9),
    ``track`` (int64 index of the track in the file), ``track_name`` (str, "" if none); sorted by
    onset, pitch, track. Raises :class:`MidiError` naming the file if it cannot be read, is type 2,
    or has a zero time division.
    """
    p = Path(path)
    mid = _open(p)
    if mid.type == 2:
        raise MidiError(
            f"{p}: type-2 MIDI file (independent patterns with no common time line) is not "
            "supported; save it as type 0 or 1"
        )
    tpb = int(mid.ticks_per_beat)
    if tpb == 0:
        raise MidiError(f"{p}: MIDI header has a time division of 0 ticks")

    # Merged event list: (absolute tick, track index, position in track, message).
    events: list[tuple[int, int, int, object]] = []
    track_names = [""] * len(mid.tracks)
    for ti, track in enumerate(mid.tracks):
        tick = 0
        for k, msg in enumerate(track):
            tick += int(msg.time)
            if msg.type == "track_name" and not track_names[ti]:
                track_names[ti] = str(msg.name).strip()
            events.append((tick, ti, k, msg))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    end_tick = max((e[0] for e in events), default=0)

    tempo: dict[int, tuple[int, int]] = {}  # tick -> (tempo, track)
    program = [0] * 16
    open_notes: dict[tuple[int, int, int], deque[tuple[int, int, int]]] = defaultdict(deque)
    rows: list[
        tuple[int, int, int, int, int, int, int]
    ] = []  # on, off, pitch, vel, ch, prog, track
    n_overlap = n_orphan_off = n_conflict = 0
    for tick, ti, _, msg in events:
        kind = msg.type
        if kind == "set_tempo":
            if tick in tempo and tempo[tick][1] != ti and tempo[tick][0] != msg.tempo:
                n_conflict += 1
            tempo[tick] = (int(msg.tempo), ti)
        elif kind == "program_change":
            program[msg.channel] = int(msg.program)
        elif kind == "note_on" and msg.velocity > 0:
            key = (ti, msg.channel, msg.note)
            if open_notes[key]:
                n_overlap += 1
            open_notes[key].append((tick, int(msg.velocity), program[msg.channel]))
        elif kind in ("note_off", "note_on"):
            queue = open_notes.get((ti, msg.channel, msg.note))
            if not queue:
                n_orphan_off += 1
                continue
            on, vel, prog = queue.popleft()
            rows.append((on, tick, msg.note, vel, msg.channel, prog, ti))
    n_open = 0
    for (ti, ch, pitch), queue in open_notes.items():
        for on, vel, prog in queue:
            rows.append((on, end_tick, pitch, vel, ch, prog, ti))
            n_open += 1

    arr = np.array(rows, dtype=np.int64).reshape(-1, 7)
    to_s = _clock(p, tpb, tempo)
    on_s, off_s = to_s(arr[:, 0]), to_s(arr[:, 1])
    df = pd.DataFrame(
        {
            "onset_s": np.asarray(on_s, dtype=np.float64),
            "offset_s": np.asarray(off_s, dtype=np.float64),
            "midi": arr[:, 2],
            "velocity": arr[:, 3],
            "channel": arr[:, 4],
            "program": arr[:, 5],
            "is_drum": arr[:, 4] == DRUM_CHANNEL,
            "track": arr[:, 6],
            "track_name": [track_names[t] for t in arr[:, 6]],
        },
        columns=list(NOTE_COLUMNS),
    )
    zero = (arr[:, 1] <= arr[:, 0]) if len(arr) else np.zeros(0, dtype=bool)
    n_zero = int(zero.sum())
    df = df[~zero]
    if n_conflict:
        log.warning(
            "%s: %d tick(s) with different tempos in different tracks; the later track's "
            "tempo is used",
            p,
            n_conflict,
        )
    if n_overlap:
        log.warning(
            "%s: %d note(s) start while a note of the same pitch, channel and track is still "
            "sounding; note-offs are paired first-in first-out (both notes kept)",
            p,
            n_overlap,
        )
    if n_orphan_off:
        log.warning("%s: %d note-off(s) with no sounding note ignored", p, n_orphan_off)
    if n_open:
        log.warning(
            "%s: %d note(s) never closed by a note-off; ended at the end of the file (%.3f s)",
            p,
            n_open,
            float(to_s(np.array([end_tick]))[0]),
        )
    if n_zero:
        log.warning("%s: dropped %d zero-length note(s) (note-off at the note-on tick)", p, n_zero)
    return df.sort_values(["onset_s", "midi", "track"], kind="stable").reset_index(drop=True)


def _clock(
    path: Path, ticks_per_beat: int, tempo: dict[int, tuple[int, int]]
) -> Callable[[np.ndarray], np.ndarray]:
    """Function from absolute ticks ``(n,)`` to seconds ``(n,)`` for the file's time division.

    ``tempo`` maps the tick of each tempo change to ``(microseconds per beat, track)``; SMPTE
    divisions (negative ``ticks_per_beat``: high byte -frames per second, 29 meaning 29.97; low
    byte ticks per frame) ignore it.
    """
    if ticks_per_beat > 0:
        tt = np.array(sorted(tempo), dtype=np.int64)
        tu = np.array([tempo[t][0] for t in tt], dtype=np.float64)
        return lambda ticks: ticks_to_seconds(ticks, tt, tu, ticks_per_beat)
    fps = -(ticks_per_beat >> 8)
    tpf = ticks_per_beat & 0xFF
    if tpf == 0 or fps <= 0:
        raise MidiError(f"{path}: bad SMPTE time division ({fps} fps, {tpf} ticks per frame)")
    sec_per_tick = 1.0 / ((29.97 if fps == 29 else float(fps)) * tpf)
    return lambda ticks: np.asarray(ticks, dtype=np.float64) * sec_per_tick
