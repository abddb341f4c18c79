"""Whole-file transcription in bounded memory: the CQT kept on disk, the model run chunk by chunk,
the stitched probabilities turned into notes block by block.

The result equals the in-memory path (:func:`slotmpe.transcribe.core.transcribe_cqt`, i.e. the
model's ``predict`` with :func:`slotmpe.stitching.stitch`, then notes): only *where* the data lives
differs.

1. :class:`CqtStore`: the wide-CQT magnitudes ``(325, T)`` are appended block by block as the audio
   is read. They stay in memory up to ``spill_frames`` frames (one model chunk); beyond that they go
   to an unnamed temporary file (1.3 kB per frame, read back with ordinary reads, so the pages do
   not count towards the process's memory). The log compression needs the file's maximum, known
   once all audio is read; :meth:`CqtStore.read` applies it to the frames it returns.
2. :func:`stitched_blocks`: the file is run in the chunks of :func:`slotmpe.stitching.chunk_bounds`
   (``max_frames`` frames, overlap a quarter); each chunk's slots are aligned to the previous chunk
   on the overlap (:func:`slotmpe.stitching.align_slots`), the frame-wise outputs are cross-faded
   with the weights :func:`~slotmpe.stitching.stitch` uses, and the frames no later chunk covers
   are handed on at once. Only the overlap of the last chunk is held back.
3. :class:`BlockNotes`: notes of the mixture and of every slot from those blocks, exactly the
   notes :func:`~slotmpe.transcribe.notes.probs_to_notes` finds on the whole map: per pitch, a note
   that may still merge with later frames (it ends less than ``merge_gap`` frames before the
   block's end) is carried into the next block.

Memory is then bounded by one chunk's model pass (``max_frames`` frames, by default
:data:`~slotmpe.transcribe.options.TRANSCRIBE_MAX_FRAMES` = 4096, 131 s), whatever the file's length. A file of one chunk runs exactly as
before (everything in memory, :func:`~slotmpe.transcribe.notes.make_tracks`). The whole-file
probabilities are kept only when an output needs them (``--save-model-outputs``) or when the
model's experiment post-processes its slots with whole-file statistics
(:attr:`slotmpe.experiments.Experiment.postprocess`, e.g. 4a).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import numpy as np

from slotmpe.constants import MIDI_MIN, N_PITCHES
from slotmpe.cqt import N_WIDE, log_compress
from slotmpe.notes import FRAME_SECONDS, Note, probs_to_notes
from slotmpe.stitching import SLOT_KEYS, align_slots, chunk_bounds, crossfade_weights

FRAME_KEYS: tuple[str, ...] = ("mix", "slots", "poly")  # frame-wise outputs (time on the last axis)


class CqtStore:
    """Wide-CQT magnitude frames ``(N_WIDE, T)`` of one file: in memory up to ``spill_frames``
    frames (None: always), then in a temporary file (frames stored time-major, float32)."""

    def __init__(self, spill_frames: int | None) -> None:
        self.spill_frames = spill_frames
        self.blocks: list[np.ndarray] = []
        self.file: BinaryIO | None = None
        self.n_frames = 0
        self.ref = 0.0  # maximum magnitude (the log compression's reference)

    def append(self, mag: np.ndarray) -> None:
        """Add magnitude frames ``(N_WIDE, n)``."""
        if mag.shape[1] == 0:
            return
        self.ref = max(self.ref, float(mag.max()))
        self.n_frames += mag.shape[1]
        if self.file is None:
            self.blocks.append(np.asarray(mag, dtype=np.float32))
            if self.spill_frames is not None and self.n_frames > self.spill_frames:
                self.file = tempfile.TemporaryFile(prefix="slotmpe-cqt-")
                for b in self.blocks:
                    self.file.write(np.ascontiguousarray(b.T).tobytes())
                self.blocks = []
        else:
            self.file.write(np.ascontiguousarray(mag.T, dtype=np.float32).tobytes())

    @property
    def spilled(self) -> bool:
        return self.file is not None

    def read(self, a: int, b: int) -> np.ndarray:
        """Log-compressed frames ``[a, b)``: float32 ``(N_WIDE, b - a)``, C-contiguous."""
        if self.file is None:
            if len(self.blocks) > 1:
                self.blocks = [np.concatenate(self.blocks, axis=1)]
            mag = self.blocks[0][:, a:b] if self.blocks else np.zeros((N_WIDE, 0), np.float32)
            return log_compress(mag, self.ref)
        self.file.flush()
        self.file.seek(a * N_WIDE * 4)
        mag = np.fromfile(self.file, dtype=np.float32, count=(b - a) * N_WIDE)
        return np.ascontiguousarray(log_compress(mag.reshape(b - a, N_WIDE), self.ref).T)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.blocks = []


def stitched_blocks(
    predict: Any, n_frames: int, max_frames: int, read: Any
) -> Iterator[tuple[int, dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Run ``predict(cqt) -> probs`` on the chunks of a file of ``n_frames`` frames and yield
    ``(start, block, whole)``: ``block`` holds the final frame-wise outputs (``mix`` ``(72, n)``,
    ``slots`` ``(K, 72, n)``, ``poly``) of frames ``[start, start + n)``, in order and without gaps;
    ``whole`` the running per-file outputs (``activity`` ``(K,)``, the maximum so far; ``timbre``
    ``(K, 128)``, mass-weighted mean so far), final with the last block. ``read(a, b)`` returns the
    log-CQT of frames ``[a, b)``. Equals :func:`slotmpe.stitching.stitch` of all chunks."""
    bounds = chunk_bounds(n_frames, max_frames)
    weights = crossfade_weights(bounds)
    total = np.zeros(n_frames, dtype=np.float64)
    for (s, e), w in zip(bounds, weights, strict=True):
        total[s:e] += w
    acc: dict[str, np.ndarray] = {}
    acc_start = 0
    prev: dict[str, np.ndarray] | None = None  # previous aligned chunk, frames [prev_s, ...)
    prev_s = 0
    activity: np.ndarray | None = None
    timbre_sum: np.ndarray | None = None
    for i, ((s, e), w) in enumerate(zip(bounds, weights, strict=True)):
        c = predict(read(s, e))
        if prev is not None and "slots" in c:
            ov = slice(0, prev["slots"].shape[-1] - (s - prev_s))
            perm = align_slots(prev, c, slice(s - prev_s, None), ov)
            for k in SLOT_KEYS:
                if k in c:
                    c[k] = c[k][perm]
        for key in FRAME_KEYS:
            if key not in c:
                continue
            a = acc.get(key)
            need = e - acc_start
            if a is None or a.shape[-1] < need:
                grown = np.zeros(c[key].shape[:-1] + (need,), dtype=np.float64)
                if a is not None:
                    grown[..., : a.shape[-1]] = a
                acc[key] = a = grown
            a[..., s - acc_start : e - acc_start] += c[key] * w
        if "activity" in c:
            activity = c["activity"].copy() if activity is None else np.maximum(activity,
                                                                                c["activity"])
        if "timbre" in c:
            mass = (c["slots"].sum(axis=(1, 2)) if "slots" in c else np.ones(1)) + 1e-3
            part = mass[:, None] * c["timbre"].astype(np.float64)
            timbre_sum = part if timbre_sum is None else timbre_sum + part
        final_to = bounds[i + 1][0] if i + 1 < len(bounds) else n_frames
        block = {key: (a[..., : final_to - acc_start] / total[acc_start:final_to]).astype(np.float32)
                 for key, a in acc.items()}
        acc = {key: a[..., final_to - acc_start :].copy() for key, a in acc.items()}
        whole: dict[str, np.ndarray] = {}
        if activity is not None:
            whole["activity"] = activity
        if timbre_sum is not None:
            emb = timbre_sum / (np.linalg.norm(timbre_sum, axis=1, keepdims=True) + 1e-12)
            whole["timbre"] = emb.astype(np.float32)
        yield acc_start, block, whole
        acc_start = final_to
        if "slots" in c and i + 1 < len(bounds):
            nxt = bounds[i + 1][0]  # keep this chunk's frames from the next chunk's start on
            prev = {k: (v[..., nxt - s :] if k == "slots" else v) for k, v in c.items()
                    if k in SLOT_KEYS}
            prev_s = nxt
        del c


class BlockNotes:
    """:func:`~slotmpe.transcribe.notes.probs_to_notes` of a ``(72, T)`` map fed in consecutive
    blocks: :meth:`push` each block, :meth:`finish` at the end; :attr:`notes` then equals the
    whole-map result (same notes, same confidences), sorted by onset then pitch."""

    def __init__(self, threshold: float, min_frames: int, gap_frames: int, slot: int | str) -> None:
        self.threshold, self.min_frames, self.gap_frames, self.slot = (
            threshold, min_frames, gap_frames, slot)
        self.carry = np.zeros((N_PITCHES, 0), dtype=np.float32)
        self.carry_start = 0  # absolute frame of carry[:, 0]
        self.resume = np.zeros(N_PITCHES, dtype=np.int64)  # per pitch: onsets before are done
        self.notes: list[Note] = []

    def push(self, prob: np.ndarray, last: bool = False) -> None:
        """Feed the next frames ``(72, n)``; ``last``: the map ends with them."""
        window = np.concatenate((self.carry, prob), axis=1) if self.carry.shape[1] else prob
        c = self.carry_start
        b = c + window.shape[1]
        open_start = np.full(N_PITCHES, -1, dtype=np.int64)
        for n in probs_to_notes(window, self.threshold, 1, self.gap_frames, self.slot):
            s = c + round(n.onset_s / FRAME_SECONDS)
            e = c + round(n.offset_s / FRAME_SECONDS)
            p = n.midi - MIDI_MIN
            if not last and b - e <= self.gap_frames:
                open_start[p] = s if open_start[p] < 0 else min(open_start[p], s)
                continue
            if s >= self.resume[p] and e - s >= self.min_frames:
                self.notes.append(Note(self.slot, s * FRAME_SECONDS, e * FRAME_SECONDS, n.midi,
                                       n.confidence))
        is_open = open_start >= 0
        self.resume = np.where(is_open, open_start, b)
        new_start = int(open_start[is_open].min()) if is_open.any() else b
        self.carry = np.ascontiguousarray(window[:, new_start - c :])
        self.carry_start = new_start

    def finish(self) -> list[Note]:
        """Close the open notes; returns every note (onset, pitch order)."""
        if self.carry.shape[1]:
            self.push(np.zeros((N_PITCHES, 0), dtype=np.float32), last=True)
        self.notes.sort(key=lambda n: (n.onset_s, n.midi))
        return self.notes


def trim_notes(notes: Iterable[Note], duration_s: float, min_note_ms: float) -> list[Note]:
    """Offsets clipped to ``duration_s`` (notes starting at or after it dropped), then notes
    shorter than ``min_note_ms`` after clipping dropped (the last note of a file counts only the
    audio it covers)."""
    from dataclasses import replace

    out = []
    for n in notes:
        if n.onset_s >= duration_s - 1e-6:
            continue
        if n.offset_s > duration_s:
            n = replace(n, offset_s=duration_s)
        if n.offset_s - n.onset_s + 1e-6 < min_note_ms / 1000.0:
            continue
        out.append(n)
    return out


def n_chunks(n_frames: int, max_frames: int | None) -> int:
    """Number of model passes over a file of ``n_frames`` frames."""
    if max_frames is None or n_frames <= max_frames:
        return 1
    return len(chunk_bounds(n_frames, max_frames))


__all__ = ["BlockNotes", "CqtStore", "FRAME_KEYS", "n_chunks", "stitched_blocks",
           "trim_notes"]
