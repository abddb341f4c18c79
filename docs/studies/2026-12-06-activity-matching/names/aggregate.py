"""Mean and std over seeds of the calibrated naming figures of the written slots (test split).

Reads the ``<dataset>_<exp>_s<seed>.json`` files of ``benchmarks/bench_instrument_names.py`` in
a folder and writes ``OUT.csv`` (per dataset and experiment) and ``OUT.per_seed.csv``::

    python aggregate.py . ../names_test
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

COLS = ["right_at_level_written", "right_of_named", "unknown", "family_named", "instrument_right",
        "family_right", "auc_confidence"]


def record(path: Path) -> dict[str, object]:
    """One seed's figures (percent) from its JSON."""
    ds, exp, seed = path.stem.split("_")
    d = json.loads(path.read_text())
    w = d["written"]
    named = w["named_accuracy"] or 0.0
    return {"dataset": ds, "exp": exp, "seed": int(seed[1:]), "pairs": w["pairs"],
            "instrument_right": 100 * w["instrument_accuracy"],
            "family_right": 100 * w["family_accuracy"], "right_of_named": 100 * named,
            "right_at_level_written": 100 * named * (1 - w["unknown_rate"]),
            "family_named": 100 * w["family_named_rate"], "unknown": 100 * w["unknown_rate"],
            "auc_confidence": d["separation"]["confidence"]}


def main(src: Path, out: Path) -> pd.DataFrame:
    """Write the per-seed and the aggregated CSV; return the aggregate."""
    df = pd.DataFrame([record(f) for f in sorted(src.glob("*_s[0-9].json"))])
    df.round(2).to_csv(out.with_suffix(".per_seed.csv"), index=False)
    g = df.groupby(["dataset", "exp"])
    agg = g[COLS].agg(["mean", "std"]).round(2)
    agg.columns = [f"{a}_{b}" for a, b in agg.columns]
    agg["seeds"] = g.size()
    agg = agg.reset_index()
    agg.to_csv(out.with_suffix(".csv"), index=False)
    return agg


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), Path(sys.argv[2])).to_string())
