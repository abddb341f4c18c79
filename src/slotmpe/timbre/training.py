"""Training of the timbre encoder (:func:`train_encoder`): sampling, augmentation, selection."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from slotmpe.models.timbre_encoder import TimbreEncoder, count_trainable
from slotmpe.precision import autocast, cpu_info, cpu_summary, resolve_precision
from slotmpe.timbre.config import PAPER_TOP1, PAPER_TOP5, TimbreConfig
from slotmpe.timbre.loss import multiview_timbre_loss
from slotmpe.timbre.retrieval import build_retrieval_set, evaluate_retrieval
from slotmpe.timbre.stems import (
    Stem,
    apply_gain_db,
    load_stems,
    pick_starts,
    silence_level,
    stem_window,
    windows_to_hcqt,
)
from slotmpe.training import make_optimizer
from slotmpe.utils import atomic_path, get_logger, resolve_device, seed_everything, set_threads

log = get_logger(__name__)

# ----------------------------------------------------------------------------------- training


def _augment(windows: torch.Tensor, cfg: TimbreConfig, silence: float, gen: torch.Generator) -> torch.Tensor:
    """Gain and frequency/time masking of wide log-CQT windows ``(N, F, W)`` -> ``(N, F, W)``."""
    import torchaudio.transforms as AT

    n = windows.shape[0]
    if cfg.gain_db > 0:
        gain = (torch.rand(n, generator=gen) * 2.0 - 1.0) * cfg.gain_db
        windows = apply_gain_db(windows, gain.to(windows.device))
    x = windows.unsqueeze(1)  # (N, 1, F, W): iid masks per item need a 4-D input
    if cfg.freq_mask_bins > 0:
        x = AT.FrequencyMasking(cfg.freq_mask_bins, iid_masks=True)(x, mask_value=silence)
    if cfg.time_mask_frames > 0:
        x = AT.TimeMasking(min(cfg.time_mask_frames, cfg.window), iid_masks=True)(x, mask_value=silence)
    return x.squeeze(1)


def _train_batch(
    stems: Sequence[Stem], idx: np.ndarray, rng: np.random.Generator, cfg: TimbreConfig
) -> torch.Tensor:
    """``(B, V, N_WIDE, W)`` float32 views of the stems ``idx``."""
    batch = [
        np.stack([stem_window(stems[i], int(s), cfg.window) for s in pick_starts(rng, stems[i].starts, cfg.views)])
        for i in idx
    ]
    return torch.from_numpy(np.stack(batch))


def train_step(
    model: TimbreEncoder,
    views: torch.Tensor,
    opt: torch.optim.Optimizer,
    cfg: TimbreConfig,
    silence: float,
    gen: torch.Generator,
    precision: str = "fp32",
) -> dict[str, torch.Tensor]:
    """One optimisation step of the encoder on ``views`` ``(B, V, N_WIDE, W)`` wide log-CQT windows
    (augmentation, fast-HCQT, encoder + projection, :func:`multiview_timbre_loss`, backward, step).

    Returns the loss terms (scalar tensors, ``total`` included). The learning-rate schedule is the
    caller's. ``precision``: resolved (``fp32``/``bf16``) autocast of the encoder forward; the loss
    runs in float32.
    """
    device = next(model.parameters()).device
    b, v = views.shape[:2]
    flat = _augment(views.reshape(b * v, *views.shape[2:]).to(device), cfg, silence, gen)
    x = windows_to_hcqt(flat)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, precision):
        emb = model(x)
        proj = model.project(emb)
    emb, proj = emb.float(), proj.float()
    terms = multiview_timbre_loss(
        emb.view(b, v, -1), proj.view(b, v, -1), None, cfg.temperature,
        cfg.w_contrastive, cfg.w_consistency, cfg.w_variance, cfg.w_covariance,
        cfg.variance_target,
    )
    opt.zero_grad(set_to_none=True)
    terms["total"].backward()
    opt.step()
    return terms


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """Replace NaN floats by None (valid JSON)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def train_encoder(feature_dir: Path, out_dir: Path, cfg: TimbreConfig) -> Path:
    """Train the timbre encoder on the training stems; select it on validation retrieval.

    Writes ``out_dir/encoder.pt`` (:func:`slotmpe.models.save_checkpoint`, ``extra`` holds the
    config, metrics and feature folder) and ``out_dir/metrics.json`` (``top1``, ``top5``,
    ``chance`` (= ``chance_top1``), ``chance_top5``, ``mrr`` in percent / 0..1 on the validation
    retrieval set of the selected checkpoint; ``params`` (encoder + projection head),
    ``params_encoder``, ``params_projection``; ``epochs``, ``best_epoch``, ``selection``, ``note``,
    counts, the per-epoch ``history`` and the paper's figures).

    Selection: the epoch with the highest validation top-1, ties broken by MRR. When the
    validation split has fewer than 2 stems with active windows, retrieval is trivial (or
    impossible): the metrics are reported for what exists and the checkpoint is selected by
    the lowest training loss instead (``selection`` and ``note`` say so).

    Returns:
        the path of ``encoder.pt``.
    """
    from tqdm.auto import tqdm

    from slotmpe import models

    feature_dir, out_dir = Path(feature_dir), Path(out_dir)
    if cfg.threads:
        set_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    log.info("timbre encoder: device %s (%s), %s", device, cpu_summary(), precision)
    silence = silence_level()
    t0 = time.time()

    train = [s for s in load_stems(feature_dir, ("train",), cfg, silence) if s.starts.size > 0]
    val_all = load_stems(feature_dir, ("val",), cfg, silence)
    val = [s for s in val_all if s.starts.size > 0]
    if not train:
        raise ValueError(f"{feature_dir}: no training stem with stem audio and active frames")
    rules = pd.Series([s.rule for s in train + val_all]).value_counts().to_dict()
    log.info(
        "timbre encoder: %d train stems, %d val stems (%d with active windows); activity rules %s",
        len(train), len(val_all), len(val), rules,
    )
    rset = build_retrieval_set(val, cfg.val_queries, cfg.window, cfg.seed)
    n_val_queries = int((~rset.is_key).sum())
    trivial = len(val) < 2 or n_val_queries == 0
    notes: list[str] = []
    if len(val) < 2:
        notes.append(
            f"validation split has {len(val)} stem(s) with active windows: retrieval is "
            + ("trivial (chance 100%)" if len(val) == 1 else "not measurable")
        )
    elif n_val_queries == 0:
        notes.append("no validation stem has two distinct active windows: no retrieval queries")
    if trivial:
        notes.append("checkpoint selected by the lowest training loss")

    model = TimbreEncoder(**cfg.model).to(device)
    params = count_trainable(model)
    params_proj = count_trainable(model.projector)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    batch = min(cfg.batch_size, len(train))
    items = cfg.items_per_epoch or len(train)
    steps_per_epoch = max(1, math.ceil(items / batch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=steps_per_epoch * cfg.max_epochs, eta_min=cfg.min_lr
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    log.info(
        "device %s, %d trainable parameters (encoder %d + projection %d), %d steps/epoch of %d "
        "stems x %d views", device, params, params - params_proj, params_proj, steps_per_epoch,
        batch, cfg.views,
    )

    history: list[dict[str, Any]] = []
    best_score: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch, best_metrics, bad = 0, {}, 0
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        sums: dict[str, float] = {}
        bar = tqdm(range(steps_per_epoch), desc=f"timbre epoch {epoch}", disable=not cfg.progress, leave=False)
        for _ in bar:
            idx = rng.choice(len(train), size=batch, replace=False)
            views = _train_batch(train, idx, rng, cfg)  # (B, V, F, W)
            terms = train_step(model, views, opt, cfg, silence, gen, precision)
            sched.step()
            for k, t in terms.items():
                sums[k] = sums.get(k, 0.0) + float(t.detach())
            bar.set_postfix(loss=f"{float(terms['total'].detach()):.3f}")
        row: dict[str, Any] = {"epoch": epoch, "lr": opt.param_groups[0]["lr"]}
        row.update({f"train_{k}": s / steps_per_epoch for k, s in sums.items()})
        ret = evaluate_retrieval(model, rset, device) if rset.windows.shape[0] else {}
        row.update({f"val_{k}": v for k, v in _clean(ret).items()})
        history.append(row)
        if trivial:
            score = (-row["train_total"], 0.0)
        else:
            score = (ret["top1"], ret["mrr"])
        improved = best_score is None or score > best_score
        log.info(
            "epoch %d: train loss %.4f, val top1 %s top5 %s%s", epoch, row["train_total"],
            row.get("val_top1"), row.get("val_top5"), " *" if improved else "",
        )
        if improved:
            best_score, best_epoch, best_metrics, bad = score, epoch, dict(ret), 0
            best_state = copy.deepcopy({k: t.detach().cpu() for k, t in model.state_dict().items()})
        else:
            bad += 1
            if bad >= cfg.patience:
                log.info("early stop after %d epochs without improvement", bad)
                break

    assert best_state is not None
    model.load_state_dict(best_state)
    model = model.cpu().eval().to(memory_format=torch.contiguous_format)
    metrics: dict[str, Any] = {
        "top1": best_metrics.get("top1"),
        "top5": best_metrics.get("top5"),
        "chance": best_metrics.get("chance_top1"),
        "chance_top1": best_metrics.get("chance_top1"),
        "chance_top5": best_metrics.get("chance_top5"),
        "mrr": best_metrics.get("mrr"),
        "params": params,
        "params_encoder": params - params_proj,
        "params_projection": params_proj,
        "epochs": len(history),
        "best_epoch": best_epoch,
        "selection": "train_loss" if trivial else "val_top1",
        "note": "; ".join(notes),
        "n_train_stems": len(train),
        "n_val_stems": len(val_all),
        "n_val_stems_active": len(val),
        "n_val_queries": n_val_queries,
        "n_val_candidates": int(rset.is_key.sum()),
        "activity_rules": {str(k): int(c) for k, c in rules.items()},
        "device": device,
        "precision": precision,
        "cpu": cpu_info(),
        "seconds": round(time.time() - t0, 1),
        "paper_top1": PAPER_TOP1,
        "paper_top5": PAPER_TOP5,
        "history": history,
    }
    metrics = _clean(metrics)
    enc_path = out_dir / "encoder.pt"
    models.save_checkpoint(
        enc_path,
        model,
        {
            "kind": "timbre_encoder",
            "timbre_config": dataclasses.asdict(cfg),
            "metrics": {k: v for k, v in metrics.items() if k != "history"},
            "feature_dir": str(feature_dir),
        },
    )
    with atomic_path(out_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
    log.info(
        "timbre encoder: best epoch %d of %d, val top1 %s%% top5 %s%% (chance %s%%), %s",
        best_epoch, len(history), metrics["top1"], metrics["top5"], metrics["chance"], enc_path,
    )
    return enc_path


