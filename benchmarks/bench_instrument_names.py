"""How often ``slotmpe transcribe`` names a slot's instrument right, and how often "unknown"
(issues 24 and 29, named instruments).

For every file of a split of a feature cache (``data/<dataset>/features``) the model runs as
``slotmpe transcribe`` runs it, the slots are matched to the file's stems by the evaluation's
Hungarian matching, and every matched slot's name is compared with its stem's instrument label
(and the named instrument's family with the stem's family): :func:`slotmpe.name_calibration.
collect_name_pairs`, then the naming rule of :func:`slotmpe.instruments.names_from_similarities`.

Prototypes: those the model carries (``extra["instrument_prototypes"]`` of ``model.pt`` or the
ONNX metadata), else built from ``--embeddings`` (default: ``results/<dataset>/timbre/
embeddings.parquet`` of the model's run). With ``--calibrate`` the names are first calibrated on
the validation split (:func:`slotmpe.name_calibration.calibrate_checkpoint`: temperature and
"unknown" cut-off, stored in ``model.pt``, or in ``--calibrated-out``) and then measured on
``--split``.

Reported (JSON on stdout, and ``--out``), for the calibrated rule (where the prototypes carry a
calibration) and for the similarity-only rule (``min_similarity``, the rule before issue 29):
matched pairs, instrument accuracy (right names / matched slots; "unknown" counts as not right),
accuracy of the named slots (right / named), family accuracy and the share named "unknown", over
all matched slots and over the *written* ones (activity at least ``--activity-threshold``, the
slots that become MIDI tracks); and how well each score separates a right nearest prototype from
a wrong one (ROC AUC over all matched slots: the best cosine, the margin of the best cosine over
the second best and the calibrated confidence); plus a confusion count per (label, named) pair.

Usage::

    PYTHONPATH=src python benchmarks/bench_instrument_names.py \\
        results/chamber/3c/seed0/model.pt data/chamber/features [--split test] \\
        [--calibrate [--calibrated-out FILE]] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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
    ``protos`` (calibrated or not) and ``min_similarity``."""
    from slotmpe.instruments import UNKNOWN, family_of, names_from_similarities

    named = names_from_similarities(sims, protos, min_similarity) if len(sims) else []
    counts = {"all": Counter(), "written": Counter()}
    confusion: Counter[tuple[str, str]] = Counter()
    for n, label, family, act in zip(named, labels, families, activity, strict=True):
        name = n.instrument
        confusion[(label, name)] += 1
        for key in ("all", "written") if act >= activity_threshold else ("all",):
            c = counts[key]
            c["pairs"] += 1
            c["instrument_right"] += name == label
            c["family_right"] += name != UNKNOWN and family_of(name, protos) == family
            c["unknown"] += name == UNKNOWN
    out: dict[str, Any] = {}
    for key, c in counts.items():
        n_pairs, n_named = c["pairs"], c["pairs"] - c["unknown"]
        out[key] = {"pairs": n_pairs,
                    "instrument_accuracy": c["instrument_right"] / n_pairs if n_pairs else None,
                    "named_accuracy": c["instrument_right"] / n_named if n_named else None,
                    "family_accuracy": c["family_right"] / n_pairs if n_pairs else None,
                    "unknown_rate": c["unknown"] / n_pairs if n_pairs else None}
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


def _line(name: str, r: Mapping[str, Any]) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f} %"

    return (f"{name}: {r['pairs']} matched slots, instrument {pct(r['instrument_accuracy'])} "
            f"(of the named: {pct(r['named_accuracy'])}), family {pct(r['family_accuracy'])}, "
            f"unknown {pct(r['unknown_rate'])}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="model.pt (or .onnx) of a timbre-head experiment")
    ap.add_argument("features", type=Path, help="feature cache folder, e.g. data/chamber/features")
    ap.add_argument("--split", default="test")
    ap.add_argument("--embeddings", type=Path, default=None,
                    help="embeddings.parquet for prototypes when the model carries none")
    ap.add_argument("--min-similarity", type=float, default=None)
    ap.add_argument("--activity-threshold", type=float, default=0.5)
    ap.add_argument("--calibrate", action="store_true",
                    help="first calibrate the names on the validation split (writes model.pt)")
    ap.add_argument("--calibrated-out", type=Path, default=None,
                    help="with --calibrate: write the calibrated checkpoint here instead")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    model = args.model
    if args.calibrate:
        from slotmpe.name_calibration import calibrate_checkpoint

        calibrate_checkpoint(model, args.features, "val", args.embeddings, args.calibrated_out)
        model = args.calibrated_out or model
    res = naming_accuracy(model, args.features, args.split, args.embeddings,
                          args.min_similarity, args.activity_threshold)
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    rule = "calibrated" if res["calibration"] else "similarity only"
    for key in ("all", "written"):
        if res[key]["pairs"]:
            print(_line(f"{key} ({rule})", res[key]), file=sys.stderr)
            if res["calibration"]:
                print(_line(f"{key} (similarity only)", res["similarity_only"][key]),
                      file=sys.stderr)
    sep = ", ".join(f"{k} {v:.3f}" for k, v in res["separation"].items() if v is not None)
    print(f"ROC AUC right vs wrong nearest prototype: {sep or '-'}", file=sys.stderr)
    return res


if __name__ == "__main__":
    main()
