"""One optimisation step, one training epoch and the validation losses of the slot model."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader

from slotmpe.experiments import Experiment
from slotmpe.losses import compute_losses, logged_terms
from slotmpe.precision import autocast
from slotmpe.training.config import TrainConfig


def batch_to(batch: Mapping[str, Any], device: torch.device | str, channels_last: bool = False
             ) -> dict[str, Any]:
    """Move every tensor of a collated batch to ``device`` (``x`` optionally channels-last)."""
    out: dict[str, Any] = {}
    non_blocking = torch.device(device).type == "cuda"
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=non_blocking)
            if k == "x" and channels_last:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


PITCH_TERMS = ("mix", "fixed_slot", "slot")
"""Loss terms that score pitch maps against pitch targets: the ``pitch`` selection signal."""


def pitch_terms(exp: Experiment) -> tuple[str, ...]:
    """The experiment's logged terms among :data:`PITCH_TERMS` (1a: mix; 1b: mix + fixed_slot;
    1c-3c: mix + slot)."""
    return tuple(t for t in logged_terms(exp) if t in PITCH_TERMS)


def logged_columns(exp: Experiment) -> tuple[str, ...]:
    """Columns of an epoch's loss dict: every logged term, ``pitch`` and ``total``."""
    return (*logged_terms(exp), "pitch", "total")


def _with_pitch(losses: Mapping[str, torch.Tensor], exp: Experiment) -> dict[str, torch.Tensor]:
    out = dict(losses)
    out["pitch"] = torch.stack([losses[t].detach().float() for t in pitch_terms(exp)]).sum()
    return out


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.01
                   ) -> torch.optim.Optimizer:
    """AdamW over ``model``'s parameters, with the fused kernel (one kernel for all parameters,
    same update rule, deterministic on CPU and CUDA) where the device supports it."""
    params = [p for p in model.parameters() if p.requires_grad]
    dev = params[0].device.type if params else "cpu"
    fused = dev in ("cpu", "cuda")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def _float_outputs(outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Outputs in float32 (after bf16 autocast the losses still run in full precision)."""
    return {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v)
            for k, v in outputs.items()}


def forward_losses(
    model: torch.nn.Module,
    batch: Mapping[str, torch.Tensor],
    exp: Experiment,
    weights: Mapping[str, float],
    match_emb_weight: float = 1.0,
    precision: str = "fp32",
    match_act_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Forward ``batch["x"]`` ``(B, 12, 216, W)`` and return :func:`compute_losses`'s dict.

    ``precision``: a resolved precision (``"fp32"`` or ``"bf16"``, see
    :func:`slotmpe.precision.resolve_precision`) of the forward pass; losses run in float32.
    ``match_act_weight``: ``train.activity_match_weight`` (the matching cost's activity term).
    """
    x = batch["x"]
    with autocast(x.device, precision):
        outputs = model(x)
    return compute_losses(exp, _float_outputs(outputs), batch, weights, match_emb_weight,
                          match_act_weight=match_act_weight)


def train_step(
    model: torch.nn.Module,
    batch: Mapping[str, torch.Tensor],
    exp: Experiment,
    weights: Mapping[str, float],
    optimizer: torch.optim.Optimizer,
    match_emb_weight: float = 1.0,
    grad_clip: float | None = None,
    precision: str = "fp32",
    match_act_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """One optimisation step on one batch (already on the model's device); returns the losses."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    losses = forward_losses(model, batch, exp, weights, match_emb_weight, precision,
                            match_act_weight)
    total = losses["total"]
    if not torch.isfinite(total):
        raise FloatingPointError(f"non-finite training loss: { {k: float(v) for k, v in losses.items()} }")
    total.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return losses


def _accumulate(
    acc: torch.Tensor | None, losses: Mapping[str, torch.Tensor], keys: tuple[str, ...], n: int
) -> torch.Tensor:
    vals = torch.stack([losses[k].detach().float() for k in keys]) * n
    return vals if acc is None else acc + vals


def train_one_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    exp: Experiment,
    weights: Mapping[str, float],
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    device: torch.device,
    precision: str = "fp32",
    interim: Collection[int] = (),
    on_interim: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns the window-weighted mean of every
    :func:`logged_columns` entry (logged terms, ``pitch``, ``total``).

    ``on_interim(batches_done, train_means)`` is called after each batch count in ``interim``
    (e.g. a validation every quarter of the epoch) with the running means of the epoch so far; it
    must leave the model's parameters and the optimiser alone (the loop validates there)."""
    keys = logged_columns(exp)
    acc, n = None, 0
    for i, batch in enumerate(loader, start=1):
        b = batch_to(batch, device, cfg.channels_last)
        losses = train_step(model, b, exp, weights, optimizer, cfg.timbre_match_weight,
                            cfg.grad_clip, precision, cfg.activity_match_weight)
        losses = _with_pitch(losses, exp)
        bs = int(b["x"].shape[0])
        acc, n = _accumulate(acc, losses, keys, bs), n + bs
        if on_interim is not None and i in interim:
            on_interim(i, dict(zip(keys, (acc / n).tolist(), strict=True)))
    if acc is None:
        raise RuntimeError("the training loader yielded no batch")
    return dict(zip(keys, (acc / n).tolist(), strict=True))


@torch.no_grad()
def evaluate_losses(
    model: torch.nn.Module,
    loader: DataLoader,
    exp: Experiment,
    weights: Mapping[str, float],
    cfg: TrainConfig,
    device: torch.device,
    precision: str = "fp32",
) -> dict[str, float]:
    """Mean validation losses (eval mode, no gradient), window-weighted over ``loader``; keys as
    :func:`logged_columns`."""
    model.eval()
    keys = logged_columns(exp)
    acc, n = None, 0
    for batch in loader:
        b = batch_to(batch, device, cfg.channels_last)
        losses = _with_pitch(
            forward_losses(model, b, exp, weights, cfg.timbre_match_weight, precision,
                           cfg.activity_match_weight), exp)
        bs = int(b["x"].shape[0])
        acc, n = _accumulate(acc, losses, keys, bs), n + bs
    if acc is None:
        raise RuntimeError("the validation loader yielded no batch")
    return dict(zip(keys, (acc / n).tolist(), strict=True))


