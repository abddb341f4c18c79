"""Inference-time post-processing of slot outputs and the duplicate rate (issue 18).

One code path for evaluation and ``slotmpe transcribe``: :func:`postprocess_prediction` takes the
dict of :func:`slotmpe.inference.predict` and applies the steps an experiment names
(:attr:`slotmpe.experiments.Experiment.postprocess`, in order). Shapes: ``K`` slots, ``P = 72``
pitches, ``T`` frames, ``E = 128`` embedding dimensions.

Steps
    ``active`` (:func:`silence_inactive`): slots whose activity probability is below
    ``activity_min`` (0.5) are silenced (probabilities 0), as ``slotmpe transcribe`` drops them.
    Slot probabilities are already gated by the activity, but a slot at activity 0.4 can still pass
    a tuned slot threshold of ~0.3.
    ``merge`` (:func:`merge_duplicate_slots`): two slots whose pitch maps coincide and whose timbre
    embeddings agree are one source claimed twice. The soft containment of slots ``j, k`` is
    ``sum_cells min(p_j, p_k) / min(sum p_j, sum p_k)`` (1 when the smaller map lies inside the
    larger one). While some pair has containment ``>= overlap_min`` and (when embeddings are given)
    timbre cosine ``>= cos_min``, the pair with the largest containment is merged: the slot with
    more probability mass keeps ``max(p_j, p_k)`` cell-wise and the larger activity; the other
    slot becomes silent (probabilities and activity 0).
    ``exclusive`` (:func:`exclusive_cells`): every (pitch, frame) cell keeps only the probability of
    its most probable slot; the other slots get 0 there. The slots then partition the notes they
    claim; a real unison of two sources can no longer be transcribed (how often that happens in
    the targets is ``dup_rate_target`` below).

Duplicate rate (reported beside stem F1)
    A slot *claims* a cell (one pitch in one frame) when its probability is ``>= threshold`` (the
    tuned slot threshold). ``dup_rate`` = number of cells claimed by two or more slots / number of
    cells claimed by at least one slot, pooled over the cells of all files (percent in
    ``metrics.json``). It is computed on the post-processed outputs, so ``exclusive`` gives 0 by
    construction. ``dup_rate_target`` is the same ratio on the target stem rolls (active cells of
    two or more present sources / active cells of at least one): the share of notes that really
    are unisons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slotmpe.experiments import POSTPROCESS_STEPS

# Default criteria, fixed a priori (not tuned on any test split).
MERGE_OVERLAP_MIN = 0.5
MERGE_COS_MIN = 0.5
ACTIVITY_MIN = 0.5


def _check_probs(slot_probs: np.ndarray) -> np.ndarray:
    p = np.asarray(slot_probs)
    if p.ndim != 3:
        raise ValueError(f"slot_probs must be (K, P, T), got shape {p.shape}")
    return p


def exclusive_cells(slot_probs: np.ndarray) -> np.ndarray:
    """Keep, in every cell, only the most probable slot.

    Args:
        slot_probs: ``(K, P, T)`` slot probabilities.

    Returns:
        ``(K, P, T)`` array of the same dtype: ``slot_probs[k]`` where ``k`` is the cell's argmax
        over slots (the lowest index on ties), 0 elsewhere.
    """
    p = _check_probs(slot_probs)
    if p.shape[0] == 0:
        return p.copy()
    win = np.argmax(p, axis=0)  # (P, T)
    keep = np.arange(p.shape[0])[:, None, None] == win[None]
    return np.where(keep, p, 0).astype(p.dtype, copy=False)


def silence_inactive(
    slot_probs: np.ndarray, activity: np.ndarray, activity_min: float = ACTIVITY_MIN
) -> np.ndarray:
    """``slot_probs`` ``(K, P, T)`` with the slots of ``activity`` ``(K,)`` ``< activity_min`` set
    to 0 (a new array)."""
    p = _check_probs(slot_probs)
    a = np.asarray(activity)
    if a.shape != (p.shape[0],):
        raise ValueError(f"activity must be ({p.shape[0]},), got shape {a.shape}")
    return np.where((a >= activity_min)[:, None, None], p, 0).astype(p.dtype, copy=False)


def soft_containment(slot_probs: np.ndarray) -> np.ndarray:
    """``(K, K)`` soft containment ``sum min(p_j, p_k) / min(sum p_j, sum p_k)`` (diagonal 0).

    ``slot_probs`` ``(K, P, T)``; a pair with a silent slot (mass 0) has containment 0.
    """
    p = _check_probs(slot_probs).astype(np.float64, copy=False)
    k = p.shape[0]
    flat = p.reshape(k, -1)
    mass = flat.sum(1)
    out = np.zeros((k, k))
    for j in range(k):
        for i in range(j + 1, k):
            den = min(mass[i], mass[j])
            if den > 0:
                out[i, j] = out[j, i] = np.minimum(flat[i], flat[j]).sum() / den
    return out


def _cosines(emb: np.ndarray) -> np.ndarray:
    e = np.asarray(emb, dtype=np.float64)
    e = e / (np.linalg.norm(e, axis=1, keepdims=True) + 1e-12)
    return e @ e.T


def merge_duplicate_slots(
    slot_probs: np.ndarray,
    activity: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    overlap_min: float = MERGE_OVERLAP_MIN,
    cos_min: float = MERGE_COS_MIN,
) -> tuple[np.ndarray, np.ndarray | None, list[tuple[int, int]]]:
    """Merge slots that claim the same notes with the same timbre (module docstring).

    Args:
        slot_probs: ``(K, P, T)`` slot probabilities.
        activity: ``(K,)`` slot activity probabilities, or ``None``.
        embeddings: ``(K, E)`` slot timbre embeddings, or ``None`` (then maps alone decide).
        overlap_min: minimum soft containment of a merged pair.
        cos_min: minimum timbre cosine of a merged pair (ignored without embeddings).

    Returns:
        ``(probs (K, P, T), activity (K,) | None, merges)``: merged slots are silent (all 0);
        ``merges`` lists ``(kept, removed)`` slot indices in merge order. Inputs are not modified.
    """
    p = _check_probs(slot_probs).copy()
    k = p.shape[0]
    act = None if activity is None else np.asarray(activity).copy()
    if act is not None and act.shape != (k,):
        raise ValueError(f"activity must be ({k},), got shape {act.shape}")
    cos = None
    if embeddings is not None:
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape[0] != k:
            raise ValueError(f"embeddings must be ({k}, E), got shape {emb.shape}")
        cos = _cosines(emb)
    merges: list[tuple[int, int]] = []
    alive = np.ones(k, dtype=bool)
    while True:
        cont = soft_containment(p)
        ok = cont >= overlap_min
        if cos is not None:
            ok &= cos >= cos_min
        ok &= alive[:, None] & alive[None, :]
        np.fill_diagonal(ok, False)
        if not ok.any():
            break
        j, i = np.unravel_index(np.argmax(np.where(ok, cont, -1.0)), cont.shape)
        mass = p.reshape(k, -1).sum(1)
        keep, drop = (int(j), int(i)) if mass[j] >= mass[i] else (int(i), int(j))
        p[keep] = np.maximum(p[keep], p[drop])
        p[drop] = 0
        if act is not None:
            act[keep] = max(act[keep], act[drop])
            act[drop] = 0
        alive[drop] = False
        merges.append((keep, drop))
    return p, act, merges


def suppress_duplicates(
    slot_probs: np.ndarray,
    activity: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    steps: Sequence[str] = ("merge", "exclusive"),
    overlap_min: float = MERGE_OVERLAP_MIN,
    cos_min: float = MERGE_COS_MIN,
    activity_min: float = ACTIVITY_MIN,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply the duplicate-suppression ``steps`` (``"active"``, ``"merge"``, ``"exclusive"``) in
    order.

    Args:
        slot_probs: ``(K, P, T)``; activity: ``(K,)`` or ``None`` (required by ``"active"``);
        embeddings: ``(K, E)`` or ``None``; overlap_min / cos_min: merge criteria
        (:func:`merge_duplicate_slots`); activity_min: the ``"active"`` cut.

    Returns:
        ``(slot_probs (K, P, T), activity (K,) | None)``, new arrays (inputs are not modified).
    """
    bad = [s for s in steps if s not in POSTPROCESS_STEPS]
    if bad:
        raise ValueError(f"unknown post-processing step(s) {bad}; known: {', '.join(POSTPROCESS_STEPS)}")
    p = _check_probs(slot_probs).copy()
    act = None if activity is None else np.asarray(activity).copy()
    for step in steps:
        if step == "active":
            if act is None:
                raise ValueError("post-processing step 'active' needs the slot activity")
            p = silence_inactive(p, act, activity_min)
        elif step == "merge":
            p, act, _ = merge_duplicate_slots(p, act, embeddings, overlap_min, cos_min)
        elif step == "exclusive":
            p = exclusive_cells(p)
    return p, act


def postprocess_prediction(pred: dict[str, np.ndarray], steps: Sequence[str]) -> dict[str, np.ndarray]:
    """The post-processed copy of a :func:`slotmpe.inference.predict` dict.

    ``pred`` has ``slots`` ``(K, P, T)`` and optionally ``activity`` ``(K,)`` and ``timbre``
    ``(K, E)``; only ``slots`` and ``activity`` change. No steps (or no slots) returns ``pred``
    itself.
    """
    if not steps or "slots" not in pred:
        return pred
    out = dict(pred)
    probs, act = suppress_duplicates(pred["slots"], pred.get("activity"), pred.get("timbre"),
                                     steps=steps)
    out["slots"] = probs
    if act is not None:
        out["activity"] = act
    return out


def steps_for_checkpoint(meta: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The post-processing steps of the experiment a checkpoint's metadata names.

    ``meta`` as :func:`slotmpe.models.load_checkpoint` returns it (``experiment`` or
    ``extra["exp"]``); ``()`` when it names no known experiment (e.g. a foreign model).
    """
    from slotmpe.experiments import ALL_EXPERIMENTS

    meta = meta or {}
    extra = meta.get("extra") if isinstance(meta.get("extra"), Mapping) else {}
    name = meta.get("experiment") or extra.get("exp")
    exp = ALL_EXPERIMENTS.get(str(name)) if name is not None else None
    return exp.postprocess if exp is not None else ()


def duplicate_counts(slot_probs: np.ndarray, threshold: float) -> tuple[int, int]:
    """``(claimed, duplicated)`` cells of one file: claimed by >= 1 slot / by >= 2 slots.

    ``slot_probs`` ``(K, P, T)``; a slot claims a cell when its probability is ``>= threshold``.
    """
    p = _check_probs(slot_probs)
    n = (p >= threshold).sum(axis=0)
    return int((n >= 1).sum()), int((n >= 2).sum())


def duplicate_rate(slot_probs: np.ndarray, threshold: float) -> float | None:
    """Share of claimed cells claimed by two or more slots (0..1; ``None`` if none is claimed)."""
    claimed, dup = duplicate_counts(slot_probs, threshold)
    return dup / claimed if claimed else None


def _top2(slot_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = _check_probs(slot_probs).reshape(slot_probs.shape[0], -1)
    if p.shape[0] == 0:
        z = np.zeros(p.shape[1], dtype=np.float32)
        return z, z
    if p.shape[0] == 1:
        return p[0].astype(np.float32), np.zeros(p.shape[1], dtype=np.float32)
    part = -np.partition(-p, 1, axis=0)[:2]  # (2, cells): largest, second largest
    return part[0].astype(np.float32), part[1].astype(np.float32)


@dataclass
class DuplicateCounter:
    """Pools the duplicate rate over files when the threshold is only known later.

    :meth:`add` keeps, per file, the largest and second-largest slot probability of every cell
    (two float32 values per cell); :meth:`counts` / :meth:`rate` evaluate any threshold exactly.
    """

    top1: list[np.ndarray] = field(default_factory=list)
    top2: list[np.ndarray] = field(default_factory=list)

    def add(self, slot_probs: np.ndarray) -> None:
        """Add one file's ``(K, P, T)`` slot probabilities."""
        a, b = _top2(slot_probs)
        self.top1.append(a)
        self.top2.append(b)

    def per_file(self, threshold: float) -> list[tuple[int, int]]:
        """``[(claimed, duplicated), ...]`` per added file at ``threshold``."""
        return [(int((a >= threshold).sum()), int((b >= threshold).sum()))
                for a, b in zip(self.top1, self.top2, strict=True)]

    def counts(self, threshold: float) -> tuple[int, int]:
        """Pooled ``(claimed, duplicated)`` cells at ``threshold``."""
        pf = self.per_file(threshold)
        return sum(c for c, _ in pf), sum(d for _, d in pf)

    def rate(self, threshold: float) -> float | None:
        """Pooled duplicate rate (0..1) at ``threshold``; ``None`` when no cell is claimed."""
        claimed, dup = self.counts(threshold)
        return dup / claimed if claimed else None


def target_duplicate_counts(targets: np.ndarray, present: np.ndarray | None = None) -> tuple[int, int]:
    """``(active, unison)`` cells of target rolls ``(S, P, T)`` (bool/0-1): active in >= 1 / >= 2
    sources, counting only ``present`` ``(S,)`` sources when given."""
    t = np.asarray(targets) > 0.5
    if present is not None:
        t = t[np.asarray(present, dtype=bool)]
    n = t.sum(axis=0)
    return int((n >= 1).sum()), int((n >= 2).sum())
