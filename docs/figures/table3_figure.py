"""Draw ``docs/figures/table3_vs_paper.png``: mixture F1 and slot F1 of the published run's Table III
beside the paper's figure for each row (README's one figure).

Reads ``docs/runs/2026-12-06-2f444d4/table3.csv`` (ours: embedded datasets; the seeds published so far) and
``src/slotmpe/data/reference/paper_table3.csv`` (the paper: URMP / mshoxxDB), pairing chamber with
URMP and electro with mshoxxDB as ``results/table3_vs_paper.md`` does. Different data: the
comparison shows trends only. Run from the repository root::

    python docs/figures/table3_figure.py [RUN_DIR] [-o OUT.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ALIASES = {"chamber": "urmp", "electro": "mshoxxdb"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, nargs="?", default=ROOT / "docs/runs/2026-12-06-2f444d4")
    ap.add_argument("-o", "--out", type=Path, default=Path(__file__).with_name("table3_vs_paper.png"))
    args = ap.parse_args()
    ours = pd.read_csv(args.run / "table3.csv")
    paper = pd.read_csv(ROOT / "src/slotmpe/data/reference/paper_table3.csv")
    paper = paper.set_index(["exp", "dataset"])
    labels = [f"{e}\n{d}" for e, d in zip(ours["exp"], ours["dataset"], strict=True)]
    x = np.arange(len(ours))
    fig, axes = plt.subplots(2, 1, figsize=(10, 5.6), sharex=True)
    for ax, col, title in zip(axes, ("std_f1", "slot_f1"), ("mixture F1 (%)", "slot (stem) F1 (%)"),
                              strict=True):
        ref = [paper.loc[(e, ALIASES[d]), col] if (e, ALIASES[d]) in paper.index else np.nan
               for e, d in zip(ours["exp"], ours["dataset"], strict=True)]
        n = int(ours["n_seeds"].max()) if "n_seeds" in ours else 1
        err = ours[f"{col}_std"] if f"{col}_std" in ours and n > 1 else None
        ax.bar(x - 0.2, ours[col], 0.4, yerr=err, capsize=2,
               label=f"ours (embedded chamber / electro, mean of {n} seed{'s' if n > 1 else ''}"
                     f"{', ± std' if err is not None else ''})", color="#1f77b4")
        ax.bar(x + 0.2, ref, 0.4, label="paper (URMP / mshoxxDB)", color="#bbbbbb")
        ax.set_ylabel(title)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(0, 120)  # room for the legend
    axes[0].set_yticks(range(0, 101, 20))
    axes[0].legend(loc="upper center", fontsize=8, ncol=2)
    axes[0].set_title(f"Table III: ours ({args.run.name}) beside the paper's; different data, "
                      "trends only", fontsize=10)
    axes[1].set_xticks(x, labels, fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(args.out)


if __name__ == "__main__":
    main()
