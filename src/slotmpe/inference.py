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
from scipy.optimize import linear_sum_assignment
from torch import nn

from slotmpe.experiments import Experiment
from slotmpe.utils import resolve_device

# Whole-file inference up to 20000 frames (640 s at 31.25 frames/s, config ``eval.max_frames``);
# longer files are chunked.
DEFAULT_MAX_FRAMES: int | None = 20000

_SLOT_KEYS = ("slots", "activity", "timbre")


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


def _align(prev: dict[str, np.ndarray], cur: dict[str, np.ndarray], ov_prev: slice,
           ov_cur: slice) -> np.ndarray:
    """Permutation ``perm`` (K,) such that ``cur`` slot ``perm[k]`` continues ``prev`` slot ``k``."""
    a = prev["slots"][:, :, ov_prev]  # (K, P, O)
    b = cur["slots"][:, :, ov_cur]
    cost = np.abs(a[:, None] - b[None, :]).mean(axis=(2, 3))  # (K, K)
    if "timbre" in prev and "timbre" in cur:
        ta, tb = prev["timbre"], cur["timbre"]
        na = np.linalg.norm(ta, axis=1, keepdims=True) + 1e-8
        nb = np.linalg.norm(tb, axis=1, keepdims=True) + 1e-8
        cost = cost + (1.0 - (ta / na) @ (tb / nb).T)
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty_like(cols)
    perm[rows] = cols
    return perm


def inference_frames(exp: Experiment, max_frames: int | None) -> int | None:
    """Chunk length for experiment ``exp``: its ``infer_frames`` (extension 4g, windowed
    inference) when set and shorter than ``max_frames``, else ``max_frames``."""
    if exp.infer_frames is None:
        return max_frames
    return exp.infer_frames if max_frames is None else min(exp.infer_frames, max_frames)


def chunk_bounds(n_frames: int, max_frames: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` chunks of ``max_frames`` covering ``n_frames`` with overlap.

    Consecutive chunks overlap by at least ``max(1, max_frames // 4)`` frames; the last chunk ends
    at ``n_frames``.
    """
    if max_frames < 2:
        raise ValueError(f"max_frames must be >= 2, got {max_frames}")
    if n_frames <= max_frames:
        return [(0, n_frames)]
    overlap = max(1, max_frames // 4)
    step = max_frames - overlap
    bounds = []
    start = 0
    while start + max_frames < n_frames:
        bounds.append((start, start + max_frames))
        start += step
    bounds.append((n_frames - max_frames, n_frames))
    return bounds


def predict(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    device: str | None = None,
    max_frames: int | None = None,
) -> dict[str, np.ndarray]:
    """Whole-file prediction with batch size 1.

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
    with torch.inference_mode():
        if max_frames is None or n_frames <= max_frames:
            return _forward_probs(model, xt.to(dev, torch.float32)[None])
        bounds = chunk_bounds(n_frames, max_frames)
        chunks: list[dict[str, np.ndarray]] = []
        for start, end in bounds:
            chunks.append(_forward_probs(model, xt[..., start:end].to(dev, torch.float32)[None]))
    return _stitch(chunks, bounds, n_frames)


def _stitch(chunks: list[dict[str, np.ndarray]], bounds: list[tuple[int, int]],
            n_frames: int) -> dict[str, np.ndarray]:
    """Align slot order across chunks and blend them into whole-file outputs (module docstring)."""
    # 1. slot alignment, chunk by chunk against the previous aligned chunk
    for i in range(1, len(chunks)):
        if "slots" not in chunks[i]:
            break
        (s0, e0), (s1, _) = bounds[i - 1], bounds[i]
        ov_prev = slice(s1 - s0, e0 - s0)
        ov_cur = slice(0, e0 - s1)
        perm = _align(chunks[i - 1], chunks[i], ov_prev, ov_cur)
        for k in _SLOT_KEYS:
            if k in chunks[i]:
                chunks[i][k] = chunks[i][k][perm]
    # 2. cross-fade frame-wise outputs
    out: dict[str, np.ndarray] = {}
    total_w = np.zeros(n_frames, dtype=np.float64)
    weights = []
    for i, (s, e) in enumerate(bounds):
        w = np.ones(e - s, dtype=np.float64)
        if i > 0:
            ov = bounds[i - 1][1] - s
            w[:ov] = np.linspace(0.0, 1.0, ov + 2)[1:-1]
        if i + 1 < len(bounds):
            ov = e - bounds[i + 1][0]
            w[e - s - ov:] = np.linspace(1.0, 0.0, ov + 2)[1:-1]
        weights.append(w)
        total_w[s:e] += w
    for key in ("mix", "slots", "poly"):
        if key not in chunks[0]:
            continue
        shape = chunks[0][key].shape[:-1] + (n_frames,)
        acc = np.zeros(shape, dtype=np.float64)
        for c, (s, e), w in zip(chunks, bounds, weights, strict=True):
            acc[..., s:e] += c[key] * w
        out[key] = (acc / total_w).astype(np.float32)
    if "activity" in chunks[0]:
        out["activity"] = np.max(np.stack([c["activity"] for c in chunks]), axis=0)
    if "timbre" in chunks[0]:
        mass = np.stack([c["slots"].sum(axis=(1, 2)) if "slots" in c else np.ones(1)
                         for c in chunks]) + 1e-3  # (C, K)
        emb = np.einsum("ck,cke->ke", mass, np.stack([c["timbre"] for c in chunks]))
        emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
        out["timbre"] = emb.astype(np.float32)
    return out
