"""Rank experiment rows by validation slot F1 (issue 29's screening; the test split is not read).

Every run's ``thresholds.json`` (the workflow's ``tune_thresholds`` rule) holds the slot and
mixture frame F1 on its dataset's validation files at the thresholds tuned there
(``val_f1_slots``, ``val_f1_mix``). This script gathers them for ``--rows`` x ``--datasets`` x
``--seeds`` under a results tree and prints (and with ``--out`` writes, as CSV and Markdown) one
line per row: the per-dataset validation slot F1 (mean over the seeds found), their mean over the
datasets, and the rank by that mean. A row missing on some dataset is listed with what it has and
ranked last, with the missing runs named. Only ``thresholds.json`` is read, never ``metrics.json``
(the test figures), so ranking cannot look at the test split.

Usage::

    python benchmarks/rank_on_validation.py --results results \\
        --rows 2b 3c 4h 4i 4j 4k 4l 4m --datasets chamber electro --seeds 0 \\
        [--out docs/studies/<date>-extensions/screen]
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd


def gather(results: Path, rows: Sequence[str], datasets: Sequence[str],
           seeds: Sequence[int]) -> pd.DataFrame:
    """One line per run found: ``exp, dataset, seed, val_f1_slots, val_f1_mix`` (percent)."""
    found = []
    for exp in rows:
        for ds in datasets:
            for seed in seeds:
                path = results / ds / exp / f"seed{seed}" / "thresholds.json"
                if not path.exists():
                    continue
                try:
                    th = json.loads(path.read_text())
                    found.append({"exp": exp, "dataset": ds, "seed": seed,
                                  "val_f1_slots": float(th["val_f1_slots"]),
                                  "val_f1_mix": float(th["val_f1_mix"])})
                except (ValueError, KeyError) as e:
                    raise ValueError(f"{path}: not a thresholds file with validation F1 ({e})") \
                        from e
    return pd.DataFrame(found, columns=["exp", "dataset", "seed", "val_f1_slots", "val_f1_mix"])


def rank(runs: pd.DataFrame, rows: Sequence[str], datasets: Sequence[str],
         seeds: Sequence[int]) -> pd.DataFrame:
    """Rows ranked by the mean over ``datasets`` of their seed-mean validation slot F1.

    Columns: ``rank, exp``, one ``val_slot_f1_<dataset>`` per dataset, ``mean``, ``seeds``
    (runs found / expected) and ``missing`` (``dataset/seed`` of the runs not found). A row with
    a missing dataset gets no mean and ranks after every complete row."""
    out = []
    for exp in rows:
        r = runs[runs["exp"] == exp]
        line: dict[str, object] = {"exp": exp}
        vals = []
        for ds in datasets:
            v = r.loc[r["dataset"] == ds, "val_f1_slots"]
            line[f"val_slot_f1_{ds}"] = round(float(v.mean()), 2) if len(v) else math.nan
            vals.append(float(v.mean()) if len(v) else math.nan)
        have = {(d, int(s)) for d, s in zip(r["dataset"], r["seed"], strict=True)}
        missing = [f"{d}/{s}" for d in datasets for s in seeds if (d, s) not in have]
        line["mean"] = math.nan if any(math.isnan(v) for v in vals) else round(sum(vals) / len(vals),
                                                                                  2)
        line["seeds"] = f"{len(r)}/{len(datasets) * len(seeds)}"
        line["missing"] = " ".join(missing)
        out.append(line)
    table = pd.DataFrame(out)
    table = table.sort_values("mean", ascending=False, na_position="last", kind="stable")
    table.insert(0, "rank", range(1, len(table) + 1))
    return table.reset_index(drop=True)


def markdown(table: pd.DataFrame) -> str:
    """The ranking as a Markdown table (``–`` for a missing figure)."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in table.itertuples(index=False):
        cells = ["–" if isinstance(v, float) and math.isnan(v) else str(v) for v in r]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Parse the arguments, print the ranking, write it with ``--out``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--rows", nargs="+", required=True)
    p.add_argument("--datasets", nargs="+", default=["chamber", "electro"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--out", type=Path, default=None, help="writes OUT.csv and OUT.md")
    args = p.parse_args(argv)
    runs = gather(args.results, args.rows, args.datasets, args.seeds)
    if runs.empty:
        raise SystemExit(f"{args.results}: no thresholds.json of rows {' '.join(args.rows)}")
    table = rank(runs, args.rows, args.datasets, args.seeds)
    md = markdown(table)
    print(md, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out.with_suffix(".csv"), index=False)
        args.out.with_suffix(".md").write_text(md)
    return table


if __name__ == "__main__":
    main()
