"""The training run: epochs, learning-rate plateau, early stopping, best checkpoint."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import torch

from slotmpe.experiments import (
    default_loss_weights,
    get_experiment,
    resolve_activity_match_weight,
)
from slotmpe.losses import logged_terms
from slotmpe.precision import cpu_info, cpu_summary, resolve_precision
from slotmpe.remix import experiment_datasets
from slotmpe.training.checkpoint import (
    _CKPT_VERSION,
    CHECKPOINT_NAME,
    CHECKS_NAME,
    LOG_NAME,
    MODEL_NAME,
    _identity,
    _load_last,
    _rng_state,
    _save_last,
    _set_rng_state,
    _write_log,
)
from slotmpe.training.config import TrainConfig
from slotmpe.training.data import _epoch_loader, load_embeddings_table, make_datasets
from slotmpe.training.determinism import deterministic_mode
from slotmpe.training.steps import evaluate_losses, make_optimizer, train_one_epoch
from slotmpe.utils import get_logger, resolve_device, seed_everything, set_threads

log = get_logger(__name__)


def train_experiment(
    exp_name: str,
    feature_dir: Path,
    out_dir: Path,
    cfg: TrainConfig,
    embeddings_path: Path | None = None,
    dataset: str | None = None,
) -> Path:
    """Train experiment ``exp_name`` on the feature cache ``feature_dir``; returns ``out_dir/model.pt``.

    Writes ``out_dir/model.pt`` (best epoch by ``cfg.selection_metric`` on the validation windows;
    ``extra`` holds the experiment, dataset, seed, best epoch, its validation losses and the config)
    and ``out_dir/train_log.csv`` (``epoch``, ``train_<term>``, ``val_<term>`` for every logged term
    and ``total``, ``lr``, ``seconds``). With ``cfg.checks_per_epoch`` > 1 it also writes
    ``out_dir/train_checks.csv``: one row per validation check (the same columns, ``epoch``
    fractional, ``interim`` 1 for checks inside an epoch). Resumes from ``out_dir/checkpoint_last.pt`` when present.

    Args:
        exp_name: "1a".."3c".
        feature_dir: folder with ``index.csv`` and the piece ``.npz`` files.
        out_dir: output folder (created).
        cfg: the training settings.
        embeddings_path: ``embeddings.parquet`` of the timbre encoder; required by experiments with
            a timbre head (2a-3c), ignored otherwise.
        dataset: dataset name, recorded in the checkpoint (informational).
    """
    from tqdm.auto import tqdm

    from slotmpe.models import build_model, save_checkpoint

    exp = get_experiment(exp_name)
    feature_dir, out_dir = Path(feature_dir), Path(out_dir)
    if exp.target_kind == "family":
        from slotmpe.data import check_family_labels

        check_family_labels(feature_dir, ("train", "val"), f"experiment {exp.name}")
    weights = default_loss_weights(exp, cfg.loss_weights)
    terms = logged_terms(exp)
    plateau_metric = cfg.plateau_metric or cfg.selection_metric
    for key, value in (("selection_metric", cfg.selection_metric), ("plateau_metric", plateau_metric)):
        if value not in ("total", "pitch") and value not in terms:
            raise ValueError(
                f"train.{key} {value!r} is not logged for experiment {exp.name}; "
                f"use 'pitch', 'total' or one of {list(terms)}"
            )
    embeddings = None
    if exp.timbre_head:
        if embeddings_path is None:
            raise ValueError(
                f"experiment {exp.name} trains a timbre head against source embeddings: pass "
                "embeddings_path=results/<dataset>/timbre/embeddings.parquet"
            )
        embeddings = load_embeddings_table(embeddings_path)

    threads = set_threads(cfg.threads)
    device = torch.device(resolve_device(cfg.device))
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, model_path, log_path = out_dir / CHECKPOINT_NAME, out_dir / MODEL_NAME, out_dir / LOG_NAME
    precision = resolve_precision(cfg.precision, device)
    identity = _identity(exp.name, cfg, precision)
    cpu = cpu_summary()
    with deterministic_mode(device, cfg.deterministic):
        seed_everything(cfg.seed)
        model = build_model(exp.name, preset=cfg.widths).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience,
            min_lr=cfg.min_lr,
        )
        # extension rows with remix augmentation / stem mask targets wrap the datasets (4h-4l)
        train_ds, val_ds = experiment_datasets(exp, *make_datasets(feature_dir, cfg, embeddings))
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("exp %s on %s: device %s (%s), %s, %d torch threads, %d workers, %d parameters, "
                 "%d train windows/epoch, %d val windows, terms %s, selection %s, plateau %s",
                 exp.name, dataset or feature_dir, device, cpu, precision, threads,
                 cfg.num_workers, n_params, len(train_ds), len(val_ds),
                 {t: weights[t] for t in terms}, cfg.selection_metric, plateau_metric)

        start_epoch, rows, checks = 0, [], []
        best: dict[str, Any] = {"value": math.inf, "epoch": 0, "bad_epochs": 0,
                                "state": None, "val": {}}
        finished = False
        if ckpt_path.exists():
            state = _load_last(ckpt_path, identity)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            best, rows, start_epoch = state["best"], state["log"], int(state["epoch"])
            checks = list(state.get("checks", []))
            finished = bool(state["finished"])
            _set_rng_state(state["rng"])
            log.info("resuming %s from %s after epoch %d", exp.name, ckpt_path, start_epoch)

        step_model = torch.compile(model) if cfg.compile else model
        pin = device.type == "cuda"
        val_loader = _epoch_loader(val_ds, cfg, 0, shuffle=False, pin=pin)
        bar = tqdm(total=cfg.max_epochs, initial=start_epoch, desc=f"train {exp.name}",
                   unit="epoch", disable=not cfg.progress, dynamic_ncols=True)
        try:
            epoch = start_epoch
            while not finished and epoch < cfg.max_epochs and best["bad_epochs"] < cfg.patience:
                t0 = time.perf_counter()
                lr = optimizer.param_groups[0]["lr"]
                if hasattr(train_ds, "set_epoch"):
                    train_ds.set_epoch(epoch)
                loader = _epoch_loader(train_ds, cfg, epoch, shuffle=True, pin=pin)
                n_batches = len(loader)
                interim = {round(j * n_batches / cfg.checks_per_epoch)
                           for j in range(1, cfg.checks_per_epoch)} - {0, n_batches}

                def check(done: int, tr_means: dict[str, float], _e: int = epoch,
                          _t0: float = t0, _lr: float = lr, _nb: int = n_batches) -> None:
                    """An interim validation: logged in train_checks.csv, decides nothing."""
                    va_i = evaluate_losses(step_model, val_loader, exp, weights, cfg, device,
                                           precision)
                    checks.append({"epoch": _e + done / _nb, "interim": 1,
                                   **{f"train_{k}": v for k, v in tr_means.items()},
                                   **{f"val_{k}": v for k, v in va_i.items()},
                                   "lr": _lr, "seconds": time.perf_counter() - _t0})

                tr = train_one_epoch(step_model, loader, exp, weights, optimizer, cfg, device,
                                     precision, interim=interim, on_interim=check)
                va = evaluate_losses(step_model, val_loader, exp, weights, cfg, device, precision)
                if not math.isfinite(va["total"]):
                    raise FloatingPointError(f"non-finite validation loss in epoch {epoch + 1}: {va}")
                scheduler.step(va[plateau_metric])
                epoch += 1
                sel = va[cfg.selection_metric]
                if sel < best["value"]:
                    best = {"value": sel, "epoch": epoch, "bad_epochs": 0, "val": va,
                            "state": {k: v.detach().cpu().clone()
                                      for k, v in model.state_dict().items()}}
                else:
                    best["bad_epochs"] += 1
                row: dict[str, float] = {"epoch": epoch}
                row.update({f"train_{k}": v for k, v in tr.items()})
                row.update({f"val_{k}": v for k, v in va.items()})
                row.update({"lr": lr, "seconds": time.perf_counter() - t0,
                            "precision": precision, "cpu": cpu})
                rows.append(row)
                checks.append({**{k: v for k, v in row.items() if k not in ("precision", "cpu")},
                               "interim": 0})
                finished = epoch >= cfg.max_epochs or best["bad_epochs"] >= cfg.patience
                _save_last(ckpt_path, {
                    "version": _CKPT_VERSION, "identity": identity, "epoch": epoch,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "best": best, "log": rows,
                    "rng": _rng_state(), "finished": finished, "checks": checks,
                })
                if cfg.checks_per_epoch > 1:
                    _write_log(out_dir / CHECKS_NAME, checks)
                log.info("epoch %d/%d  train %.4f  val %.4f  (%s %.4f, best epoch %d)  lr %.2e  %.1fs",
                         epoch, cfg.max_epochs, tr["total"], va["total"], cfg.selection_metric,
                         sel, best["epoch"], lr, row["seconds"])
                bar.set_postfix(train=f"{tr['total']:.4f}", val=f"{va['total']:.4f}",
                                best=best["epoch"])
                bar.update(1)
        finally:
            bar.close()

    if best["state"] is None:
        raise RuntimeError(f"{exp.name}: no epoch was trained (max_epochs={cfg.max_epochs})")
    model.load_state_dict(best["state"])
    extra = {
        "exp": exp.name, "dataset": dataset, "seed": cfg.seed, "best_epoch": best["epoch"],
        "selection_metric": cfg.selection_metric, "best_value": best["value"],
        "val_losses": best["val"], "epochs_trained": len(rows),
        "train_config": copy.deepcopy(dataclasses.asdict(cfg)), "loss_weights": weights,
        "device": str(device), "threads": threads, "precision": precision, "cpu": cpu_info(),
        "plateau_metric": plateau_metric,
        "activity_match_weight": resolve_activity_match_weight(exp, cfg.activity_match_weight),
    }
    if embeddings_path is not None and exp.timbre_head:
        # per-instrument prototypes of the training stems: `transcribe` names slots with them
        from slotmpe.instruments import prototypes_from_embeddings

        try:
            extra["instrument_prototypes"] = prototypes_from_embeddings(embeddings_path)
        except ValueError as e:  # a table without labels (split/instrument/family): no names
            log.warning("no instrument prototypes in %s: %s", model_path, e)
    save_checkpoint(model_path, model.cpu().to(memory_format=torch.contiguous_format), extra)
    _write_log(log_path, rows)
    if not cfg.keep_checkpoint:
        ckpt_path.unlink(missing_ok=True)
    log.info("%s: best epoch %d (%s %.4f) of %d; wrote %s", exp.name, best["epoch"],
             cfg.selection_metric, best["value"], len(rows), model_path)
    return model_path
