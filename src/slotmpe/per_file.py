"""The layout of ``per_file.csv``: per test file and output, the counts behind Table III.

Written beside ``metrics.json`` by :func:`slotmpe.evaluation.evaluate_model`
(:func:`slotmpe.evaluation.per_file_counts`), read by :mod:`slotmpe.results.stats`, so that
statistics over seeds and files never rerun inference. One row per (file, output), columns
:data:`PER_FILE_COLUMNS`: ``file`` (piece id), ``output`` (one of :data:`OUTPUTS`), ``tp, fp, fn``,
``n_frames`` and the ``threshold`` used.

``output``: ``"mix"`` (standard MPE) and ``"slot"`` (the experiment's family- or stem-level slot
metric) count (frame, pitch) cells at the tuned threshold; the note outputs
(:data:`NOTE_OUTPUTS`, defined in :mod:`slotmpe.metrics`) count notes. Either way the sums of
``tp, fp, fn`` over any subset of files give the pooled F1 ``2 TP / (2 TP + FP + FN)`` of that
subset.
"""

from __future__ import annotations

PER_FILE_NAME: str = "per_file.csv"
PER_FILE_COLUMNS: tuple[str, ...] = ("file", "output", "tp", "fp", "fn", "n_frames", "threshold")
FRAME_OUTPUTS: tuple[str, ...] = ("mix", "slot")
NOTE_OUTPUTS: tuple[str, ...] = (
    "note_onset", "note_onoff", "slot_note_onset", "slot_note_onoff", "multi_instrument",
)
OUTPUTS: tuple[str, ...] = FRAME_OUTPUTS + NOTE_OUTPUTS
