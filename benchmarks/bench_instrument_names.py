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
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slotmpe.naming_eval import name_figures, naming_accuracy, separation

__all__ = ["main", "name_figures", "naming_accuracy", "separation"]


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
