"""Figure and small outputs of the paper-protocol curves (``benchmarks/bench_protocol.py``).

Reads ``<out>/<dataset>/<exp>/run/train_checks.csv`` (every quarter-pass validation check; a run
still going is read as far as it got) and the timbre encoders' ``history.csv``, and writes into
``--dest``:

* ``curves.png``: per dataset, the validation pitch loss of every run against passes (left) and
  against the wall time of the one-thread job (middle; the stages' CPU seconds are in their
  ``result.json``), and the timbre encoder's validation top-1 retrieval per epoch (right);
* ``<dataset>_<exp>_train_checks.csv`` / ``_train_log.csv`` and ``<dataset>_timbre_history.csv``:
  copies of the logs (no models);
* ``runs.csv``: per run, the passes trained so far, the best end-of-pass check, where patience 6
  (epoch = pass) and patience 6 on quarter-pass epochs (every check decides) would have stopped,
  and the wall seconds so far.

Usage: ``python benchmarks/plot_protocol.py --out benchmarks/out/protocol
--dest docs/studies/2026-12-06-paper-protocol``.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def stop_point(values: Sequence[float], patience: int) -> tuple[int, int | None]:
    """``(kept, stopped)``: 1-based index of the best value and of the check at which early
    stopping with ``patience`` would end the sequence (``None``: it has not triggered yet)."""
    best, kept, bad = float("inf"), 0, 0
    for i, v in enumerate(values, start=1):
        if v < best:
            best, kept, bad = v, i, 0
        else:
            bad += 1
            if bad >= patience:
                return kept, i
    return kept, None


def run_rows(out: Path) -> list[dict[str, object]]:
    """One summary row per slot-model run found under ``out``."""
    rows: list[dict[str, object]] = []
    for checks_path in sorted(out.glob("*/*/run/train_checks.csv")):
        exp, dataset = checks_path.parts[-3], checks_path.parts[-4]
        c = pd.read_csv(checks_path)
        ends = c[c["interim"] == 0]
        kept_p, stop_p = stop_point(ends["val_pitch"].tolist(), 6)
        kept_q, stop_q = stop_point(c["val_pitch"].tolist(), 6)
        rows.append({
            "dataset": dataset, "exp": exp, "passes_trained": len(ends),
            "pass_p6_kept": kept_p, "pass_p6_stopped": stop_p,
            "pass_p12_kept": stop_point(ends["val_pitch"].tolist(), 12)[0],
            "pass_p12_stopped": stop_point(ends["val_pitch"].tolist(), 12)[1],
            "quarter_p6_kept_pass": round(float(c["epoch"].iloc[kept_q - 1]), 2),
            "quarter_p6_stopped_pass": (round(float(c["epoch"].iloc[stop_q - 1]), 2)
                                        if stop_q else None),
            "best_val_pitch": round(float(ends["val_pitch"].min()), 5) if len(ends) else None,
            "wall_s_so_far": round(float(ends["seconds"].sum()), 1),
        })
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Copy the logs, write ``runs.csv`` and draw ``curves.png``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/protocol"))
    p.add_argument("--dest", type=Path, required=True)
    args = p.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    datasets = sorted({q.parts[-4] for q in args.out.glob("*/*/run/train_checks.csv")}
                      | {q.parts[-3] for q in args.out.glob("*/timbre/history.csv")})
    if not datasets:
        raise SystemExit(f"no run under {args.out}")
    fig, axes = plt.subplots(len(datasets), 3, figsize=(15, 4 * len(datasets)), squeeze=False)
    for row, ds in zip(axes, datasets, strict=True):
        for checks_path in sorted(args.out.glob(f"{ds}/*/run/train_checks.csv")):
            exp = checks_path.parts[-3]
            c = pd.read_csv(checks_path)
            shutil.copyfile(checks_path, args.dest / f"{ds}_{exp}_train_checks.csv")
            log = checks_path.parent / "train_log.csv"
            if log.is_file():
                shutil.copyfile(log, args.dest / f"{ds}_{exp}_train_log.csv")
            # CPU time of a check: the finished epochs before it plus its own seconds in the epoch
            cpu_h, before = [], 0.0
            for sec, interim in zip(c["seconds"], c["interim"], strict=True):
                cpu_h.append((before + float(sec)) / 3600)
                if not interim:
                    before += float(sec)
            row[0].plot(c["epoch"], c["val_pitch"], label=exp)
            row[1].plot(cpu_h, c["val_pitch"], label=exp)
        hist = args.out / ds / "timbre" / "history.csv"
        if hist.is_file():
            h = pd.read_csv(hist)
            shutil.copyfile(hist, args.dest / f"{ds}_timbre_history.csv")
            col = next((k for k in ("val_top1", "top1") if k in h), None)
            if col:
                row[2].plot(h["epoch"], h[col], marker=".")
        row[0].set(title=f"{ds}: validation pitch loss", xlabel="passes", ylabel="val pitch loss")
        row[1].set(title=f"{ds}: against training time", xlabel="hours (wall of a one-thread job)")
        row[2].set(title=f"{ds}: timbre encoder", xlabel="epoch", ylabel="val top-1 (%)")
        for ax in row[:2]:
            ax.legend()
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.dest / "curves.png", dpi=90)
    rows = pd.DataFrame(run_rows(args.out))
    rows.to_csv(args.dest / "runs.csv", index=False)
    for res in sorted(args.out.glob("*/*/*/result.json")):
        shutil.copyfile(res, args.dest / f"{res.parts[-4]}_{res.parts[-3]}_{res.parts[-2]}.json")
    print(rows.to_string(index=False))


if __name__ == "__main__":
    main()
