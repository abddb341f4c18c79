"""Transcription of one input: audio -> wide CQT -> model -> post-processing -> notes -> files.

:func:`transcribe_file` keeps memory bounded on long files (:mod:`slotmpe.transcribe.chunked`); every
path ends with :func:`slotmpe.transcribe.naming.finish_tracks` (frequency range, instrument names).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slotmpe.audio import AudioError, audio_files, is_audio_file, readable_audio_extensions
from slotmpe.constants import SAMPLE_RATE
from slotmpe.cqt import BLOCK_FRAMES, CONTEXT_FRAMES, cqt_magnitude_blocks, log_compress
from slotmpe.notes import (
    MIX,
    Track,
    make_tracks,
    ms_to_gap_frames,
    ms_to_min_frames,
    slot_track_name,
)
from slotmpe.transcribe.audio_input import input_stem, open_audio
from slotmpe.transcribe.chunked import BlockNotes, CqtStore, n_chunks, stitched_blocks, trim_notes
from slotmpe.transcribe.naming import finish_tracks
from slotmpe.transcribe.notes import postprocess_probs
from slotmpe.transcribe.options import TranscribeOptions
from slotmpe.transcribe.runners import Runner, as_runner
from slotmpe.transcribe.writers import check_writable, write_output_files

#: Extensions a directory argument is searched for: the package's one list (what soundfile reads).
AUDIO_EXTENSIONS: tuple[str, ...] = readable_audio_extensions()


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
    paths: dict[str, Path] = field(default_factory=dict)  # every file written, by kind
    # outputs of the same name from an earlier run that this set does not replace (removed)
    removed: list[Path] = field(default_factory=list)

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
        slots = ", ".join(f"{t.name}: {len(t.notes)}"
                          + ("" if t.similarity is None else f" (similarity {t.similarity:.2f})")
                          for t in self.tracks if t.slot != MIX)
        mix = next((len(t.notes) for t in self.tracks if t.slot == MIX), 0)
        return (
            f"{self.audio_path.name}: {self.duration_s:.1f} s, {mix} mixture notes"
            + (f"; {len(self.active_slots)} active slots ({slots})" if slots else "")
            + f" -> {self.midi_path}"
            + (f" (removed the earlier {', '.join(p.name for p in self.removed)})"
               if self.removed else "")
        )



def broken_links(folder: str | os.PathLike[str]) -> list[str]:
    """One line per symbolic link in ``folder`` that a directory argument would have picked (an
    audio extension, not hidden) but that leads nowhere: a dangling link or a link loop."""
    out = []
    for p in sorted(Path(folder).iterdir()):
        if not p.is_symlink() or p.name.startswith(".") or not is_audio_file(p) or p.exists():
            continue
        try:
            os.stat(p)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                out.append(f"{p}: skipped, a symbolic link loop")
                continue
        out.append(f"{p}: skipped, a broken symbolic link (its target {os.readlink(p)} does "
                   "not exist)")
    return out


def find_audio_files(paths: Iterable[str | os.PathLike[str]],
                     skipped: list[str] | None = None) -> list[Path]:
    """Expand directories into their audio files (sorted, non-recursive, by extension).

    Files given explicitly are kept whatever their extension (a bad one fails later, on its own).
    Dangling symbolic links and link loops in a directory are left out; a line for each is
    appended to ``skipped`` when given (:func:`broken_links`).
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(audio_files(p))
            if skipped is not None:
                skipped.extend(broken_links(p))
        else:
            out.append(p)
    return out


def output_names(files: Sequence[Path]) -> list[str]:
    """Unique output base names: the file stem, ``stem_ext`` when stems collide, then ``_2``, ..."""
    stems = [input_stem(f) for f in files]  # "-" (stdin) -> "stdin"
    names = [f"{st}_{f.suffix.lstrip('.')}" if stems.count(st) > 1 else st
             for f, st in zip(files, stems, strict=True)]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out



def audio_cqt(audio: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
    """Log-compressed wide CQT ``(N_WIDE, T)`` of 16 kHz mono audio (an array or its pieces),
    computed block-wise (:mod:`slotmpe.cqt`): only the calibrated magnitudes ``(325, T)`` grow
    with the input."""
    pieces = [audio] if isinstance(audio, np.ndarray) else audio
    mags = list(cqt_magnitude_blocks(pieces, BLOCK_FRAMES, CONTEXT_FRAMES))
    mag = mags[0] if len(mags) == 1 else np.concatenate(mags, axis=1)
    del mags
    return log_compress(mag)


def transcribe_cqt(
    cqt: np.ndarray,
    model: Any,
    meta: Mapping[str, Any],
    options: TranscribeOptions,
    duration_s: float | None = None,
) -> tuple[list[Track], dict[str, np.ndarray]]:
    """``(tracks, probabilities)`` of a wide CQT ``(N_WIDE, T)`` without writing files: the model
    (torch or ONNX), then :func:`~slotmpe.transcribe.notes.postprocess_probs`, then notes."""
    runner = as_runner(model, meta, options.device)
    probs = runner.predict(cqt, options.resolved_max_frames())
    probs = postprocess_probs(probs, meta)
    uses_slots = bool(getattr(runner.experiment, "uses_slots", "slots" in probs))
    tracks = make_tracks(probs, options, uses_slots, runner.experiment, runner.activity_trained,
                         duration_s=duration_s)
    return finish_tracks(tracks, probs, runner.experiment, meta, options), probs


def _tracks_in_blocks(store: CqtStore, runner: Runner, options: TranscribeOptions,
                      max_frames: int, duration_s: float
                      ) -> tuple[list[Track], dict[str, np.ndarray]]:
    """``(tracks, per-file outputs)`` of a file longer than one model chunk, in bounded memory
    (:mod:`slotmpe.transcribe.chunked`): the tracks :func:`make_tracks` gives, and the stitched
    ``activity`` ``(K,)`` and ``timbre`` ``(K, 128)``."""
    min_f, gap_f = ms_to_min_frames(options.min_note_ms), ms_to_gap_frames(options.merge_gap_ms)
    mix = BlockNotes(options.mix_threshold, min_f, gap_f, MIX)
    slots: list[BlockNotes] = []
    uses_slots = bool(getattr(runner.experiment, "uses_slots", True))
    whole: dict[str, np.ndarray] = {}
    for _, block, so_far in stitched_blocks(lambda x: runner.predict(x, None), store.n_frames,
                                            max_frames, store.read):
        whole = so_far  # final after the last block
        mix.push(block["mix"])
        if uses_slots and "slots" in block:
            while len(slots) < block["slots"].shape[0]:
                slots.append(BlockNotes(options.slot_threshold, min_f, gap_f, len(slots) + 1))
            for k, bn in enumerate(slots):
                bn.push(block["slots"][k])
    activity = whole.get("activity")
    tracks: list[Track] = []
    for k, bn in enumerate(slots):
        if (activity is not None and runner.activity_trained
                and activity[k] < options.activity_threshold):
            continue
        notes = trim_notes(bn.finish(), duration_s, options.min_note_ms)
        if notes:
            tracks.append(Track(k + 1, slot_track_name(k, runner.experiment), notes))
    tracks.append(Track(MIX, "mixture", trim_notes(mix.finish(), duration_s, options.min_note_ms)))
    return tracks, whole


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
    from slotmpe.audio import check_audio

    audio = np.asarray(audio, dtype=np.float32)
    check_audio(audio, name, allow_silent=True)
    return transcribe_cqt(audio_cqt(audio), model, meta, options, len(audio) / SAMPLE_RATE)


def transcribe_file(
    path: str | os.PathLike[str],
    model: Any,
    meta: Mapping[str, Any],
    outdir: str | os.PathLike[str],
    options: TranscribeOptions | None = None,
    name: str | None = None,
) -> TranscriptionResult:
    """Transcribe one audio file into ``outdir/<name>.mid``, ``.notes.csv`` and ``.png``.

    ``name`` defaults to the file's stem. ``model``/``meta`` come from
    :func:`slotmpe.transcribe.load_model` (a ``.pt`` or ``.onnx`` model). The output folder is
    checked for writing before the model runs; the outputs are written as one set (all or none,
    :func:`~slotmpe.transcribe.writers.write_output_set`). Raises
    :class:`slotmpe.audio.AudioError` (naming the file) for missing, undecodable, empty, silent or
    out-of-range audio and :class:`~slotmpe.transcribe.options.TranscriptionError` for outputs that
    cannot be written; nothing is changed then.
    """
    t_start = time.perf_counter()
    options = options or TranscribeOptions()
    src = Path(path)
    out = check_writable(outdir)
    source = open_audio(src)
    max_frames = options.resolved_max_frames()
    store = CqtStore(spill_frames=max_frames)
    try:
        for mag in cqt_magnitude_blocks(source.blocks(), BLOCK_FRAMES, CONTEXT_FRAMES):
            store.append(mag)
        duration = source.duration_s
        n_frames = store.n_frames
        from slotmpe.postprocess import steps_for_checkpoint

        if (options.save_model_outputs or bool(steps_for_checkpoint(meta))
                or n_chunks(n_frames, max_frames) == 1):
            # one model pass, or outputs that need the whole-file probabilities
            cqt = store.read(0, n_frames)
            store.close()
            tracks, probs = transcribe_cqt(cqt, model, meta, options, duration)
            del cqt
        else:
            assert max_frames is not None
            runner = as_runner(model, meta, options.device)
            tracks, probs = _tracks_in_blocks(store, runner, options, max_frames, duration)
            tracks = finish_tracks(tracks, probs, runner.experiment, meta, options)
    finally:
        store.close()
    removed: list[Path] = []
    paths = write_output_files(out, name or src.stem, tracks, duration, src.name,
                               options.write_png, options.sonify,
                               probs if options.save_model_outputs else None, removed=removed)
    activity = probs.get("activity")
    return TranscriptionResult(
        audio_path=src,
        midi_path=paths["midi"],
        csv_path=paths["csv"],
        png_path=paths.get("png"),
        duration_s=duration,
        n_frames=n_frames,
        tracks=tracks,
        slot_activity=[] if activity is None else [float(a) for a in np.ravel(activity)],
        thresholds={"mix": options.mix_threshold, "slots": options.slot_threshold,
                    "activity": options.activity_threshold},
        seconds=time.perf_counter() - t_start,
        paths=paths,
        removed=removed,
    )


__all__ = ["AUDIO_EXTENSIONS", "AudioError", "MIX", "TranscriptionResult", "audio_cqt",
           "broken_links", "find_audio_files", "output_names", "transcribe_audio", "transcribe_cqt",
           "transcribe_file"]
