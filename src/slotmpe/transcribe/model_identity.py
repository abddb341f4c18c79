"""Which training run a model file comes from, and whether a ``thresholds.json`` belongs to it.

A run is identified by ``exp``, ``dataset`` and ``seed``:

* a ``model.pt`` records them in its checkpoint (``experiment`` and ``extra``, written by
  :func:`slotmpe.training.train_experiment` and :func:`slotmpe.derive.derive_checkpoint`);
* an ``.onnx`` export records them in its ``slotmpe`` metadata (``experiment``; ``source``
  ``dataset``/``seed`` for exports made since this check exists);
* ``thresholds.json`` (:func:`slotmpe.evaluation.tune_thresholds`) records the run it was tuned
  for.

A sibling ``thresholds.json`` is used for a model only when no entry recorded on both sides
differs (:func:`thresholds_mismatch`): a 1a export placed beside 3c's thresholds keeps its own
embedded thresholds. A hand-written file without ``exp``/``dataset``/``seed`` is trusted.
Reading the identity of an ``.onnx`` file never imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

IDENTITY_KEYS: tuple[str, ...] = ("exp", "dataset", "seed")


def identity_of_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"exp", "dataset", "seed"}`` (values or None) of a checkpoint's meta dict."""
    meta = meta or {}
    extra = meta.get("extra") if isinstance(meta.get("extra"), Mapping) else {}
    exp = extra.get("exp") or meta.get("experiment") or meta.get("exp")
    return {"exp": None if exp is None else str(exp), "dataset": extra.get("dataset"),
            "seed": extra.get("seed")}


def model_identity(model_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The run identity of a ``.pt`` checkpoint or ``.onnx`` export (all None if unreadable)."""
    p = Path(model_path)
    unknown: dict[str, Any] = dict.fromkeys(IDENTITY_KEYS)
    if p.suffix.lower() == ".onnx":
        from slotmpe.transcribe.errors import TranscriptionError
        from slotmpe.transcribe.onnx_runner import read_onnx_metadata

        try:
            info = read_onnx_metadata(p)
        except (OSError, ValueError, TranscriptionError):
            return unknown
        source = info.get("source") if isinstance(info.get("source"), Mapping) else {}
        return {"exp": info.get("experiment") or source.get("experiment"),
                "dataset": source.get("dataset"), "seed": source.get("seed")}
    try:
        import torch

        ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a (zip) torch file: loading the model reports it properly
        return unknown
    return identity_of_meta(ckpt) if isinstance(ckpt, Mapping) else unknown


def thresholds_mismatch(doc: Mapping[str, Any], identity: Mapping[str, Any]) -> list[str]:
    """Entries where a thresholds document and a model identity differ, as ``"key a != b"``
    (empty: the thresholds belong to the model, or one side does not record the key)."""
    out = []
    for key in IDENTITY_KEYS:
        a, b = doc.get(key), identity.get(key)
        if a is not None and b is not None and str(a) != str(b):
            out.append(f"{key} {a} != {b}")
    return out


__all__ = ["IDENTITY_KEYS", "identity_of_meta", "model_identity", "thresholds_mismatch"]
