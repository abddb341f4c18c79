"""Training-default study (issue 21): stopping signal, gradient clipping and precision, by seed.

Trains one experiment (default: chamber 2b) under named variants of the training protocol, several
seeds each, and evaluates every run exactly as the workflow does (thresholds tuned on the full
validation files; metrics on the full validation and test files). Variants:

* ``paper``: round-2 default: selection and lr plateau on the *total* validation loss, no gradient
  clipping, float32.
* ``new``: the round-3 default of ``config.yaml``: selection and plateau on the validation pitch
  losses, gradient norm clipped to 1.0, ``precision: auto`` (bf16 on CPUs with AMX/AVX-512 BF16).
* ``new-fp32``: ``new`` in float32 (the precision A/B).
* ``clip-only``: ``paper`` with clipping (isolates the clip).

Every variant: ``max_epochs`` 32 of 640 windows, patience 6, all fixed validation windows, batch 8,
AdamW 1e-3. Runs are resumable (``keep_checkpoint``), so a killed study continues where it stopped.

Usage:
``python benchmarks/bench_stability.py run --variant new --seeds 0 1 2 --features
data/chamber/features --embeddings results/chamber/timbre/embeddings.parquet --out
benchmarks/out/stability/chamber-2b`` then
``python benchmarks/bench_stability.py summary --out benchmarks/out/stability/chamber-2b``, which
prints per variant the seeds' slot F1 (validation and test), mean, std and spread (max - min),
and writes ``summary.csv``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from slotmpe.evaluation import evaluate_model, tune_thresholds
from slotmpe.precision import cpu_summary
from slotmpe.training import LOG_NAME, MODEL_NAME, TrainConfig, train_experiment
from slotmpe.utils import atomic_path, set_threads

COMMON: dict[str, Any] = {"max_epochs": 32, "patience": 6, "windows_per_epoch": 640,
                          "val_windows": None, "batch_size": 8, "lr": 1e-3}
VARIANTS: dict[str, dict[str, Any]] = {
    "paper": {"selection_metric": "total", "grad_clip": None, "precision": "fp32"},
    "new": {"selection_metric": "pitch", "grad_clip": 1.0, "precision": "auto"},
    "new-fp32": {"selection_metric": "pitch", "grad_clip": 1.0, "precision": "fp32"},
    "clip-only": {"selection_metric": "total", "grad_clip": 1.0, "precision": "fp32"},
}
METRICS = ("slot_f1", "slot_ap", "std_f1", "std_ap")


def run_one(exp: str, variant: str, seed: int, features: Path, embeddings: Path | None,
            out: Path, threads: int, dataset: str) -> dict[str, Any]:
    """Train, tune and evaluate one (variant, seed); returns its summary row (cached in row.json)."""
    run = out / variant / f"seed{seed}"
    row_path = run / "row.json"
    if row_path.is_file():
        return json.loads(row_path.read_text())
    set_threads(threads)
    cfg = TrainConfig(**COMMON, **VARIANTS[variant], seed=seed, threads=threads, device="cpu",
                      keep_checkpoint=False, progress=False)
    t0 = time.time()
    if not (run / MODEL_NAME).is_file():
        train_experiment(exp, features, run, cfg, embeddings_path=embeddings, dataset=dataset)
    train_s = time.time() - t0
    th = run / "thresholds.json"
    tune_thresholds(run / MODEL_NAME, features, th, split="val")
    res: dict[str, Any] = {}
    for split in ("val", "test"):
        m = evaluate_model(run / MODEL_NAME, th, features, run / f"metrics_{split}.json",
                           embeddings_path=embeddings, split=split,
                           per_file_path=run / f"per_file_{split}.csv")
        res.update({f"{split}_{k}": m.get(k) for k in METRICS})
    log = pd.read_csv(run / LOG_NAME)
    import torch

    extra = torch.load(run / MODEL_NAME, map_location="cpu", weights_only=False)["extra"]
    row = {"variant": variant, "seed": seed, "exp": exp, "dataset": dataset,
           "best_epoch": int(extra["best_epoch"]), "epochs": len(log),
           "precision": extra.get("precision", "fp32"), "cpu": cpu_summary(),
           "train_s": round(float(log["seconds"].sum()), 1), "wall_s": round(train_s, 1), **res}
    with atomic_path(row_path) as tmp:
        tmp.write_text(json.dumps(row, indent=1))
    return row


def summary(out: Path) -> pd.DataFrame:
    """Rows of every finished run under ``out`` and a per-variant summary (printed)."""
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*/seed*/row.json"))]
    if not rows:
        raise SystemExit(f"no finished run under {out}")
    df = pd.DataFrame(rows)
    with atomic_path(out / "runs.csv") as tmp:
        df.to_csv(tmp, index=False)
    agg = []
    for v, g in df.groupby("variant", sort=False):
        r: dict[str, Any] = {"variant": v, "n_seeds": len(g),
                             "seeds": " ".join(str(s) for s in g["seed"]),
                             "best_epochs": " ".join(str(e) for e in g["best_epoch"]),
                             "epochs": " ".join(str(e) for e in g["epochs"]),
                             "train_min_per_run": round(g["train_s"].mean() / 60, 1)}
        for k in ("val_slot_f1", "test_slot_f1", "test_slot_ap", "test_std_f1"):
            r[f"{k}_mean"] = round(g[k].mean(), 2)
            r[f"{k}_std"] = round(g[k].std(ddof=1), 2) if len(g) > 1 else None
            r[f"{k}_spread"] = round(g[k].max() - g[k].min(), 2)
            r[f"{k}_values"] = " ".join(f"{x:.2f}" for x in g[k])
        agg.append(r)
    summ = pd.DataFrame(agg)
    with atomic_path(out / "summary.csv") as tmp:
        summ.to_csv(tmp, index=False)
    print(f"CPU: {df['cpu'].iloc[0]}")
    for r in agg:
        print(f"{r['variant']:<10} n={r['n_seeds']} best epochs {r['best_epochs']} of {r['epochs']}"
              f" | val slot F1 {r['val_slot_f1_values']} (mean {r['val_slot_f1_mean']}, spread"
              f" {r['val_slot_f1_spread']}) | test slot F1 {r['test_slot_f1_values']} (mean"
              f" {r['test_slot_f1_mean']}, spread {r['test_slot_f1_spread']}) | test slot AP mean"
              f" {r['test_slot_ap_mean']} | {r['train_min_per_run']} min/run")
    return summ


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("run", "summary"))
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="new")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--exp", default="2b")
    ap.add_argument("--dataset", default="chamber")
    ap.add_argument("--features", type=Path, default=Path("data/chamber/features"))
    ap.add_argument("--embeddings", type=Path, default=Path("results/chamber/timbre/embeddings.parquet"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/stability/chamber-2b"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.mode == "summary":
        summary(args.out)
        return
    for seed in args.seeds:
        row = run_one(args.exp, args.variant, seed, args.features, args.embeddings, args.out,
                      args.threads, args.dataset)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
