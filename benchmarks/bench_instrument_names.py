"""Print how often ``slotmpe transcribe`` names a slot's instrument right (issue 24, named instruments).

For every file of a split of a feature cache (``data/<dataset>/features``) the model runs as
``slotmpe transcribe`` runs it (:func:`slotmpe.transcribe.runners.as_runner`, whole file, the
post-processing of its experiment), the slots are matched to the file's stems by the evaluation's
Hungarian matching (:func:`slotmpe.metrics.match_slots`), every slot is named by
:func:`slotmpe.instruments.name_slots`, and the name of each matched slot is compared with its
stem's instrument label (and the named instrument's family with the stem's family).

Prototypes: those the model carries (``extra["instrument_prototypes"]`` of ``model.pt`` or the
ONNX metadata), else built from ``--embeddings`` (default: ``results/<dataset>/timbre/
embeddings.parquet`` of the model's run, i.e. ``MODEL/../../../timbre/embeddings.parquet``), so the
figure can be measured before the prototypes are stored in the checkpoint.

Reported (JSON on stdout, and ``--out``): matched pairs, instrument accuracy, family accuracy and
the share named "unknown", over all matched slots and over the *written* ones (activity at least
``--activity-threshold``, the slots that become MIDI tracks), plus a confusion count per
(label, named) pair.

Usage::

    PYTHONPATH=src python benchmarks/bench_instrument_names.py \\
        results/chamber/3c/seed0/model.pt data/chamber/features [--split test] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from slotmpe.naming_eval import naming_accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="model.pt (or .onnx) of a timbre-head experiment")
    ap.add_argument("features", type=Path, help="feature cache folder, e.g. data/chamber/features")
    ap.add_argument("--split", default="test")
    ap.add_argument("--embeddings", type=Path, default=None,
                    help="embeddings.parquet for prototypes when the model carries none")
    ap.add_argument("--min-similarity", type=float, default=None)
    ap.add_argument("--activity-threshold", type=float, default=0.5)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    res = naming_accuracy(args.model, args.features, args.split, args.embeddings,
                          args.min_similarity, args.activity_threshold)
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    for key in ("all", "written"):
        r = res[key]
        if r["pairs"]:
            print(f"{key}: {r['pairs']} matched slots, instrument {100 * r['instrument_accuracy']:.1f} %,"
                  f" family {100 * r['family_accuracy']:.1f} %, unknown "
                  f"{100 * r['unknown_rate']:.1f} %", file=sys.stderr)


if __name__ == "__main__":
    main()
