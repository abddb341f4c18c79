"""Settings of a transcription: :class:`TranscribeOptions` and the tuned thresholds of a model."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from slotmpe.instruments import DEFAULT_MIN_SIMILARITY
from slotmpe.notes import (
    DEFAULT_ACTIVITY_THRESHOLD,
    DEFAULT_MERGE_GAP_MS,
    DEFAULT_MIN_NOTE_MS,
    DEFAULT_THRESHOLD,
)
from slotmpe.transcribe.errors import TranscriptionError
from slotmpe.utils import get_logger

log = get_logger(__name__)

# ``max_frames="default"`` means TRANSCRIBE_MAX_FRAMES (resolved at run time).
DEFAULT_MAX_FRAMES: Literal["default"] = "default"
TRANSCRIBE_MAX_FRAMES: int = 4096
"""Default chunk of ``transcribe`` (131 s): peak memory is set by one chunk, so it stays flat for
longer files (issue 24); the evaluation keeps its longer limit (``eval.max_frames``)."""


@dataclass(frozen=True)
class TranscribeOptions:
    """Settings of :func:`slotmpe.transcribe.transcribe_file` (thresholds are probabilities)."""

    mix_threshold: float = DEFAULT_THRESHOLD
    slot_threshold: float = DEFAULT_THRESHOLD
    activity_threshold: float = DEFAULT_ACTIVITY_THRESHOLD
    min_note_ms: float = DEFAULT_MIN_NOTE_MS
    merge_gap_ms: float = DEFAULT_MERGE_GAP_MS
    device: str = "cpu"
    max_frames: int | None | Literal["default"] = DEFAULT_MAX_FRAMES
    write_png: bool = True
    # Basic Pitch's conventions: notes outside [minimum_frequency, maximum_frequency] Hz (by the
    # fundamental of their MIDI pitch) are dropped; ``sonify`` also renders the written MIDI to
    # ``<name>.sonified.wav``; ``save_model_outputs`` writes ``<name>.model_output.npz``.
    minimum_frequency: float | None = None
    maximum_frequency: float | None = None
    sonify: bool = False
    save_model_outputs: bool = False
    # Named instruments (models with a timbre head and prototypes; slotmpe.instruments).
    name_instruments: bool = True
    min_similarity: float = DEFAULT_MIN_SIMILARITY

    def __post_init__(self) -> None:
        lo, hi = self.minimum_frequency, self.maximum_frequency
        for name, v in (("minimum_frequency", lo), ("maximum_frequency", hi)):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive frequency in Hz, got {v}")
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"minimum_frequency ({lo:g} Hz) exceeds maximum_frequency ({hi:g} Hz)")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ValueError(f"min_similarity must lie in [-1, 1], got {self.min_similarity}")
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
        """The chunk length of the whole-file inference (None = whole file in one pass)."""
        if self.max_frames == DEFAULT_MAX_FRAMES:
            return TRANSCRIBE_MAX_FRAMES
        return self.max_frames  # type: ignore[return-value]


def _threshold_value(value: Any) -> float | None:
    """A probability from a thresholds.json entry (a number or ``{"threshold": x}``), else None."""
    if isinstance(value, Mapping):
        value = value.get("threshold")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) and 0.0 <= v <= 1.0 else None


def parse_thresholds(data: Any) -> dict[str, float]:
    """The ``"mix"``/``"slots"`` thresholds of a thresholds.json document (invalid keys left out)."""
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


def read_thresholds(model_path: str | os.PathLike[str]) -> dict[str, float]:
    """Tuned thresholds from ``thresholds.json`` beside ``model_path`` when it belongs to that
    model (the ``exp``/``dataset``/``seed`` it records match the model's; see
    :mod:`slotmpe.transcribe.model_identity`), else those embedded in an exported ``.onnx`` model
    (its ``thresholds`` metadata).

    The file is ``{"mix": float, "slots": float, ...}`` (written by
    :func:`slotmpe.evaluation.tune_thresholds`). Returns the keys found among ``"mix"`` and
    ``"slots"`` (``"slot"`` is accepted for the latter; a value may also be a mapping with a
    ``"threshold"`` entry); a missing or unreadable file, or a missing/invalid key, is simply
    left out, so callers fall back to :data:`DEFAULT_THRESHOLD`.
    """
    path = Path(model_path).with_name("thresholds.json")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        doc = None
    if isinstance(doc, Mapping):  # used only when it belongs to this model (model_identity)
        from slotmpe.transcribe.model_identity import model_identity, thresholds_mismatch

        if not (wrong := thresholds_mismatch(doc, model_identity(model_path))):
            return parse_thresholds(doc)
        log.warning("%s: ignored, tuned for another model than %s (%s)", path, model_path,
                    ", ".join(wrong))
    if Path(model_path).suffix.lower() == ".onnx":
        from slotmpe.transcribe.onnx_runner import read_onnx_metadata

        try:
            return parse_thresholds(read_onnx_metadata(model_path).get("thresholds"))
        except (OSError, ValueError, TranscriptionError):
            return {}
    return {}


def resolve_thresholds(
    model_path: str | os.PathLike[str], override: float | None = None
) -> tuple[float, float, str]:
    """``(mix_threshold, slot_threshold, source)`` for a model.

    ``override`` (``--threshold``) wins for both outputs; otherwise each comes from
    ``thresholds.json`` beside the model (or embedded in an ``.onnx`` export), else
    :data:`DEFAULT_THRESHOLD`. ``source`` says which.
    """
    if override is not None:
        return float(override), float(override), "command line"
    tuned = read_thresholds(model_path)
    mix = tuned.get("mix", DEFAULT_THRESHOLD)
    slots = tuned.get("slots", DEFAULT_THRESHOLD)
    if len(tuned) == 2:
        source = "tuned thresholds"
    elif tuned:
        source = "tuned thresholds (partly default 0.5)"
    else:
        source = f"default {DEFAULT_THRESHOLD:g}"
    return mix, slots, source
