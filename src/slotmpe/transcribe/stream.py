"""Streaming transcription (``slotmpe transcribe --stream``): bounded latency, bounded memory.

The input (a file or stdin) is read in pieces and processed every :data:`STEP_FRAMES` frames:

1. **CQT** (:class:`slotmpe.cqt.BlockCQT`): the new frames are computed with the full past context
   but only :data:`CQT_LOOKAHEAD` frames of future audio (zeros beyond, which mostly affects the
   lowest, longest filters). The log compression uses the running maximum of the magnitudes so far
   as its reference (whole-file inference uses the file's maximum), clipped to 1, but never less
   than :data:`REF_FLOOR`, the magnitude of a sine at :data:`REF_FLOOR_DBFS`: an absolute noise
   floor. Without it, quiet noise before the music (hiss at -60 or even -100 dBFS) was stretched
   to the full 80 dB range and became hundreds of notes, where whole-file inference, which sees
   the music's level, gives none. The cost: a recording whose loudest sound is below
   ``REF_FLOOR_DBFS`` is seen that many dB quieter than whole-file inference would see it.
2. **Model**: the model runs on a window of the last :data:`WINDOW_FRAMES` frames (~4 s), of which
   the newest :data:`MODEL_LOOKAHEAD` frames are only context; the frames before them are final.
   The window's slots are put in the order of the previous window's by Hungarian matching on the
   overlap (:func:`slotmpe.stitching.align_slots`, as the chunked whole-file inference does), so a
   slot keeps its identity across steps. A slot's activity is its maximum over the windows so far.
3. **Notes**: the final frames go through :func:`~slotmpe.transcribe.notes.postprocess_probs` and an
   online version of :func:`~slotmpe.transcribe.notes.probs_to_notes` (:class:`NoteTracker`, same
   rules, same notes for the same probabilities); a note is printed as soon as it has ended and
   more than ``merge_gap_ms`` has passed without the pitch coming back. Notes of a slot are printed
   once the slot is active.

Latency: a frame's probabilities are final ``STEP + CQT_LOOKAHEAD + MODEL_LOOKAHEAD`` frames
(12 + 8 + 8 = 28 frames = 0.90 s of audio) after its audio arrived at the latest; a note is printed
at most that plus the merge gap (2 frames, 64 ms) = 0.96 s of audio after its offset. Memory holds
~6 s of audio, the window and the open notes, whatever the input's length (the notes found so far
are kept for the output files). The accuracy cost against whole-file inference is measured by
``tests/test_transcribe.py::test_stream_matches_whole_file`` and stated in the README.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from slotmpe.constants import MIDI_MIN, N_PITCHES
from slotmpe.cqt import CONTEXT_FRAMES, N_WIDE, BlockCQT, log_compress
from slotmpe.notes import (
    FRAME_SECONDS,
    MIX,
    Note,
    Track,
    clip_notes,
    ms_to_gap_frames,
    ms_to_min_frames,
    slot_track_name,
    trim_to_duration,
)
from slotmpe.stitching import SLOT_KEYS, align_slots
from slotmpe.transcribe.audio_input import BLOCK_SECONDS, input_stem, open_audio
from slotmpe.transcribe.core import TranscriptionResult
from slotmpe.transcribe.notes import postprocess_probs
from slotmpe.transcribe.options import TranscribeOptions
from slotmpe.transcribe.runners import as_runner
from slotmpe.transcribe.writers import write_outputs

STEP_FRAMES: int = 12  # frames processed per step (0.384 s)
CQT_LOOKAHEAD: int = 8  # frames of future audio the CQT of a frame waits for (0.256 s)
MODEL_LOOKAHEAD: int = 8  # newest frames of a model window that are context only (0.256 s)
WINDOW_FRAMES: int = 125  # frames the model sees per step (4 s)
LATENCY_FRAMES: int = STEP_FRAMES + CQT_LOOKAHEAD + MODEL_LOOKAHEAD  # 28 frames = 0.896 s
REF_FLOOR_DBFS: float = -24.0  # lowest level of the log compression's reference (measured: README)
REF_FLOOR: float = 0.5 * 10.0 ** (REF_FLOOR_DBFS / 20.0)  # a sine of amplitude A reads A / 2


class NoteTracker:
    """Online :func:`~slotmpe.transcribe.notes.probs_to_notes` for one ``(72, T)`` map.

    :meth:`push` takes the next frames ``(72, n)`` and returns the notes that closed; :meth:`finish`
    closes the rest. For the same probabilities the notes equal the offline function's.
    """

    def __init__(self, threshold: float, min_frames: int, gap_frames: int, slot: int | str) -> None:
        self.threshold, self.min_frames, self.gap_frames, self.slot = (
            threshold, min_frames, gap_frames, slot)
        self.t = 0  # index of the next frame
        self.start = np.full(N_PITCHES, -1, dtype=np.int64)  # -1: no open note
        self.last_on = np.zeros(N_PITCHES, dtype=np.int64)
        self.sum_all = np.zeros(N_PITCHES, dtype=np.float64)  # prob sum since the note's start
        self.sum_at_last = np.zeros(N_PITCHES, dtype=np.float64)  # ... up to its last on-frame

    def _close(self, p: int, out: list[Note], duration_s: float | None = None) -> None:
        s, e = int(self.start[p]), int(self.last_on[p]) + 1
        offset = trim_to_duration(s, e, self.min_frames, duration_s)
        if offset is not None:
            out.append(Note(self.slot, s * FRAME_SECONDS, offset, MIDI_MIN + p,
                            float(self.sum_at_last[p] / (e - s))))
        self.start[p] = -1

    def push(self, prob: np.ndarray) -> list[Note]:
        """Feed frames ``(72, n)``; returns the notes that ended (sorted by onset, pitch)."""
        out: list[Note] = []
        prob = np.asarray(prob, dtype=np.float32)
        on_all = prob >= self.threshold
        for j in range(prob.shape[1]):
            t = self.t
            col, on = prob[:, j], on_all[:, j]
            open_ = self.start >= 0
            # close notes whose gap has grown past the merge limit
            for p in np.flatnonzero(open_ & ~on & (t - self.last_on - 1 >= self.gap_frames)):
                self._close(int(p), out)
            open_ = self.start >= 0
            self.sum_all[open_] += col[open_]
            new = on & ~open_
            self.start[new] = t
            self.sum_all[new] = col[new]
            self.last_on[on] = t
            self.sum_at_last[on] = self.sum_all[on]
            self.t += 1
        out.sort(key=lambda n: (n.onset_s, n.midi))
        return out

    def finish(self, duration_s: float | None = None) -> list[Note]:
        """Close every open note (end of input), trimmed to ``duration_s`` before the length
        filter when given."""
        out: list[Note] = []
        for p in np.flatnonzero(self.start >= 0):
            self._close(int(p), out, duration_s)
        out.sort(key=lambda n: (n.onset_s, n.midi))
        return out


class StreamTranscriber:
    """Block-by-block transcription with a model from :func:`slotmpe.transcribe.load_model`.

    Feed 16 kHz mono pieces to :meth:`push` (returns the notes that became final) and call
    :meth:`finish` at the end; :attr:`tracks` then holds every note as :func:`make_tracks` would
    order them (active slots with notes, then the mixture).
    """

    def __init__(self, model: Any, meta: Mapping[str, Any], options: TranscribeOptions) -> None:
        self.runner = as_runner(model, meta, options.device)
        self.meta = meta
        self.options = options
        self.cqt = BlockCQT(block=STEP_FRAMES, context=CONTEXT_FRAMES, lookahead=CQT_LOOKAHEAD)
        self.ref = 0.0  # running maximum of the CQT magnitudes (the reference: at least REF_FLOOR)
        self.window = np.zeros((N_WIDE, 0), dtype=np.float32)  # log-CQT, last frames
        self.window_start = 0  # absolute frame of window[:, 0]
        self.done = 0  # frames whose probabilities are final
        self.prev: dict[str, np.ndarray] | None = None  # previous window's aligned probabilities
        self.prev_start = 0
        self.activity: np.ndarray | None = None
        min_f, gap_f = ms_to_min_frames(options.min_note_ms), ms_to_gap_frames(options.merge_gap_ms)
        self.mix = NoteTracker(options.mix_threshold, min_f, gap_f, MIX)
        self.slot_trackers: list[NoteTracker] = []
        self._min_f, self._gap_f = min_f, gap_f
        self.notes: dict[int | str, list[Note]] = {MIX: []}
        self.printed: set[int | str] = {MIX}

    @property
    def uses_slots(self) -> bool:
        return bool(getattr(self.runner.experiment, "uses_slots", False))

    def _slot_active(self, k: int) -> bool:
        if self.activity is None or not self.runner.activity_trained:
            return True
        return bool(self.activity[k] >= self.options.activity_threshold)

    def _collect(self, slot: int | str, notes: list[Note]) -> list[Note]:
        self.notes.setdefault(slot, []).extend(notes)
        if slot in self.printed:
            return notes
        if slot != MIX and self._slot_active(int(slot) - 1):
            self.printed.add(slot)
            return list(self.notes[slot])  # the slot just became active: its held notes too
        return []

    def _run_model(self, final_to: int, last: bool, duration_s: float | None = None
                   ) -> list[Note]:
        """Run the model on the window and hand frames ``[done, final_to)`` to the note trackers."""
        probs = self.runner.predict(self.window, None)
        start = self.window_start
        if self.uses_slots and "slots" in probs:
            if self.prev is not None:
                ov0 = max(start, self.prev_start)
                ov1 = min(start + self.window.shape[1], self.prev_start + self.prev["mix"].shape[1])
                if ov1 > ov0:
                    perm = align_slots(self.prev, probs, slice(ov0 - self.prev_start,
                                                               ov1 - self.prev_start),
                                       slice(ov0 - start, ov1 - start))
                    for key in SLOT_KEYS:
                        if key in probs:
                            probs[key] = probs[key][perm]
            act = probs.get("activity")
            if act is not None:
                self.activity = act.copy() if self.activity is None else np.maximum(self.activity,
                                                                                    act)
                probs["activity"] = self.activity.copy()
            self.prev, self.prev_start = probs, start
        sel = slice(self.done - start, final_to - start)
        part = postprocess_probs({k: (v[..., sel] if v.ndim >= 2 and k != "timbre" else v)
                                  for k, v in probs.items()}, self.meta)
        out = self.mix.push(part["mix"])
        if last:
            out += self.mix.finish(duration_s)
        out = self._collect(MIX, out)
        if self.uses_slots and "slots" in part:
            slots = part["slots"]
            while len(self.slot_trackers) < slots.shape[0]:
                k = len(self.slot_trackers)
                self.slot_trackers.append(NoteTracker(self.options.slot_threshold, self._min_f,
                                                      self._gap_f, k + 1))
            for k, tr in enumerate(self.slot_trackers):
                notes = tr.push(slots[k]) + (tr.finish(duration_s) if last else [])
                out += self._collect(k + 1, notes)
        self.done = final_to
        return out

    def _add_frames(self, mag: np.ndarray) -> None:
        if mag.shape[1]:
            self.ref = max(self.ref, float(mag.max()))
        x = log_compress(mag, max(self.ref, REF_FLOOR))
        self.window = np.concatenate((self.window, x), axis=1)
        drop = self.window.shape[1] - WINDOW_FRAMES
        if drop > 0:
            self.window = self.window[:, drop:]
            self.window_start += drop

    def push(self, samples: np.ndarray) -> list[Note]:
        """Feed 16 kHz mono samples; returns the notes that became final."""
        out: list[Note] = []
        mag = self.cqt.push(samples)
        for a in range(0, mag.shape[1], STEP_FRAMES):
            self._add_frames(mag[:, a : a + STEP_FRAMES])
            final_to = self.window_start + self.window.shape[1] - MODEL_LOOKAHEAD
            if final_to > self.done:
                out += self._run_model(final_to, last=False)
        return out

    def finish(self, duration_s: float | None = None) -> list[Note]:
        """End of input: the remaining frames and every open note (trimmed to ``duration_s``,
        the input's duration, before the length filter when given)."""
        self._add_frames(self.cqt.finish())
        return self._run_model(self.window_start + self.window.shape[1], last=True,
                               duration_s=duration_s)

    def tracks(self, duration_s: float | None = None) -> list[Track]:
        """All notes as tracks: active slots with notes (slot order), then the mixture."""
        exp = self.runner.experiment
        tracks = []
        for k in range(len(self.slot_trackers)):
            notes = self.notes.get(k + 1, [])
            if notes and self._slot_active(k):
                tracks.append(Track(k + 1, slot_track_name(k, exp), _clip(notes, duration_s)))
        tracks.append(Track(MIX, "mixture", _clip(self.notes[MIX], duration_s)))
        return tracks


def _clip(notes: list[Note], duration_s: float | None) -> list[Note]:
    notes = sorted(notes, key=lambda n: (n.onset_s, n.midi))
    return notes if duration_s is None else clip_notes(notes, duration_s)


def _emit(fh: TextIO | None, notes: list[Note], duration_s: float | None = None) -> None:
    if fh is None:
        return
    for n in notes:
        off = n.offset_s if duration_s is None else min(n.offset_s, duration_s)
        fh.write(f"{n.slot},{n.onset_s:.3f},{off:.3f},{n.midi},{n.confidence:.4f}\n")
    fh.flush()


def transcribe_stream(
    path: str | os.PathLike[str],
    model: Any,
    meta: Mapping[str, Any],
    outdir: str | os.PathLike[str],
    options: TranscribeOptions | None = None,
    emit: TextIO | None = None,
    name: str | None = None,
    block_seconds: float = 0.25,
) -> TranscriptionResult:
    """Stream-transcribe ``path`` (``"-"``: stdin): notes are written to ``emit`` as CSV rows
    ``slot,onset_s,offset_s,midi,confidence`` as soon as they are final, and the usual MIDI/CSV/PNG
    set is written into ``outdir`` at the end (name: the file's stem, ``stdin`` for stdin)."""
    t_start = time.perf_counter()
    options = options or TranscribeOptions()
    source = open_audio(path)
    st = StreamTranscriber(model, meta, options)
    if emit is not None:
        emit.write("slot,onset_s,offset_s,midi,confidence\n")
    for piece in source.blocks(seconds=min(block_seconds, BLOCK_SECONDS)):
        _emit(emit, st.push(piece))
    duration = source.duration_s
    _emit(emit, st.finish(duration), duration)
    tracks = st.tracks(duration)
    base = name or input_stem(path)
    midi_path, csv_path, png_path = write_outputs(Path(outdir), base, tracks, duration,
                                                  Path(str(path)).name, options.write_png)
    return TranscriptionResult(
        audio_path=Path(source.name), midi_path=midi_path, csv_path=csv_path, png_path=png_path,
        duration_s=duration, n_frames=st.done, tracks=tracks,
        slot_activity=[] if st.activity is None else [float(a) for a in st.activity],
        thresholds={"mix": options.mix_threshold, "slots": options.slot_threshold,
                    "activity": options.activity_threshold},
        seconds=time.perf_counter() - t_start,
    )


__all__ = ["LATENCY_FRAMES", "REF_FLOOR", "REF_FLOOR_DBFS", "NoteTracker", "StreamTranscriber", "transcribe_stream"]
