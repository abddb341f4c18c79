"""Instrument names calibrated on validation (issue 29): slots of a trained model vs their stems.

:mod:`slotmpe.instruments` names a slot after the prototype nearest to its timbre embedding and,
with a ``"calibration"`` entry in the prototypes, writes :data:`~slotmpe.instruments.UNKNOWN`
below a confidence tuned on validation. This module produces that entry from a trained model:

* :func:`collect_name_pairs` runs the model on every file of a split of a feature cache as
  ``slotmpe transcribe`` runs it (:func:`slotmpe.transcribe.runners.as_runner`, whole file, the
  post-processing of its experiment), matches the slots to the file's stems with the evaluation's
  Hungarian matching (:func:`slotmpe.metrics.match_slots`) and keeps, per matched slot, its cosine
  similarity to every prototype and its stem's instrument label (:class:`NamePairs`);
* :func:`calibrate_checkpoint` fits the calibration on the validation pairs
  (:func:`slotmpe.instruments.calibrate`) and writes the calibrated prototypes into the
  checkpoint's ``extra["instrument_prototypes"]`` (atomically), from where ``slotmpe transcribe``
  and the ONNX export (its metadata) take them.

Prototypes: those the model carries, else built from the stem-embedding table of its run
(:func:`prototypes_for`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slotmpe.utils import atomic_path, get_logger

log = get_logger(__name__)

DEFAULT_MAX_FRAMES: int = 20000  # whole-file inference up to this length (as the evaluation)


@dataclass
class NamePairs:
    """Matched (slot, stem) pairs of one split.

    Attributes:
        sims: ``(N, n)`` cosine similarity of each matched slot to each of the ``n`` prototypes.
        labels: ``N`` instrument labels of the stems.
        families: ``N`` family labels of the stems.
        activity: ``(N,)`` activity probability of each slot (1 where the model has none).
        pieces: ``N`` piece ids.
    """

    sims: np.ndarray
    labels: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    activity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pieces: list[str] = field(default_factory=list)


def prototypes_for(meta: dict[str, Any], model_path: Path,
                   embeddings: Path | None = None) -> dict[str, Any]:
    """The prototypes the model carries, else those of ``embeddings`` (default: the run's
    ``results/<dataset>/timbre/embeddings.parquet``, i.e. ``MODEL/../../../timbre/``).
    Raises :class:`FileNotFoundError` naming the model when neither exists."""
    from slotmpe.instruments import prototypes_from_embeddings
    from slotmpe.transcribe.naming import prototypes_of

    protos = prototypes_of(meta)
    if protos is not None:
        return protos
    path = embeddings or Path(model_path).resolve().parents[2] / "timbre" / "embeddings.parquet"
    if not Path(path).is_file():
        raise FileNotFoundError(f"{model_path}: the model carries no instrument prototypes and "
                                f"{path} does not exist (pass the run's embeddings.parquet)")
    return prototypes_from_embeddings(path)


def collect_name_pairs(model: Any, meta: dict[str, Any], feature_dir: str | os.PathLike[str],
                       split: str, protos: dict[str, Any],
                       max_frames: int | None = DEFAULT_MAX_FRAMES) -> NamePairs:
    """:class:`NamePairs` of ``model`` (a slot model and its checkpoint ``meta``, as
    :func:`slotmpe.transcribe.load_model` returns them) on ``split`` of ``feature_dir``.

    Raises :class:`ValueError` for a model without a timbre head or a split without files.
    """
    from slotmpe.data import load_piece, read_index
    from slotmpe.instruments import similarities
    from slotmpe.metrics import match_slots
    from slotmpe.transcribe.notes import postprocess_probs
    from slotmpe.transcribe.runners import as_runner

    feature_dir = Path(feature_dir)
    runner = as_runner(model, meta)
    if not getattr(runner.experiment, "timbre_head", False):
        raise ValueError(f"experiment {getattr(runner.experiment, 'name', '?')} has no timbre "
                         "head, so its slots are not named by instrument")
    index = read_index(feature_dir)
    pieces = index.loc[index["split"] == split, "piece_id"].astype(str).tolist()
    if not pieces:
        raise ValueError(f"{feature_dir}: no {split!r} pieces")
    n = len(protos["names"])
    sims: list[np.ndarray] = []
    out = NamePairs(sims=np.zeros((0, n)))
    act_all: list[float] = []
    for pid in pieces:
        piece = load_piece(feature_dir / f"{pid}.npz")
        probs = postprocess_probs(runner.predict(np.asarray(piece["cqt"], np.float32), max_frames),
                                  meta)
        targets = np.asarray(piece["source_rolls"]).astype(bool)
        if targets.shape[0] == 0 or "slots" not in probs or "timbre" not in probs:
            continue
        slots_idx, src_idx = match_slots(probs["slots"], targets, targets.any(axis=(1, 2)))
        if len(slots_idx) == 0:
            continue
        sim = similarities(np.asarray(probs["timbre"])[slots_idx], protos)
        act = np.asarray(probs.get("activity", np.ones(probs["slots"].shape[0]))).reshape(-1)
        sims.append(sim)
        for k, s in zip(slots_idx, src_idx, strict=True):
            out.labels.append(str(piece["instruments"][s]))
            out.families.append(str(piece["families"][s]))
            out.pieces.append(pid)
            act_all.append(float(act[k]))
    out.sims = np.concatenate(sims) if sims else np.zeros((0, n))
    out.activity = np.asarray(act_all, dtype=np.float64)
    return out


def calibrate_checkpoint(
    model_path: str | os.PathLike[str],
    feature_dir: str | os.PathLike[str],
    split: str = "val",
    embeddings: str | os.PathLike[str] | None = None,
    out_path: str | os.PathLike[str] | None = None,
    max_frames: int | None = DEFAULT_MAX_FRAMES,
) -> dict[str, Any]:
    """Calibrate the instrument names of ``model_path`` on ``split`` and store the result.

    Writes the checkpoint, unchanged but for ``extra["instrument_prototypes"]`` (now with its
    ``"calibration"`` entry, :func:`slotmpe.instruments.calibrate` with the stems' families, so
    the family fallback is calibrated too), to ``out_path`` (default:
    ``model_path`` itself), atomically. Returns the calibration entry. Raises
    :class:`ValueError` when the split has no matched slot to calibrate on.
    """
    import torch

    from slotmpe.instruments import calibrate
    from slotmpe.models.io import read_checkpoint
    from slotmpe.transcribe import load_model

    model_path = Path(model_path)
    if model_path.suffix != ".pt":
        raise ValueError(f"{model_path}: calibrate a model.pt checkpoint (the ONNX export "
                         "takes the calibration from it)")
    model, meta = load_model(model_path)
    protos = prototypes_for(meta, model_path, Path(embeddings) if embeddings else None)
    pairs = collect_name_pairs(model, meta, feature_dir, split, protos, max_frames)
    if not pairs.labels:
        raise ValueError(f"{feature_dir}: no matched slot in the {split!r} files to calibrate "
                         f"the names of {model_path} on")
    calibrated = calibrate(protos, pairs.sims, pairs.labels,
                           source=f"{feature_dir} ({split}: {len(set(pairs.pieces))} files, "
                                  f"{len(pairs.labels)} matched slots)", families=pairs.families)
    ckpt = read_checkpoint(model_path)
    extra = dict(ckpt.get("extra") or {})
    extra["instrument_prototypes"] = calibrated
    ckpt["extra"] = extra
    with atomic_path(Path(out_path) if out_path else model_path) as tmp:
        torch.save(ckpt, tmp)
    cal = calibrated["calibration"]
    log.info("%s: names calibrated on %s: temperature %.4f, min_confidence %.3f, family cut %s "
             "(accuracy %.1f %%, %.1f %% unknown at the instrument cut)", model_path, split,
             cal["temperature"], cal["min_confidence"], cal.get("family_min_confidence"),
             100 * cal["accuracy"], 100 * cal["unknown_rate"])
    return cal


__all__ = ["DEFAULT_MAX_FRAMES", "NamePairs", "calibrate_checkpoint", "collect_name_pairs",
           "prototypes_for"]
