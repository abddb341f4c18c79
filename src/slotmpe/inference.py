"""Whole-file inference (Section V-B): batch size 1, probabilities as numpy arrays.

:func:`predict` runs the model on an entire file at once when ``max_frames`` is ``None`` or the
file is not longer than ``max_frames`` frames, so the slot set spans the whole file as in the
paper. Memory grows linearly with the file length; for long files pass ``max_frames`` and the file
is processed in overlapping chunks of ``max_frames`` frames (overlap ``max_frames // 4``, at least
one frame):

* slot identity is kept consistent across chunks: the slots of each chunk are re-ordered to those
  of the previous (already aligned) chunk by Hungarian matching on the overlap, with cost = mean
  absolute difference of the slot probability maps on the overlap frames, plus the cosine distance
  of the slot timbre embeddings where the model has a timbre head;
* frame-wise outputs (``mix``, ``slots``, ``poly``) are cross-faded linearly over the overlap;
* ``activity`` of a slot is its maximum over chunks (a slot is active if it is active anywhere);
* ``timbre`` of a slot is the average of its chunk embeddings weighted by the slot's probability
  mass in each chunk (plus a small constant), L2-normalised.

Chunking is an approximation of whole-file inference: slots that are silent on an overlap can
swap identity between chunks. :data:`DEFAULT_MAX_FRAMES` is the limit used by the evaluation.

Memory: the model itself runs its time-local parts in exact time chunks (``SlotMPE.chunk_frames``)
and accumulates the slot attention over token chunks, so a pass holds only a few full-length maps.
``benchmarks/bench_inference.py`` measured a 10-minute file (18750 frames, one pass, 2 CPU threads)
at a peak RSS of 1.85 GB for the 3c model (1.2 GB above the process after imports and model load)
and 1.18 GB for 1a. Above the default limit of 20000 frames (10.7 min) the file is chunked; lower
``max_frames`` (config ``eval.max_frames``) bounds memory further on small machines.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from slotmpe.experiments import Experiment
from slotmpe.precision import autocast
from slotmpe.stitching import DEFAULT_MAX_FRAMES, chunk_bounds, stitch
from slotmpe.utils import resolve_device

__all__ = ["DEFAULT_MAX_FRAMES", "chunk_bounds", "inference_frames", "predict"]


def inference_frames(exp: Experiment, max_frames: int | None) -> int | None:
    """Chunk length for experiment ``exp``: its ``infer_frames`` (extension 4g, windowed
    inference) when set and shorter than ``max_frames``, else ``max_frames``."""
    if exp.infer_frames is None:
        return max_frames
    return exp.infer_frames if max_frames is None else min(exp.infer_frames, max_frames)


def _forward_probs(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """One forward pass on ``x`` ``(1, 12, 216, T)``; probabilities without the batch axis."""
    out = model(x)
    probs: dict[str, torch.Tensor] = {}
    if "mix_logits" in out:
        probs["mix"] = torch.sigmoid(out["mix_logits"][0])
    if out.get("slot_logits") is not None:
        probs["slots"] = torch.sigmoid(out["slot_logits"][0])
    if out.get("activity_logits") is not None:
        probs["activity"] = torch.sigmoid(out["activity_logits"][0])
    if out.get("timbre") is not None:
        probs["timbre"] = out["timbre"][0]
    if out.get("poly_logits") is not None:
        probs["poly"] = torch.softmax(out["poly_logits"][0].float(), dim=0)
    return {k: v.float().cpu().numpy() for k, v in probs.items()}


def predict(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    device: str | None = None,
    max_frames: int | None = None,
    precision: str = "fp32",
) -> dict[str, np.ndarray]:
    """Whole-file prediction with batch size 1 (``precision``: ``fp32``, or ``bf16`` autocast).

    Args:
        model: a :class:`slotmpe.models.slotmpe.SlotMPE` (or any module with its forward dict).
        x: input ``(12, 216, T)`` (numpy or torch, any float dtype).
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when available, else CPU.
        max_frames: ``None`` for a single pass over the whole file, else the chunk length (see the
            module docstring).

    Returns:
        float32 numpy arrays, keys as the model has the outputs: ``mix`` ``(72, T)``, ``slots``
        ``(K, 72, T)``, ``activity`` ``(K,)`` (sigmoid probabilities), ``timbre`` ``(K, 128)``
        (L2-normalised), ``poly`` ``(8, T)`` (softmax over the polyphony classes).
    """
    dev = torch.device(resolve_device(device))
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if xt.ndim != 3:
        raise ValueError(f"x must be (12, 216, T), got shape {tuple(xt.shape)}")
    n_frames = int(xt.shape[-1])
    model.eval()
    model.to(dev)
    with torch.inference_mode(), autocast(dev, precision):
        if max_frames is None or n_frames <= max_frames:
            return _forward_probs(model, xt.to(dev, torch.float32)[None])
        bounds = chunk_bounds(n_frames, max_frames)
        chunks: list[dict[str, np.ndarray]] = []
        for start, end in bounds:
            chunks.append(_forward_probs(model, xt[..., start:end].to(dev, torch.float32)[None]))
    return stitch(chunks, bounds, n_frames)
