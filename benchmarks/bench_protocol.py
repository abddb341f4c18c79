"""Learning curves at the paper's budget, upper reading (issue 27): an epoch is a pass.

Protocol of every slot-model run: ``windows_per_epoch: pass`` (as many random 23-frame windows as
the training split holds), a validation check every quarter pass (``checks_per_epoch: 4``, logged
in ``train_checks.csv``; only the end-of-pass check decides), early stopping with the paper's
patience 6 on the validation pitch losses, cap 100 passes, batch 8, AdamW 1e-3, fp32, one thread.

Each (experiment, dataset) runs in two stages on one resumable run (``keep_checkpoint``):

1. ``p6``: train until patience 6 stops it; ``model.pt`` is copied to ``p6/``.
2. ``p12``: the same run continued (the checkpoint's ``finished`` flag cleared) until patience 12
   stops it; its ``model.pt`` (the best of all epochs so far) goes to ``p12/``.

Nothing in the run depends on the patience except when it stops, so stage 2 is exactly the run a
patience of 12 would have made. Both models get thresholds tuned on the validation split and
their validation slot F1 (mix F1 for 1a); the test split is never touched. The criterion of issue
27: the budget is enough when twice the patience gains less than 1 point.

The timbre encoder (``--timbre``) is trained at its own protocol (AdamW 5e-4, cosine annealing,
batch 32, cap 100, patience 6); its per-epoch validation top-1 retrieval is its curve, and its
embeddings feed the slot runs with a timbre head (2a-3c).

Usage (inputs from the workflow: ``snakemake --cores 2 data/chamber/features/index.csv``)::

    python benchmarks/bench_protocol.py --dataset chamber --features data/chamber/features \\
        --out benchmarks/out/protocol --timbre
    python benchmarks/bench_protocol.py --dataset chamber --features data/chamber/features \\
        --out benchmarks/out/protocol --exps 3c 2b
    python benchmarks/bench_protocol.py --summary --out benchmarks/out/protocol

``--reading quarter`` runs the lower reading instead (an epoch is a quarter pass, one check an
epoch, patience 6 then 12, under ``<out>/<dataset>/<exp>-quarter/``): with the upper reading's
``p6``/``p12`` it tells the cheapest budget at which twice the patience gains < 1 point.

A killed run resumes from its checkpoint (finished stages are skipped). Each finished stage
writes ``<out>/<dataset>/<exp>/<stage>/result.json``; ``--summary`` collects them into
``protocol.csv`` and prints one line per run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from bench_budget import _reopen  # clears a kept checkpoint's `finished` flag

from slotmpe.evaluation import tune_thresholds
from slotmpe.precision import cpu_summary
from slotmpe.training import (
    CHECKPOINT_NAME,
    CHECKS_NAME,
    LOG_NAME,
    MODEL_NAME,
    TrainConfig,
    train_experiment,
)
from slotmpe.utils import atomic_path, set_threads

PROTOCOL: dict[str, Any] = {
    "max_epochs": 100, "windows_per_epoch": "pass", "checks_per_epoch": 4, "val_windows": None,
    "batch_size": 8, "lr": 1e-3, "precision": "fp32", "selection_metric": "pitch",
    "grad_clip": 1.0, "device": "cpu", "keep_checkpoint": True, "progress": False,
}
STAGES = {"p6": 6, "p12": 12}
TIMBRE: dict[str, Any] = {"max_epochs": 100, "patience": 6, "batch_size": 32, "lr": 5e-4,
                          "precision": "fp32", "device": "cpu", "progress": False}


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def run_timbre(dataset: str, features: Path, out: Path, threads: int, seed: int) -> Path:
    """Train the timbre encoder at its protocol and export its embeddings; returns the table."""
    from slotmpe.timbre import TimbreConfig, export_embeddings, train_encoder

    tdir = out / dataset / "timbre"
    emb = tdir / "embeddings.parquet"
    if emb.is_file():
        return emb
    set_threads(threads)
    t0, c0 = time.perf_counter(), time.process_time()
    enc = train_encoder(features, tdir, TimbreConfig(**TIMBRE, seed=seed, threads=threads))
    cpu_s = time.process_time() - c0
    metrics = json.loads((tdir / "metrics.json").read_text())
    export_embeddings(enc, features, emb, seed=seed)
    hist = pd.DataFrame(metrics["history"])
    hist.to_csv(tdir / "history.csv", index=False)
    _write_json(tdir / "result.json", {
        "dataset": dataset, "exp": "timbre", "epochs": metrics["epochs"],
        "best_epoch": metrics["best_epoch"], "val_top1": metrics.get("top1"),
        "val_top5": metrics.get("top5"), "cpu_s": round(cpu_s, 1),
        "wall_s": round(time.perf_counter() - t0, 1), "cpu": cpu_summary(), "protocol": TIMBRE,
    })
    return emb


def quarter_pass(features: Path) -> int:
    """Training windows of a quarter pass over ``features``' training split (rounded up), as
    ``windows_per_epoch: pass/4`` draws them."""
    from slotmpe.constants import WINDOW_FRAMES
    from slotmpe.data import WindowDataset
    from slotmpe.training.config import resolve_windows_per_epoch

    n = len(WindowDataset(features, "train", train=True, window=WINDOW_FRAMES))
    return int(resolve_windows_per_epoch("pass/4", n))


def run_stage(exp: str, stage: str, dataset: str, features: Path, emb: Path | None, out: Path,
              threads: int, seed: int, reading: str = "pass") -> dict[str, Any]:
    """Train ``exp`` to the stage's patience (resuming), copy and score the kept model on val.

    ``reading``: ``"pass"`` (the protocol above) or ``"quarter"`` (epochs of a quarter pass, one
    check an epoch, folder ``<exp>-quarter``)."""
    proto = dict(PROTOCOL)
    name = exp
    if reading == "quarter":
        proto.update(windows_per_epoch="pass/4", checks_per_epoch=1)
        name = f"{exp}-quarter"
    run_dir = out / dataset / name / "run"
    sdir = out / dataset / name / stage
    done = sdir / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    cfg = TrainConfig(**proto, patience=STAGES[stage], seed=seed, threads=threads)
    if (run_dir / CHECKPOINT_NAME).exists():
        _reopen(run_dir / CHECKPOINT_NAME)
    t0, c0 = time.perf_counter(), time.process_time()
    train_experiment(exp, features, run_dir, cfg, embeddings_path=emb, dataset=dataset)
    cpu_s, wall_s = time.process_time() - c0, time.perf_counter() - t0
    sdir.mkdir(parents=True, exist_ok=True)
    for fname in (MODEL_NAME, LOG_NAME, CHECKS_NAME):
        if (run_dir / fname).is_file():
            shutil.copyfile(run_dir / fname, sdir / fname)
    th = tune_thresholds(sdir / MODEL_NAME, features, sdir / "thresholds.json", device="cpu")
    log = pd.read_csv(sdir / LOG_NAME)
    extra = torch.load(sdir / MODEL_NAME, map_location="cpu", weights_only=False)["extra"]
    res = {
        "dataset": dataset, "exp": exp, "stage": stage, "patience": STAGES[stage],
        "epochs": len(log), "best_epoch": int(extra["best_epoch"]),
        "val_pitch": float(extra["best_value"]),
        "val_slot_f1": th.get("val_f1_slots"), "val_mix_f1": th.get("val_f1_mix"),
        "stage_cpu_s": round(cpu_s, 1), "stage_wall_s": round(wall_s, 1), "reading": reading,
        "windows_per_epoch": quarter_pass(features) if reading == "quarter" else "pass", "cpu": cpu_summary(), "threads": threads, "seed": seed,
    }
    _write_json(done, res)
    return res


def summary(out: Path) -> pd.DataFrame:
    """Collect every ``result.json`` under ``out`` into ``protocol.csv`` (one row per stage)."""
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*/*/*/result.json"))]
    rows += [json.loads(p.read_text()) for p in sorted(out.glob("*/timbre/result.json"))]
    df = pd.DataFrame(rows)
    if not df.empty:
        with atomic_path(out / "protocol.csv") as tmp:
            df.to_csv(tmp, index=False)
        print(df.drop(columns=[c for c in ("cpu", "protocol") if c in df]).to_string(index=False))
    return df


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and run the timbre encoder and/or the slot-model stages in turn."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="chamber")
    p.add_argument("--features", type=Path, help="feature cache folder (index.csv)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/protocol"))
    p.add_argument("--exps", nargs="*", default=[])
    p.add_argument("--timbre", action="store_true", help="train the timbre encoder first")
    p.add_argument("--embeddings", type=Path, default=None,
                   help="embeddings.parquet for 2a-3c (default: the --timbre run's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reading", choices=("pass", "quarter"), default="pass",
                   help="epoch = a pass (the curves) or a quarter pass (the cheaper reading)")
    p.add_argument("--summary", action="store_true", help="only collect the results")
    args = p.parse_args(argv)
    if args.summary:
        summary(args.out)
        return
    if args.features is None:
        p.error("--features is required")
    set_threads(args.threads)
    emb = args.embeddings
    if args.timbre:
        emb = run_timbre(args.dataset, args.features, args.out, args.threads, args.seed)
    default_emb = args.out / args.dataset / "timbre" / "embeddings.parquet"
    for exp in args.exps:
        need = exp[0] in "234"
        e = (emb or default_emb) if need else None
        if need and not Path(e).is_file():
            p.error(f"{exp} needs timbre embeddings: run with --timbre first or pass --embeddings")
        for stage in STAGES:
            r = run_stage(exp, stage, args.dataset, args.features, e, args.out, args.threads,
                          args.seed, args.reading)
            print(json.dumps({k: r[k] for k in ("dataset", "exp", "stage", "epochs", "best_epoch",
                                                 "val_slot_f1", "val_mix_f1", "stage_cpu_s")}),
                  flush=True)


if __name__ == "__main__":
    main()
