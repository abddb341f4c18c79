"""Settings of a transcription: :class:`TranscribeOptions` and the tuned thresholds of a model."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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
        for name in ("min_note_ms", "merge_gap_ms"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number of milliseconds >= 0, got {v}")
        mf = self.max_frames
        if mf != DEFAULT_MAX_FRAMES and mf is not None and (not isinstance(mf, int) or mf < 2):
            raise ValueError(f"max_frames must be an int >= 2, None or 'default', got {mf!r}")

    def resolved_max_frames(self) -> int | None:
        """The chunk length of the whole-file inference (None = whole file in one pass)."""
        if self.max_frames == DEFAULT_MAX_FRAMES:
            return TRANSCRIBE_MAX_FRAMES
        return self.max_frames  # type: ignore[return-value]


THRESHOLDS_FILE: str = "thresholds.json"


def thresholds_beside(model_path: str | os.PathLike[str]) -> dict[str, float | None] | None:
    """``{"mix", "slots"}`` of the ``thresholds.json`` beside ``model_path`` when it belongs to
    that model (the ``exp``/``dataset``/``seed`` it records match the model's, see
    :mod:`slotmpe.transcribe.model_identity`; a file of another model is ignored with a warning),
    else None (also when there is no such file). ``slots`` is None where the file has none.

    Raises :class:`slotmpe.thresholds.ThresholdsError` naming the file when it is damaged
    (truncated, not JSON, a value that is not a probability): it is never replaced by defaults.
    """
    from slotmpe.thresholds import read_thresholds_file

    path = Path(model_path).with_name(THRESHOLDS_FILE)
    if not path.exists():
        return None
    doc = read_thresholds_file(path)
    from slotmpe.transcribe.model_identity import model_identity, thresholds_mismatch

    if wrong := thresholds_mismatch(doc, model_identity(model_path)):
        log.warning("%s: ignored, tuned for another model than %s (%s)", path, model_path,
                    ", ".join(wrong))
        return None
    return {"mix": doc["mix"], "slots": doc["slots"]}


def export_of(model_path: str | os.PathLike[str]) -> Path | None:
    """The ONNX export that belongs to ``model_path``: the file itself for an ``.onnx``; for a
    ``.pt`` checkpoint the ``.onnx`` beside it when that export records this checkpoint's identity
    (size and SHA-256, :func:`slotmpe.transcribe.runners.checkpoint_identity`); else None (also
    when the export cannot be read or onnxruntime is not installed)."""
    import importlib.util

    p = Path(model_path)
    if p.suffix.lower() == ".onnx":
        return p
    onnx_path = p.with_suffix(".onnx")
    if (p.suffix.lower() != ".pt" or not onnx_path.is_file() or not p.is_file()
            or importlib.util.find_spec("onnxruntime") is None):
        return None
    from slotmpe.transcribe.onnx_runner import read_onnx_metadata
    from slotmpe.transcribe.runners import checkpoint_identity

    try:
        info = read_onnx_metadata(onnx_path)
    except (OSError, ValueError, TranscriptionError):
        return None  # a damaged export: loading the model says so (and skips it)
    source = info.get("source") if isinstance(info.get("source"), Mapping) else {}
    recorded = source.get("identity") if isinstance(source.get("identity"), Mapping) else {}
    ident = checkpoint_identity(p)
    if recorded.get("sha256") == ident["sha256"] and recorded.get("size") == ident["size"]:
        return onnx_path
    return None


def embedded_thresholds(model_path: str | os.PathLike[str]
                        ) -> tuple[dict[str, float | None] | None, Path | None]:
    """``({"mix", "slots"}, export)``: the thresholds embedded in the ONNX export of
    ``model_path`` (:func:`export_of`: the ``.onnx`` itself, or the export of a ``.pt``), else
    ``(None, None)``; :class:`slotmpe.thresholds.ThresholdsError` for invalid embedded values."""
    from slotmpe.thresholds import check_thresholds
    from slotmpe.transcribe.onnx_runner import read_onnx_metadata

    onnx_path = export_of(model_path)
    if onnx_path is None:
        return None, None
    try:
        embedded = read_onnx_metadata(onnx_path).get("thresholds")
    except (OSError, ValueError, TranscriptionError):
        return None, None  # unreadable: loading the named .onnx reports it
    if not embedded:  # exported without a thresholds.json beside the checkpoint
        return None, None
    doc = check_thresholds(embedded, f"{onnx_path} (embedded)")
    return {"mix": doc["mix"], "slots": doc["slots"]}, onnx_path


def tuned_thresholds(model_path: str | os.PathLike[str]
                     ) -> tuple[dict[str, float | None] | None, str]:
    """``(thresholds, where)`` by the one rule for every way of naming a model: the
    ``thresholds.json`` beside ``model_path`` that belongs to it (:func:`thresholds_beside`), else
    those embedded in its ONNX export (:func:`embedded_thresholds`; for a ``model.pt`` the export
    beside it that was made from it, whether or not that export is the file that runs), else
    ``(None, "")``. A damaged file raises :class:`slotmpe.thresholds.ThresholdsError`."""
    beside = thresholds_beside(model_path)
    if beside is not None:
        return beside, str(Path(model_path).with_name(THRESHOLDS_FILE))
    embedded, onnx_path = embedded_thresholds(model_path)
    if embedded is not None:
        return embedded, f"embedded in {onnx_path}"
    return None, ""


def read_thresholds(model_path: str | os.PathLike[str]) -> dict[str, float]:
    """The tuned thresholds of a model (:func:`tuned_thresholds`) as ``{"mix": p[, "slots": p]}``
    (``slots`` left out where none was tuned); ``{}`` when there are none.
    Raises :class:`slotmpe.thresholds.ThresholdsError` for a damaged file."""
    tuned, _ = tuned_thresholds(model_path)
    return {k: float(v) for k, v in (tuned or {}).items() if v is not None}


def resolve_thresholds(
    model_path: str | os.PathLike[str], override: float | None = None
) -> tuple[float, float, str]:
    """``(mix_threshold, slot_threshold, source)`` for a model, by one rule whichever file names
    it (``model.pt``, its sibling ``model.onnx``, or the ``.onnx`` named directly):

    1. ``override`` (``--threshold``) for both outputs;
    2. ``thresholds.json`` beside the model when it belongs to it;
    3. the thresholds embedded in the model's ONNX export;
    4. :data:`DEFAULT_THRESHOLD` for both, with a logged warning.

    A slot threshold missing from 2 or 3 (a model tuned without slots) is
    :data:`DEFAULT_THRESHOLD`. ``source`` says which. A damaged ``thresholds.json`` (or invalid
    embedded values) raises :class:`slotmpe.thresholds.ThresholdsError` naming the file.
    """
    if override is not None:
        return float(override), float(override), "command line"
    tuned, where = tuned_thresholds(model_path)
    if tuned is None:
        log.warning("no tuned thresholds for %s (no %s of this model beside it, none embedded in "
                    "an ONNX export of it): using the default %g; pass --threshold, or put the "
                    "%s of its training run beside it", model_path, THRESHOLDS_FILE,
                    DEFAULT_THRESHOLD, THRESHOLDS_FILE)
        return DEFAULT_THRESHOLD, DEFAULT_THRESHOLD, f"default {DEFAULT_THRESHOLD:g}"
    mix = float(tuned["mix"])  # type: ignore[arg-type]
    if tuned["slots"] is None:
        return mix, DEFAULT_THRESHOLD, f"tuned, {where}; slots partly default {DEFAULT_THRESHOLD:g}"
    return mix, float(tuned["slots"]), f"tuned, {where}"
