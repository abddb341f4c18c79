"""Capacity in the open: where the weights sit, which ones train, and what a forward pass costs.

For every experiment and width preset (``slotmpe.models.WIDTH_PRESETS``):

* trainable parameters per component: ``trunk``, ``global_branch``, ``slot_branch``,
  ``slot_attention`` (token projection, pitch embedding, learned queries, q/k/v, norms; the FFN
  apart), ``ffn`` (the residual slot FFN), ``decoder`` (mask decoder: projections, activity MLP,
  conv decoder) and ``heads`` (timbre head + FiLM + polyphony head, those the experiment has);
* ``grad_params``: the parameters that receive a gradient in one training step of the experiment,
  *measured*: :func:`slotmpe.training.forward_losses` with the experiment's loss weights on a
  seeded synthetic batch (3 active sources), ``total.backward()``, and a count of the parameters
  whose ``.grad`` is set (in 1a the slot path is skipped, in 3a the polyphony head has no loss);
* ``mflops``: forward MFLOPs per 23-frame window (batch 1, eval mode), counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products; elementwise
  operations are not counted); ``mflops_train_path`` counts only the outputs that enter the loss.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from slotmpe.constants import EMBED_DIM, FAMILIES, N_PITCHES, WINDOW_FRAMES
from slotmpe.experiments import EXPERIMENTS, default_loss_weights, get_experiment

COMPONENTS: tuple[str, ...] = (
    "trunk", "global_branch", "slot_branch", "slot_attention", "ffn", "decoder", "heads",
)


def _n(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters() if p.requires_grad)


def component_params(model: nn.Module) -> dict[str, int]:
    """Trainable parameters of a :class:`~slotmpe.models.SlotMPE` per component (sums to total)."""
    ffn = _n(model.slot_attention.ffn) + _n(model.slot_attention.ffn_norm)
    out = {
        "trunk": _n(model.trunk),
        "global_branch": _n(model.global_branch),
        "slot_branch": _n(model.slot_branch),
        "slot_attention": _n(model.slot_attention) - ffn,
        "ffn": ffn,
        "decoder": _n(model.decoder),
        "heads": _n(model.timbre_head) + _n(model.film) + _n(model.poly_head),
    }
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if sum(out.values()) != total:  # a new submodule would otherwise go uncounted silently
        raise RuntimeError(f"components sum to {sum(out.values())}, model has {total}")
    return out


def synthetic_batch(batch: int = 2, window: int = WINDOW_FRAMES, seed: int = 0,
                    n_sources: int = 3, k: int = 8) -> dict[str, torch.Tensor]:
    """A seeded training batch in the layout of :mod:`slotmpe.data` (``x`` ``(B, 12, 216, W)``,
    rolls ``(B, K, 72, W)`` with ``n_sources`` active sources, unit-norm embeddings)."""
    g = torch.Generator().manual_seed(seed)
    src = torch.zeros(batch, k, N_PITCHES, window)
    for s in range(n_sources):
        src[:, s, 20 + 7 * s, :] = 1.0
    fam = torch.zeros(batch, len(FAMILIES), N_PITCHES, window)
    for s in range(n_sources):
        fam[:, s % len(FAMILIES)] = torch.maximum(fam[:, s % len(FAMILIES)], src[:, s])
    emb = torch.randn(batch, k, EMBED_DIM, generator=g)
    emb = emb / emb.norm(dim=-1, keepdim=True)
    emb[:, n_sources:] = 0
    mix = src.amax(1)
    return {
        "x": torch.randn(batch, 12, 216, window, generator=g),
        "mix": mix, "family": fam, "sources": src,
        "source_present": src.flatten(2).any(-1),
        "source_emb": emb,
        "poly": mix.sum(1).clamp(max=7).long(),
        "source_poly": src.sum(2),
    }


def grad_params(model: nn.Module, exp_name: str, seed: int = 0) -> int:
    """Parameters that receive a gradient in one training step of ``exp_name`` (measured)."""
    from slotmpe.training import forward_losses

    exp = get_experiment(exp_name)
    torch.manual_seed(seed)
    model.train()
    model.zero_grad(set_to_none=True)
    losses = forward_losses(model, synthetic_batch(seed=seed), exp, default_loss_weights(exp))
    losses["total"].backward()
    n = sum(p.numel() for p in model.parameters() if p.requires_grad and p.grad is not None)
    model.zero_grad(set_to_none=True)
    return int(n)


def forward_mflops(model: nn.Module, window: int = WINDOW_FRAMES) -> float:
    """Forward MFLOPs of one ``window``-frame input (batch 1, eval mode)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    x = torch.randn(1, 12, 216, window, generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as fc:  # (no_grad trips its module tracker)
        model(x)
    return fc.get_total_flops() / 1e6


def capacity_row(exp_name: str, preset: str = "efficient") -> dict[str, object]:
    """Capacity of one configuration: ``widths``, the parameters per component, ``params``,
    ``paper_params``, ``delta_pct`` (two decimals), ``grad_params`` and ``mflops``."""
    from slotmpe.models import build_model

    e = get_experiment(exp_name)
    model = build_model(exp_name, preset=preset)
    comp = component_params(model)
    total = int(sum(comp.values()))
    return {
        "widths": preset, **comp, "params": total, "paper_params": int(e.paper_params),
        "delta_pct": round(100.0 * (total - e.paper_params) / e.paper_params, 2),
        "grad_params": grad_params(model, exp_name),
        "mflops": round(forward_mflops(model), 1),
    }


def capacity_table(presets: tuple[str, ...] = ("efficient", "wide")) -> pd.DataFrame:
    """One row per (preset, exp) of :func:`capacity_row` (the efficient-vs-wide comparison in the
    README; ``table1.csv`` has the configured preset)."""
    return pd.DataFrame.from_records(
        [{"exp": name, **capacity_row(name, p)} for p in presets for name in EXPERIMENTS]
    )
