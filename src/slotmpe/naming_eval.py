"""How often ``slotmpe transcribe`` names a slot's instrument right (issue 24, named instruments).

For every file of a split of a feature cache (``data/<dataset>/features``) the model runs as
``slotmpe transcribe`` runs it (:func:`slotmpe.transcribe.runners.as_runner`, whole file, the
post-processing of its experiment), the slots are matched to the file's stems by the evaluation's
Hungarian matching (:func:`slotmpe.name_calibration.collect_name_pairs`), every slot is named by
the naming rule ``transcribe`` applies (:func:`slotmpe.instruments.names_from_similarities`:
calibrated, with "unknown" below the tuned confidence, where the model carries a calibration), and
the name of each matched slot is compared with its
stem's instrument label (and the named instrument's family with the stem's family).

Prototypes: those the model carries (``extra["instrument_prototypes"]`` of ``model.pt`` or the
ONNX metadata), else built from ``embeddings`` (default: ``results/<dataset>/timbre/
embeddings.parquet`` of the model's run, i.e. ``MODEL/../../../timbre/embeddings.parquet``).

:func:`naming_accuracy` returns matched pairs, instrument accuracy, family accuracy and the share
named "unknown", over all matched slots and over the *written* ones (activity at least
``activity_threshold``, the slots that become MIDI tracks), plus a confusion count per (label,
named) pair, the same figures under the similarity-only rule, and how well each score separates
right from wrong names (:func:`separation`). ``benchmarks/bench_instrument_names.py`` prints it; the shipped model's card
(:mod:`slotmpe.pretrained.card`) reports it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def separation(sims: np.ndarray, labels: Sequence[str], protos: Mapping[str, Any]
               ) -> dict[str, float | None]:
    """ROC AUC of each score for "the nearest prototype is the stem's instrument" over the rows
    of ``sims`` ``(N, n)``: ``similarity`` (best cosine), ``margin`` (best minus second-best
    cosine) and, for calibrated prototypes, ``confidence``; ``None`` where only one class occurs."""
    from sklearn.metrics import roc_auc_score

    from slotmpe.instruments import CALIBRATION_KEY, name_probabilities

    names = list(protos["names"])
    sims = np.asarray(sims, dtype=np.float64).reshape(-1, len(names))
    if len(sims) == 0:
        return {"similarity": None, "margin": None, "confidence": None}
    best = sims.argmax(axis=1)
    right = np.array([names[j] == lab for j, lab in zip(best, labels, strict=True)])
    srt = np.sort(sims, axis=1)
    scores: dict[str, np.ndarray | None] = {
        "similarity": srt[:, -1],
        "margin": srt[:, -1] - srt[:, -2] if sims.shape[1] > 1 else None,
        "confidence": None,
    }
    cal = protos.get(CALIBRATION_KEY)
    if cal is not None:
        scores["confidence"] = name_probabilities(sims, float(cal["temperature"])).max(axis=1)
    both = 0 < right.sum() < len(right)
    return {k: (float(roc_auc_score(right, v)) if both and v is not None else None)
            for k, v in scores.items()}


def name_figures(sims: np.ndarray, labels: Sequence[str], families: Sequence[str],
                 activity: np.ndarray, protos: Mapping[str, Any], min_similarity: float,
                 activity_threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy figures of the names of matched slots (module docstring) under the naming rule of
    ``protos`` (calibrated or not) and ``min_similarity``: per ``all`` / ``written`` slots,
    ``instrument_accuracy`` (instrument named and right / pairs), ``family_accuracy`` (family of
    the written name right / pairs), ``unknown_rate``, ``family_named_rate`` (written at the
    family level, the calibrated fallback) and ``named_accuracy`` (right at the level written,
    instrument or family / slots not "unknown")."""
    from slotmpe.instruments import (
        UNKNOWN,
        family_of,
        is_family_name,
        name_is_right,
        names_from_similarities,
    )

    named = names_from_similarities(sims, protos, min_similarity) if len(sims) else []
    counts = {"all": Counter(), "written": Counter()}
    confusion: Counter[tuple[str, str]] = Counter()
    for n, label, family, act in zip(named, labels, families, activity, strict=True):
        name = n.instrument
        confusion[(label, name)] += 1
        for key in ("all", "written") if act >= activity_threshold else ("all",):
            c = counts[key]
            at_family = is_family_name(name, protos)
            fam_right = name != UNKNOWN and family_of(name, protos) == family
            c["pairs"] += 1
            c["instrument_right"] += name == label
            c["family_right"] += fam_right
            c["unknown"] += name == UNKNOWN
            c["family_named"] += at_family
            c["written_right"] += name_is_right(name, label, family, protos)
    out: dict[str, Any] = {}
    for key, c in counts.items():
        n_pairs, n_named = c["pairs"], c["pairs"] - c["unknown"]
        out[key] = {"pairs": n_pairs,
                    "instrument_accuracy": c["instrument_right"] / n_pairs if n_pairs else None,
                    "named_accuracy": c["written_right"] / n_named if n_named else None,
                    "family_accuracy": c["family_right"] / n_pairs if n_pairs else None,
                    "unknown_rate": c["unknown"] / n_pairs if n_pairs else None,
                    "family_named_rate": c["family_named"] / n_pairs if n_pairs else None}
    out["confusion"] = [{"label": a, "named": b, "count": k}
                        for (a, b), k in sorted(confusion.items())]
    return out


def naming_accuracy(
    model_path: str | os.PathLike[str],
    feature_dir: str | os.PathLike[str],
    split: str = "test",
    embeddings: str | os.PathLike[str] | None = None,
    min_similarity: float | None = None,
    activity_threshold: float = 0.5,
    max_frames: int | None = 20000,
) -> dict[str, Any]:
    """Accuracy of the named instruments of ``model_path`` on ``split`` of ``feature_dir``
    (module docstring). Raises :class:`ValueError` for a model without a timbre head."""
    from slotmpe.instruments import CALIBRATION_KEY, DEFAULT_MIN_SIMILARITY
    from slotmpe.name_calibration import collect_name_pairs, prototypes_for
    from slotmpe.transcribe import load_model

    model_path, feature_dir = Path(model_path), Path(feature_dir)
    model, meta = load_model(model_path)
    protos = prototypes_for(meta, model_path, Path(embeddings) if embeddings else None)
    min_sim = DEFAULT_MIN_SIMILARITY if min_similarity is None else min_similarity
    pairs = collect_name_pairs(model, meta, feature_dir, split, protos, max_frames)
    cal = protos.get(CALIBRATION_KEY)
    plain = {k: v for k, v in protos.items() if k != CALIBRATION_KEY}
    args = (pairs.sims, pairs.labels, pairs.families, pairs.activity)
    out: dict[str, Any] = {"model": str(model_path), "features": str(feature_dir), "split": split,
                           "n_files": len(set(pairs.pieces)), "min_similarity": min_sim,
                           "prototypes": protos["source"], "instruments": protos["names"],
                           "calibration": cal,
                           "separation": separation(pairs.sims, pairs.labels, protos)}
    main = name_figures(*args, protos, min_sim, activity_threshold)
    out.update(main)  # the names transcribe writes (calibrated where the model is)
    out["similarity_only"] = ({k: v for k, v in main.items() if k != "confusion"} if cal is None
                              else {k: v for k, v in name_figures(*args, plain, min_sim,
                                                                  activity_threshold).items()
                                    if k != "confusion"})
    return out


__all__ = ["name_figures", "naming_accuracy", "separation"]
