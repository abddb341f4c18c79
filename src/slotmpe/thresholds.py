"""``thresholds.json``: a model's tuned note thresholds, read and checked in one place.

:func:`slotmpe.evaluation.tune_thresholds` writes it beside ``model.pt``::

    {"mix": 0.41, "slots": 0.37, "exp": "3c", "dataset": "chamber", "seed": 0, "val_f1_mix": ...}

``mix`` is required; ``slots`` may be ``null`` or absent (a model without slots, e.g. 1a); both are
probabilities: numbers (not booleans) in [0, 1]. Other keys (the run it was tuned for, scores) are
kept as they are. Anything else (a truncated file, invalid JSON, a string, ``5.0``) is a
:class:`ThresholdsError` naming the file, never a silent fallback to 0.5: ``slotmpe transcribe``
reads the file with :func:`read_thresholds_file`, and ``slotmpe evaluate`` is meant to (one
validator, :func:`check_thresholds`, for both). An ONNX export's embedded thresholds (the same two
keys) are checked with :func:`check_thresholds` too.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

THRESHOLD_KEYS: tuple[str, ...] = ("mix", "slots")


class ThresholdsError(ValueError):
    """A thresholds document that is not valid; the message names the file and the problem."""


def _probability(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ThresholdsError(
            f"thresholds file {where}: '{key}' must be a number in [0, 1], got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ThresholdsError(
            f"thresholds file {where}: '{key}' must be a probability in [0, 1], got {value!r}")
    return v


def check_thresholds(doc: Any, where: str | os.PathLike[str]) -> dict[str, Any]:
    """``doc`` (a parsed thresholds document) with ``mix`` a float and ``slots`` a float or None.

    Raises :class:`ThresholdsError` naming ``where`` for a document that is not an object, lacks a
    ``mix`` threshold, or has a ``mix``/``slots`` value that is not a probability.
    """
    if not isinstance(doc, Mapping):
        raise ThresholdsError(
            f"thresholds file {where}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("mix") is None:
        raise ThresholdsError(f"thresholds file {where} lacks a numeric 'mix' threshold")
    out = dict(doc)
    out["mix"] = _probability(doc["mix"], "mix", str(where))
    out["slots"] = None if doc.get("slots") is None else _probability(doc["slots"], "slots",
                                                                      str(where))
    return out


def read_thresholds_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked content (:func:`check_thresholds`) of a ``thresholds.json`` file.

    Raises :class:`FileNotFoundError` for a missing file and :class:`ThresholdsError` (naming the
    file) for one that cannot be read, is not JSON, or is not a valid thresholds document.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"thresholds file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ThresholdsError(f"thresholds file {p} cannot be read ({reason})") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ThresholdsError(f"thresholds file {p} is not valid JSON: {exc}") from None
    return check_thresholds(doc, p)


__all__ = ["THRESHOLD_KEYS", "ThresholdsError", "check_thresholds", "read_thresholds_file"]
