"""Screen ``train.activity_match_weight`` (issue 29, extension 4m) on the validation split.

Trains one experiment (default 3c) once per (weight, seed) with ``activity_match_weight`` set to
each weight of ``--weights`` (the weight ``w`` of ``w * softplus(-activity_logit)`` in the
Hungarian cost, :func:`slotmpe.matching.match_cost`; 0 = the paper's matching) and scores every
run on **validation only** (the test split is left untouched for the confirmation):

* thresholds tuned on the full validation files, then slot P/R/F1/AP and the mixture F1 on those
  same files (:func:`slotmpe.evaluation.tune_thresholds`, :func:`~slotmpe.evaluation.evaluate_model`
  with ``split="val"``);
* on the fixed validation windows: the duplicate rate (active unmatched slots whose pitch map
  duplicates a matched slot's) and the activity BCE, under the run's own matching and under the
  paper's (``bench_duplicates.validation_duplicates``);
* the train and validation activity loss of the selected epoch (``train_log.csv``).

The training settings are ``config.yaml``'s ``train:`` section after its profile (``--config``,
``--profile``; the workflow's budget), with ``--set KEY=VALUE`` overrides (YAML values, e.g.
``--set max_epochs=4 windows_per_epoch=64``). Runs live in ``OUT/w<weight>/seed<k>/`` and are
resumable: a finished run's ``row.json`` is reused, a finished ``model.pt`` is not trained again,
and an interrupted training resumes from its ``checkpoint_last.pt``. After every run
``OUT/screen.csv`` is rewritten (one row per run, sorted by weight and seed) and a per-weight mean
is printed.

Usage::

    PYTHONPATH=src python benchmarks/bench_activity_weight.py --exp 3c --weights 0 0.3 1 3 \\
        --seeds 0 --features data/chamber/features \\
        --embeddings results/chamber/timbre/embeddings.parquet \\
        --out benchmarks/out/activity_weight/chamber-3c [--set max_epochs=8] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_duplicates  # noqa: E402  (benchmarks/ module)

from slotmpe.utils import atomic_path, set_threads  # noqa: E402

CSV_NAME = "screen.csv"
ROW_NAME = "row.json"
COLUMNS = (
    "exp", "weight", "seed", "val_slot_f1", "val_slot_p", "val_slot_r", "val_slot_ap", "val_std_f1",
    "dup_rate", "active_unmatched", "duplicates", "matched_inactive", "val_activity_bce",
    "val_activity_bce_paper_matching", "dup_rate_paper_matching", "log_train_activity",
    "log_val_activity", "best_epoch", "epochs_trained", "threshold_slots", "train_s",
)


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """``["max_epochs=4", "val_windows=null"]`` -> ``{"max_epochs": 4, "val_windows": None}``
    (values parsed as YAML); ``ValueError`` naming an item without ``=``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def train_settings(config: Path, profile: str | None, sets: Mapping[str, Any]) -> dict[str, Any]:
    """The workflow's training settings: ``train:`` of ``config`` after its profile, the model
    widths, then ``sets``."""
    from slotmpe.config import load_config

    cfg = load_config(config, {"profile": profile} if profile else None)
    settings = {**(cfg.get("train") or {}), "widths": (cfg.get("model") or {}).get("widths",
                                                                                    "efficient")}
    settings.update(sets)
    if "activity_match_weight" in sets:
        raise ValueError("--set activity_match_weight: the weights come from --weights")
    return settings


def _wtag(weight: float) -> str:
    return f"w{weight:g}"


def run_one(exp: str, weight: float, seed: int, features: Path, embeddings: Path | None,
            out: Path, settings: Mapping[str, Any], threads: int, device: str,
            dataset: str | None) -> dict[str, Any]:
    """Train (or resume) and score one (weight, seed); returns its row (cached in ``row.json``)."""
    from slotmpe.pipeline import settings_to
    from slotmpe.training import CHECKPOINT_NAME, MODEL_NAME, TrainConfig, train_experiment

    run = out / _wtag(weight) / f"seed{seed}"
    row_path = run / ROW_NAME
    if row_path.is_file():
        return json.loads(row_path.read_text())
    run.mkdir(parents=True, exist_ok=True)
    cfg = settings_to(TrainConfig, settings, seed=seed, threads=threads, device=device,
                      activity_match_weight=float(weight), progress=False)
    model = run / MODEL_NAME
    t0 = time.perf_counter()
    if not model.is_file() or (run / CHECKPOINT_NAME).is_file():
        train_experiment(exp, features, run, cfg, embeddings_path=embeddings, dataset=dataset)
    train_s = time.perf_counter() - t0
    rep = bench_duplicates.validation_report(model, features, run / "val", embeddings,
                                             cfg.val_windows, device)
    own, paper = rep["windows"][rep["own_matching"]], rep["windows"]["w=0"]
    log = rep["train_log"]
    from slotmpe.models.io import read_checkpoint

    extra = read_checkpoint(model).get("extra") or {}
    row = {
        "exp": exp, "weight": float(weight), "seed": seed,
        **{f"val_{k}": rep["val"][k] for k in ("slot_f1", "slot_p", "slot_r", "slot_ap",
                                               "std_f1")},
        "dup_rate": own["dup_rate"], "active_unmatched": own["active_unmatched"],
        "duplicates": own["duplicates"], "matched_inactive": own["matched_inactive"],
        "val_activity_bce": own["activity_bce"],
        "val_activity_bce_paper_matching": paper["activity_bce"],
        "dup_rate_paper_matching": paper["dup_rate"],
        "log_train_activity": log.get("train_activity"), "log_val_activity": log.get("val_activity"),
        "best_epoch": extra.get("best_epoch"), "epochs_trained": extra.get("epochs_trained"),
        "threshold_slots": rep["thresholds"]["slots"], "train_s": round(train_s, 1),
    }
    with atomic_path(row_path) as tmp:
        tmp.write_text(json.dumps(row, indent=2) + "\n")
    return row


def collect(out: Path) -> pd.DataFrame:
    """Every finished run's row under ``out``, sorted by weight and seed (columns :data:`COLUMNS`)."""
    rows = [json.loads(p.read_text()) for p in sorted(out.glob(f"w*/seed*/{ROW_NAME}"))]
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    return df.sort_values(["weight", "seed"], kind="stable").reset_index(drop=True)


def write_csv(out: Path) -> pd.DataFrame:
    """Rewrite ``out/screen.csv`` from the finished rows (atomically); returns the frame."""
    df = collect(out)
    with atomic_path(out / CSV_NAME) as tmp:
        df.to_csv(tmp, index=False)
    return df


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per weight: seeds, and the mean of validation slot F1, duplicate rate and activity BCE."""
    cols = ["val_slot_f1", "val_slot_p", "val_slot_r", "dup_rate", "val_activity_bce"]
    g = df.groupby("weight")
    return pd.concat([g["seed"].count().rename("seeds"), g[cols].mean()], axis=1)


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Parse the arguments, run every missing (weight, seed), write ``screen.csv``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exp", default="3c", help="a Hungarian experiment without its own weight")
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.3, 1.0, 3.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--features", type=Path, required=True, help="feature cache folder")
    p.add_argument("--embeddings", type=Path, default=None, help="embeddings.parquet (timbre head)")
    p.add_argument("--dataset", default=None, help="dataset name recorded in the checkpoints")
    p.add_argument("--out", type=Path, required=True, help="screening folder")
    p.add_argument("--config", type=Path, default=Path("config.yaml"))
    p.add_argument("--profile", default=None, help="config profile (default: the config's own)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="train setting overrides, e.g. max_epochs=8 windows_per_epoch=640")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    from slotmpe.experiments import get_experiment

    exp = get_experiment(args.exp)
    if exp.matching != "hungarian":
        p.error(f"--exp {exp.name} has no Hungarian matching")
    if exp.activity_match_weight is not None:
        p.error(f"--exp {exp.name} fixes its own activity_match_weight; screen its base "
                f"{exp.base} instead")
    if any(w < 0 for w in args.weights):
        p.error("--weights must be >= 0")
    if exp.timbre_head and args.embeddings is None:
        p.error(f"--exp {exp.name} has a timbre head: pass --embeddings")
    settings = train_settings(args.config, args.profile, parse_sets(args.set))
    set_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for w in args.weights:
        for seed in args.seeds:
            row = run_one(exp.name, w, seed, args.features, args.embeddings, args.out, settings,
                          args.threads, args.device, args.dataset)
            print(f"{exp.name} w={w:g} seed {seed}: val slot F1 {row['val_slot_f1']}, dup_rate "
                  f"{row['dup_rate']}, val activity BCE {row['val_activity_bce']}", flush=True)
            df = write_csv(args.out)
    print(summary(df).to_string(float_format=lambda v: f"{v:.3f}"))
    return df


if __name__ == "__main__":
    main()
