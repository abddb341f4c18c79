"""Transcribe's side of note making: the experiment of a loaded model and the one
post-processing step before notes (:func:`postprocess_probs`, shared by the torch, ONNX and
streaming paths). Notes themselves are made by :mod:`slotmpe.notes` (also used by the
evaluation); ``Note`` and ``Track`` stay importable from here for code written against this
module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from slotmpe.notes import Note, Track

__all__ = ["Note", "Track", "experiment_of", "postprocess_probs"]


def experiment_of(model: Any, meta: Mapping[str, Any]) -> Any:
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


def postprocess_probs(probs: dict[str, np.ndarray], meta: Mapping[str, Any] | None = None
                      ) -> dict[str, np.ndarray]:
    """The single post-processing step between model probabilities and note creation.

    ``probs`` holds ``mix`` ``(72, T)`` and, for slot models, ``slots`` ``(K, 72, T)``,
    ``activity`` ``(K,)`` (and ``timbre``/``poly``). Returns the dict to create notes from: the
    slot post-processing of the checkpoint's experiment (:attr:`Experiment.postprocess`, e.g.
    4a's ``exclusive``; :func:`slotmpe.postprocess.postprocess_prediction`, the code evaluation
    uses), for the torch, ONNX and streaming paths alike; unchanged for the paper's experiments.
    """
    from slotmpe.postprocess import postprocess_prediction, steps_for_checkpoint

    return postprocess_prediction(probs, steps_for_checkpoint(meta))
