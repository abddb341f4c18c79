"""Chunked whole-file inference without torch: chunk bounds, slot alignment and stitching.

A file longer than ``max_frames`` frames is run in overlapping chunks of ``max_frames`` frames
(overlap ``max_frames // 4``, at least one frame), see :func:`chunk_bounds`. :func:`stitch` then

* keeps slot identity consistent across chunks: the slots of each chunk are re-ordered to those
  of the previous (already aligned) chunk by Hungarian matching on the overlap (:func:`align_slots`),
  with cost = mean absolute difference of the slot probability maps on the overlap frames, plus the
  cosine distance of the slot timbre embeddings where the model has a timbre head;
* cross-fades frame-wise outputs (``mix``, ``slots``, ``poly``) linearly over the overlap;
* takes a slot's ``activity`` as its maximum over chunks (active if active anywhere);
* averages a slot's ``timbre`` over chunks weighted by its probability mass in each chunk (plus a
  small constant), L2-normalised.

Used by :func:`slotmpe.inference.predict` (torch) and the ONNX runner of ``slotmpe transcribe``
alike, so both chunk and stitch identically.
"""

from __future__ import annotations

import numpy as np

# Whole-file inference up to 20000 frames (640 s at 31.25 frames/s, config ``eval.max_frames``);
# longer files are chunked.
DEFAULT_MAX_FRAMES: int | None = 20000

SLOT_KEYS = ("slots", "activity", "timbre")


def align_slots(prev: dict[str, np.ndarray], cur: dict[str, np.ndarray], ov_prev: slice,
           ov_cur: slice) -> np.ndarray:
    """Permutation ``perm`` (K,) such that ``cur`` slot ``perm[k]`` continues ``prev`` slot ``k``."""
    from scipy.optimize import linear_sum_assignment  # imported here: scipy.optimize costs ~1 s

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


def crossfade_weights(bounds: list[tuple[int, int]]) -> list[np.ndarray]:
    """Cross-fade weight of every chunk over its frames: 1 inside, linear ramps over the overlaps
    with its neighbours (``(e - s,)`` float64 per chunk ``(s, e)``)."""
    out = []
    for i, (s, e) in enumerate(bounds):
        w = np.ones(e - s, dtype=np.float64)
        if i > 0:
            ov = bounds[i - 1][1] - s
            w[:ov] = np.linspace(0.0, 1.0, ov + 2)[1:-1]
        if i + 1 < len(bounds):
            ov = e - bounds[i + 1][0]
            w[e - s - ov:] = np.linspace(1.0, 0.0, ov + 2)[1:-1]
        out.append(w)
    return out


def stitch(chunks: list[dict[str, np.ndarray]], bounds: list[tuple[int, int]],
            n_frames: int) -> dict[str, np.ndarray]:
    """Align slot order across chunks and blend them into whole-file outputs (module docstring)."""
    # 1. slot alignment, chunk by chunk against the previous aligned chunk
    for i in range(1, len(chunks)):
        if "slots" not in chunks[i]:
            break
        (s0, e0), (s1, _) = bounds[i - 1], bounds[i]
        ov_prev = slice(s1 - s0, e0 - s0)
        ov_cur = slice(0, e0 - s1)
        perm = align_slots(chunks[i - 1], chunks[i], ov_prev, ov_cur)
        for k in SLOT_KEYS:
            if k in chunks[i]:
                chunks[i][k] = chunks[i][k][perm]
    # 2. cross-fade frame-wise outputs
    out: dict[str, np.ndarray] = {}
    total_w = np.zeros(n_frames, dtype=np.float64)
    weights = crossfade_weights(bounds)
    for (s, e), w in zip(bounds, weights, strict=True):
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
