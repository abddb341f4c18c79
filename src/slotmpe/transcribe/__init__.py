"""Source-aware transcription of a user's audio: frame probabilities -> notes -> MIDI, CSV, PNG.

``transcribe_file`` is what ``slotmpe transcribe`` runs for every input file. The package is split
along the steps:

1. :mod:`~slotmpe.transcribe.audio_input`: the file (or stdin) is read in blocks, down-mixed and
   resampled to 16 kHz mono with soxr's streaming resampler; undecodable files and out-of-range
   samples are one-line errors.
2. :mod:`slotmpe.cqt`: the wide log-CQT of :func:`slotmpe.features.cqt_wide` (same algorithm and
   filters as librosa's recursive CQT, NumPy only) computed block-wise with ~6 s of context per
   block; the ``(325, T)`` magnitudes (1.3 kB per frame) are kept until the file's maximum, the
   log compression's reference, is known: in memory up to one model chunk, beyond that in a
   temporary file (:class:`~slotmpe.transcribe.chunked.CqtStore`).
3. :mod:`~slotmpe.transcribe.runners`: the model, either a torch checkpoint (``.pt``, run by
   :func:`slotmpe.inference.predict`) or an ONNX export (``.onnx``, written by ``slotmpe export``
   or the pipeline's ``export_onnx`` rule, run by :mod:`~slotmpe.transcribe.onnx_runner` without
   importing torch); a ``.pt`` with an up-to-date ``.onnx`` beside it runs the latter. Both run the whole
   file in one pass (one slot set for the whole file) up to ``DEFAULT_MAX_FRAMES`` frames, and
   beyond that in overlapping chunks whose slot order is re-aligned by Hungarian matching
   (:mod:`slotmpe.stitching`; ``--max-frames`` changes the chunk length). Files of several chunks
   are stitched and turned into notes block by block (:mod:`~slotmpe.transcribe.chunked`), so
   memory does not grow with the file's length.
4. :func:`~slotmpe.transcribe.notes.postprocess_probs`, the one post-processing step of the slot
   probabilities, then notes (:mod:`slotmpe.notes`, shared with the evaluation) for the mixture map and every
   *active* slot map, offsets clipped to the audio's duration.
   Then :mod:`~slotmpe.transcribe.naming`: the frequency range and the instrument names
   (:mod:`slotmpe.instruments`).
5. :mod:`~slotmpe.transcribe.writers`: ``<name>.mid``, ``<name>.notes.csv`` and ``<name>.png``
   (and ``<name>.sonified.wav``, ``<name>.model_output.npz`` on request), written as one set (all
   or none; optional outputs of the same name left by an earlier run are removed with it) after
   checking that the output folder can be created and written.

Thresholds (:func:`~slotmpe.transcribe.options.resolve_thresholds`) follow one rule whichever file
names the model: ``--threshold``, else the model's ``thresholds.json`` (checked by
:mod:`slotmpe.thresholds`; a damaged one is an error), else those embedded in its ONNX export, else
0.5 with a warning.

:mod:`~slotmpe.transcribe.stream` transcribes block by block with bounded latency
(``slotmpe transcribe --stream``).

Slots whose activity probability is below ``activity_threshold`` are dropped, as are active slots
with no note above threshold; the fixed-order family model 1b does not train its activity output, so
there no slot is dropped by activity. Models without trained slots (experiment 1a; its slot head
exists but is unused) give only the mixture track.
"""

from __future__ import annotations

from slotmpe.notes import (
    DEFAULT_ACTIVITY_THRESHOLD,
    DEFAULT_MERGE_GAP_MS,
    DEFAULT_MIN_NOTE_MS,
    DEFAULT_THRESHOLD,
    FRAME_SECONDS,
    MIX,
    Note,
    Track,
    activity_is_trained,
    clip_notes,
    make_tracks,
    ms_to_gap_frames,
    ms_to_min_frames,
    notes_to_roll,
    probs_to_notes,
    slot_track_name,
)
from slotmpe.transcribe.core import (
    AUDIO_EXTENSIONS,
    TranscriptionResult,
    audio_cqt,
    broken_links,
    find_audio_files,
    output_names,
    transcribe_audio,
    transcribe_cqt,
    transcribe_file,
)
from slotmpe.transcribe.errors import TranscriptionError
from slotmpe.transcribe.notes import experiment_of, postprocess_probs
from slotmpe.transcribe.options import (
    DEFAULT_MAX_FRAMES,
    TranscribeOptions,
    embedded_thresholds,
    read_thresholds,
    resolve_thresholds,
    thresholds_beside,
    tuned_thresholds,
)
from slotmpe.transcribe.runners import as_runner, load_model, load_torch_model
from slotmpe.transcribe.writers import (
    DEFAULT_PROGRAM,
    MIDI_RESOLUTION,
    MIDI_TEMPO,
    check_writable,
    is_own_output,
    output_paths,
    plot_pianoroll,
    read_notes_csv,
    velocity_of,
    write_midi,
    write_notes_csv,
    write_output_set,
    write_outputs,
)

__all__ = [
    "AUDIO_EXTENSIONS", "DEFAULT_ACTIVITY_THRESHOLD", "DEFAULT_MAX_FRAMES", "DEFAULT_MERGE_GAP_MS",
    "DEFAULT_MIN_NOTE_MS", "DEFAULT_PROGRAM", "DEFAULT_THRESHOLD", "FRAME_SECONDS", "MIDI_RESOLUTION",
    "MIDI_TEMPO", "MIX", "Note", "Track", "TranscribeOptions", "TranscriptionError",
    "TranscriptionResult", "activity_is_trained", "as_runner", "audio_cqt", "broken_links",
    "check_writable", "clip_notes", "embedded_thresholds", "experiment_of", "find_audio_files",
    "is_own_output", "load_model", "load_torch_model", "make_tracks", "ms_to_gap_frames",
    "ms_to_min_frames", "notes_to_roll", "output_names", "output_paths", "plot_pianoroll",
    "postprocess_probs", "probs_to_notes", "read_notes_csv", "read_thresholds",
    "resolve_thresholds", "slot_track_name", "thresholds_beside", "transcribe_audio",
    "transcribe_cqt", "transcribe_file", "tuned_thresholds", "velocity_of", "write_midi",
    "write_notes_csv", "write_output_set", "write_outputs",
]
