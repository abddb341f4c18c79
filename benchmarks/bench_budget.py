"""Learning curve: validation and test F1 of 2b and 1c at 1x, 2x, 4x and 8x the old default budget.

The old default budget is ``8 epochs x 640 windows``. For each experiment the script trains ONE run
with the default protocol (AdamW, ReduceLROnPlateau on the total validation loss, the workflow's
``train:`` settings, one seed) and no early stopping, in stages: after ``8 x b`` epochs for
``b = 1, 2, 4, 8`` it keeps ``model.pt``, the checkpoint with the lowest validation loss among the
epochs trained so far, and evaluates it exactly as the workflow does (thresholds tuned on the full
validation files, metrics on the full test files).

Equivalence with separate runs. A separate run with ``max_epochs = 8 b`` (and patience >= 8 b)
would give the same ``model.pt``: nothing in :func:`slotmpe.training.train_experiment` depends on
``max_epochs`` except when the loop stops. The training windows and batch order of epoch ``e`` are
functions of ``(seed, e)``; AdamW's step depends only on its own state; ReduceLROnPlateau lowers
the learning rate from the validation losses seen so far (not from the budget, so the learning
rate is not constant but it is the same in both cases); the best checkpoint is the arg-min of the
validation loss over the epochs trained. Continuing a finished run uses the resume checkpoint
(``keep_checkpoint``), whose exact continuation is tested in ``tests/test_training.py``
(kill-and-resume gives identical weights); the script only clears the checkpoint's ``finished``
flag so that the larger ``max_epochs`` is trained. Checked on the tiny profile (1c, 2 stages of
1 epoch): the 2x stage's ``model.pt`` equals a separate 2-epoch run bit for bit. The epochs at which early stopping with the
paper's patience (6) would have ended each stage are printed too (from ``train_log.csv``).

Experiments are advanced stage by stage in turn (2b to 1x, 1c to 1x, 2b to 2x, ...), so an
interrupted run has comparable stages for both; rerunning resumes (finished stages are skipped).

Inputs come from the workflow, e.g. ``snakemake --cores 2 data/chamber/features/index.csv
results/chamber/timbre/embeddings.parquet`` (add ``--config profile=tiny`` for a smoke test).

Usage: ``python benchmarks/bench_budget.py --features data/chamber/features
--embeddings results/chamber/timbre/embeddings.parquet --out benchmarks/out/budget
[--exps 2b 1c] [--budgets 1 2 4 8] [--base-epochs 8] [--windows 640] [--val-windows N]
[--threads 2] [--seed 0]``; prints one line per (experiment, budget) and writes ``budget.csv``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from slotmpe.evaluation import evaluate_model, tune_thresholds
from slotmpe.training import CHECKPOINT_NAME, LOG_NAME, MODEL_NAME, TrainConfig, train_experiment
from slotmpe.utils import atomic_path, set_threads

PAPER_PATIENCE = 6


def early_stop_epoch(val_total: Sequence[float], patience: int = PAPER_PATIENCE) -> int:
    """Epoch (1-based) at which early stopping with ``patience`` ends a run with these
    validation losses (the last epoch when it never triggers)."""
    best, bad = float("inf"), 0
    for e, v in enumerate(val_total, start=1):
        if v < best:
            best, bad = v, 0
        else:
            bad += 1
            if bad >= patience:
                return e
    return len(val_total)


def _reopen(ckpt: Path) -> None:
    """Clear the ``finished`` flag of a kept resume checkpoint so a larger budget continues it."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    if state.get("finished"):
        state["finished"] = False
        with atomic_path(ckpt) as tmp:
            torch.save(state, tmp)


def run_stage(exp: str, budget: int, args: argparse.Namespace) -> dict[str, object]:
    """Train ``exp`` up to ``budget x base_epochs`` epochs, evaluate the best-val checkpoint."""
    run_dir = args.out / exp / "run"
    stage_dir = args.out / exp / f"x{budget}"
    done = stage_dir / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    epochs = budget * args.base_epochs
    cfg = TrainConfig(max_epochs=epochs, patience=epochs, windows_per_epoch=args.windows,
                      val_windows=args.val_windows, seed=args.seed, threads=args.threads,
                      keep_checkpoint=True, progress=False)
    if (run_dir / CHECKPOINT_NAME).exists():
        _reopen(run_dir / CHECKPOINT_NAME)
    emb = args.embeddings if exp[0] in "23" else None
    t0 = time.perf_counter()
    train_experiment(exp, args.features, run_dir, cfg, embeddings_path=emb, dataset="budget")
    train_s = time.perf_counter() - t0
    stage_dir.mkdir(parents=True, exist_ok=True)
    model = stage_dir / MODEL_NAME
    model.write_bytes((run_dir / MODEL_NAME).read_bytes())
    log = pd.read_csv(run_dir / LOG_NAME)
    th = tune_thresholds(model, args.features, stage_dir / "thresholds.json", device="cpu")
    m = evaluate_model(model, stage_dir / "thresholds.json", args.features,
                       stage_dir / "metrics.json", embeddings_path=emb, device="cpu")
    val = log["val_total"].tolist()
    best_epoch = int(log["val_total"].idxmin()) + 1
    res: dict[str, object] = {
        "exp": exp, "budget": f"{budget}x", "epochs": epochs, "windows": epochs * args.windows,
        "best_epoch": best_epoch, "best_val_loss": round(min(val), 5),
        "early_stop_p6": early_stop_epoch(val), "val_slot_f1": th["val_f1_slots"],
        "val_mix_f1": th["val_f1_mix"], "test_slot_f1": m["slot_f1"], "test_slot_ap": m["slot_ap"],
        "test_mix_f1": m["std_f1"], "test_mix_ap": m["std_ap"], "train_s": round(train_s, 1),
    }
    with atomic_path(done) as tmp:
        tmp.write_text(json.dumps(res, indent=2) + "\n")
    return res


def _fmt(v: object) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Parse the arguments, run every (budget, experiment) stage, print and write ``budget.csv``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", type=Path, required=True, help="feature cache folder")
    p.add_argument("--embeddings", type=Path, default=None, help="embeddings.parquet (2a-3c)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/budget"))
    p.add_argument("--exps", nargs="+", default=["2b", "1c"])
    p.add_argument("--budgets", nargs="+", type=int, default=[1, 2, 4, 8])
    p.add_argument("--base-epochs", type=int, default=8)
    p.add_argument("--windows", type=int, default=640)
    p.add_argument("--val-windows", type=int, default=None,
                   help="fixed validation windows (default: all, as the default profile)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if any(e[0] in "23" for e in args.exps) and args.embeddings is None:
        p.error("experiments with a timbre head (2a-3c) need --embeddings")
    set_threads(args.threads)
    rows = []
    print("exp budget epochs best_epoch early_stop_p6 val_slot_f1 val_mix_f1 test_slot_f1 "
          "test_slot_ap test_mix_f1 train_s", flush=True)
    for b in sorted(args.budgets):
        for exp in args.exps:
            r = run_stage(exp, b, args)
            rows.append(r)
            print(" ".join(_fmt(r[k]) for k in ("exp", "budget", "epochs", "best_epoch",
                                                 "early_stop_p6", "val_slot_f1", "val_mix_f1",
                                                 "test_slot_f1", "test_slot_ap", "test_mix_f1",
                                                 "train_s")), flush=True)
    df = pd.DataFrame(rows)
    with atomic_path(args.out / "budget.csv") as tmp:
        df.to_csv(tmp, index=False)
    return df


if __name__ == "__main__":
    main()
