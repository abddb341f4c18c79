"""Wall time per rule of a workflow run, from the ``benchmark:`` files under ``benchmarks/out``.

Usage: ``python benchmarks/rule_times.py [benchmarks/out]``; prints one line per rule folder
(``benchmarks/out/<rule>/...``: jobs, total, longest and mean wall seconds, peak RSS) and the sum.
Jobs of a rule may have run in parallel, so the sum is job time, not the run's wall time. The
files are read by :func:`slotmpe.results.publish.wall_times`, as ``environment.json`` of a
published run records them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from slotmpe.results.publish import wall_times


def rule_table(bench_dir: Path) -> pd.DataFrame:
    """One row per rule folder: ``rule, jobs, total_s, max_s, mean_s, max_rss_mb``."""
    df = pd.DataFrame(wall_times(bench_dir))
    if df.empty:
        return df
    df["rule"] = df["benchmark"].str.split("/").str[0]
    g = df.groupby("rule")
    return pd.DataFrame({
        "jobs": g.size(), "total_s": g["s"].sum().round(1), "max_s": g["s"].max().round(1),
        "mean_s": g["s"].mean().round(1), "max_rss_mb": g["max_rss_mb"].max(),
    }).sort_values("total_s", ascending=False).reset_index()


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/out")
    table = rule_table(root)
    if table.empty:
        raise SystemExit(f"no benchmark files under {root}")
    print(table.to_string(index=False))
    print(f"sum over rules: {table['total_s'].sum():.0f} s of job wall time")


if __name__ == "__main__":
    main()
