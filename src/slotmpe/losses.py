"""Training objective of the paper (Section III-D): one named function per loss term.

Every pitch-map term is a binary cross-entropy. The terms (names as in
:data:`slotmpe.experiments.LOSS_TERMS`):

``mix``         mixture MPE: global ``mix_logits`` vs the mixture roll.
``fixed_slot``  1b: slot ``k`` vs family ``k`` in :data:`slotmpe.constants.FAMILIES` order.
``union``       noisy-OR of the slots (Eq. 2) vs the mixture roll, computed in log space.
``slot``        matched slot pitch maps vs their targets (after Hungarian matching).
``activity``    slot activity logits: matched slots -> 1, unmatched -> 0.
``inactive``    pitch maps of unmatched slots pushed towards 0.
``timbre``      cosine distance ``1 - cos`` of matched slot embeddings vs source embeddings.
``poly_mix``    mixture polyphony cross-entropy over classes 0..7.
``poly_slot``   Smooth L1 between the per-frame sum over pitch of a matched slot's probabilities and
                the source's (unclipped) polyphony.
``overlap``     extension (issue 18): pairwise overlap ``sum_{j<k} p_j p_k`` of the slot
                probabilities in every cell, mean over cells (duplicate suppression).
``mask``        extension 4h (issue 23): BCE of every slot's soft mask (``outputs["masks"]``, the
                slot-attention decoder's masks over pitch-time cells, summing to 1 over slots)
                against its matched stem's ratio mask (``batch["mask_target"]``) or 0 for an
                unmatched slot, mean over all slots and the valid cells (``batch["mask_valid"]``).

Reductions: each term is a mean over the elements it covers in the whole batch (e.g. ``slot`` is
the mean BCE over all matched (slot, pitch, frame) cells of the batch, ``inactive`` over all
unmatched-slot cells). A term that covers nothing in a batch (no matched pair, no unmatched slot, no
known source embedding) is an exact zero that is still connected to the graph.

:func:`compute_losses` evaluates the terms an experiment trains with (weights from
:func:`slotmpe.experiments.default_loss_weights`) plus, for logging only, the polyphony terms of a
model that has the polyphony head but no polyphony loss (3a, 3b's slot term).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from slotmpe.constants import FAMILIES
from slotmpe.experiments import (
    LOSS_TERMS,
    Experiment,
    active_loss_terms,
    resolve_activity_match_weight,
)
from slotmpe.matching import Match, hungarian_match

# Lower bound of the summed softplus in the union term (log(1 - exp(-s)) diverges at s = 0).
_UNION_EPS = 1e-7


def _zero_like(x: torch.Tensor) -> torch.Tensor:
    """A scalar 0 that keeps ``x`` in the autograd graph (so ``backward`` always works)."""
    return x.sum() * 0.0


def _pairs(matches: list[Match], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Flatten per-item matches into index tensors ``(batch_idx, slot_idx, target_idx)`` of length M."""
    bi, si, ti = [], [], []
    for b, (s, t) in enumerate(matches):
        bi.extend([b] * len(s))
        si.extend(int(v) for v in s)
        ti.extend(int(v) for v in t)
    mk = lambda v: torch.tensor(v, dtype=torch.long, device=device)  # noqa: E731
    return mk(bi), mk(si), mk(ti)


def matched_mask(matches: list[Match], n_slots: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(B, K)`` bool: which slots were assigned a target."""
    m = torch.zeros(len(matches), n_slots, dtype=torch.bool, device=device)
    for b, (s, _t) in enumerate(matches):
        if len(s):
            m[b, torch.as_tensor(s, dtype=torch.long, device=device)] = True
    return m


def mix_loss(mix_logits: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """Mixture MPE BCE. ``mix_logits`` ``(B, P, T)``, ``mix`` ``(B, P, T)`` in [0, 1]; scalar."""
    return F.binary_cross_entropy_with_logits(mix_logits, mix.to(mix_logits.dtype))


def fixed_slot_loss(slot_logits: torch.Tensor, family: torch.Tensor) -> torch.Tensor:
    """Fixed-order family slot BCE (1b): slot ``k`` vs family ``k`` (``constants.FAMILIES`` order).

    ``slot_logits`` ``(B, K, P, T)`` with ``K == len(FAMILIES)``; ``family`` ``(B, 4, P, T)``.
    """
    if slot_logits.shape[1] != len(FAMILIES) or family.shape[1] != len(FAMILIES):
        raise ValueError(
            f"fixed-order family slots need {len(FAMILIES)} slots and family maps; got "
            f"slot_logits {tuple(slot_logits.shape)}, family {tuple(family.shape)}"
        )
    return F.binary_cross_entropy_with_logits(slot_logits, family.to(slot_logits.dtype))


def union_log_probs(slot_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log M`` and ``log(1 - M)`` of the noisy-OR union ``M = 1 - prod_k (1 - sigmoid(l_k))`` (Eq. 2).

    With ``s = sum_k softplus(l_k) = -log prod_k (1 - sigmoid(l_k))``:
    ``log(1 - M) = -s`` and ``log M = log(1 - exp(-s)) = log(-expm1(-s))``, both finite and
    accurate for any logits (``s`` is clamped at 1e-7 for the second).

    ``slot_logits`` ``(B, K, P, T)``; returns two ``(B, P, T)`` tensors.
    """
    s = F.softplus(slot_logits.float()).sum(dim=1)
    log_m = torch.log(-torch.expm1(-s.clamp_min(_UNION_EPS)))
    return log_m, -s


def union_loss(slot_logits: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """Slot-union BCE: the Eq. 2 noisy-OR of all slots vs the mixture roll.

    Equal to ``BCE(union_prob, mix)`` with ``union_prob = 1 - prod_k(1 - sigmoid(slot_logits))``
    (the model's ``union_prob`` output), but computed from the logits in log space so that it neither
    saturates nor overflows. ``slot_logits`` ``(B, K, P, T)``, ``mix`` ``(B, P, T)``; scalar.
    """
    log_m, log_1m = union_log_probs(slot_logits)
    y = mix.to(log_m.dtype)
    return -(y * log_m + (1.0 - y) * log_1m).mean()


def slot_pitch_loss(
    slot_logits: torch.Tensor, targets: torch.Tensor, matches: list[Match]
) -> torch.Tensor:
    """Matched slot pitch BCE, mean over all matched (slot, pitch, frame) cells of the batch.

    ``slot_logits`` ``(B, K, P, T)``, ``targets`` ``(B, S, P, T)``; 0 when nothing is matched.
    """
    b, s, t = _pairs(matches, slot_logits.device)
    if b.numel() == 0:
        return _zero_like(slot_logits)
    return F.binary_cross_entropy_with_logits(
        slot_logits[b, s], targets[b, t].to(slot_logits.dtype)
    )


def activity_loss(activity_logits: torch.Tensor, matches: list[Match]) -> torch.Tensor:
    """Slot activity BCE: matched slots active (1), unmatched inactive (0). ``(B, K)`` logits; scalar."""
    target = matched_mask(matches, activity_logits.shape[1], activity_logits.device)
    return F.binary_cross_entropy_with_logits(activity_logits, target.to(activity_logits.dtype))


def inactive_loss(slot_logits: torch.Tensor, matches: list[Match]) -> torch.Tensor:
    """Inactive-slot pitch suppression: BCE towards 0 (``softplus(logit)``) over unmatched slots.

    ``slot_logits`` ``(B, K, P, T)``; mean over all unmatched (slot, pitch, frame) cells; 0 when
    every slot is matched.
    """
    unmatched = ~matched_mask(matches, slot_logits.shape[1], slot_logits.device)
    if not bool(unmatched.any()):
        return _zero_like(slot_logits)
    return F.softplus(slot_logits[unmatched]).mean()


def timbre_loss(
    slot_emb: torch.Tensor, target_emb: torch.Tensor, matches: list[Match]
) -> torch.Tensor:
    """Cosine distance ``1 - cos`` of matched slot embeddings vs source embeddings.

    ``slot_emb`` ``(B, K, E)``, ``target_emb`` ``(B, S, E)``. Pairs whose source embedding is
    unknown (an all-zero row) are skipped; mean over the remaining pairs, 0 when none is left.
    """
    b, s, t = _pairs(matches, slot_emb.device)
    if b.numel() == 0:
        return _zero_like(slot_emb)
    tgt = target_emb[b, t].to(slot_emb.dtype)
    known = tgt.abs().sum(-1) > 0
    if not bool(known.any()):
        return _zero_like(slot_emb)
    cos = F.cosine_similarity(slot_emb[b, s][known], tgt[known], dim=-1, eps=1e-8)
    return (1.0 - cos).mean()


def poly_mix_loss(poly_logits: torch.Tensor, poly: torch.Tensor) -> torch.Tensor:
    """Mixture polyphony cross-entropy. ``poly_logits`` ``(B, 8, T)``, ``poly`` ``(B, T)`` int 0..7."""
    return F.cross_entropy(poly_logits.float(), poly.long())


def poly_slot_loss(
    slot_logits: torch.Tensor, source_poly: torch.Tensor, matches: list[Match]
) -> torch.Tensor:
    """Slot polyphony Smooth L1 (beta 1) of matched pairs.

    The per-frame pitch mass ``sum_p sigmoid(slot_logits[b, k, p, t])`` of a matched slot is compared
    with the source's count ``source_poly[b, s, t]``. ``slot_logits`` ``(B, K, P, T)``,
    ``source_poly`` ``(B, S, T)``; mean over matched (pair, frame); 0 when nothing is matched.
    """
    b, s, t = _pairs(matches, slot_logits.device)
    if b.numel() == 0:
        return _zero_like(slot_logits)
    mass = torch.sigmoid(slot_logits[b, s].float()).sum(dim=1)  # (M, T)
    return F.smooth_l1_loss(mass, source_poly[b, t].to(mass.dtype))


def overlap_loss(slot_logits: torch.Tensor) -> torch.Tensor:
    """Pairwise slot overlap ``sum_{j<k} p_j p_k`` per (pitch, frame) cell, mean over cells.

    ``p = sigmoid(slot_logits)`` ``(B, K, P, T)``; the pair sum is ``((sum_k p_k)^2 -
    sum_k p_k^2) / 2``. 0 when at most one slot is on in every cell; penalises two slots claiming
    the same note (a real unison of two sources pays it too). Scalar.
    """
    p = torch.sigmoid(slot_logits.float())
    s = p.sum(dim=1)
    return ((s * s - (p * p).sum(dim=1)) * 0.5).mean()


_MASK_EPS = 1e-6  # probability clamp of the mask BCE (the masks are softmax outputs)


def mask_loss(
    masks: torch.Tensor,
    mask_target: torch.Tensor,
    mask_valid: torch.Tensor,
    matches: list[Match],
) -> torch.Tensor:
    """Slot-mask supervision by the stems' ratio masks (extension 4h).

    Slot ``k`` matched to source ``s`` has target ``mask_target[b, s]``; an unmatched slot has
    target 0. The BCE ``-(y log m + (1 - y) log(1 - m))`` (``m`` clamped to ``[1e-6, 1 - 1e-6]``)
    is averaged over all ``K`` slots and the valid cells of the batch; 0 when no cell is valid.

    Args:
        masks: slot masks ``(B, K, P, T)`` in ``[0, 1]`` (sum to 1 over ``K``).
        mask_target: ratio masks ``(B, S, P, T)`` of the sources (:mod:`slotmpe.stem_masks`).
        mask_valid: ``(B, P, T)`` bool, cells with stem energy (the others carry no target).
        matches: per-item Hungarian matches (slot indices, source indices).
    """
    valid = mask_valid.bool()
    if not bool(valid.any()):
        return _zero_like(masks)
    target = torch.zeros_like(masks)
    b, s, t = _pairs(matches, masks.device)
    if b.numel():
        target[b, s] = mask_target[b, t].to(masks.dtype)
    m = masks.clamp(_MASK_EPS, 1.0 - _MASK_EPS)
    bce = -(target * torch.log(m) + (1.0 - target) * torch.log1p(-m))  # (B, K, P, T)
    w = valid.unsqueeze(1).to(bce.dtype)
    return (bce * w).sum() / (w.sum() * masks.shape[1])


def slot_targets(
    exp: Experiment, batch: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The maps slots are compared with: ``(targets (B,S,P,T), present (B,S) bool, emb (B,S,E)|None)``.

    Family experiments: the 4 family rolls, present where the family has any activity in the window,
    no embeddings. Stem experiments: ``sources``, ``source_present``, ``source_emb``.
    """
    kind = exp.target_kind
    if kind == "family":
        fam = batch["family"]
        return fam, fam.flatten(2).amax(-1) > 0, None
    if kind == "source":
        return batch["sources"], batch["source_present"].bool(), batch.get("source_emb")
    raise ValueError(f"experiment {exp.name} has no slot targets (task {exp.task!r})")


def logged_terms(exp: Experiment) -> tuple[str, ...]:
    """Terms :func:`compute_losses` returns for ``exp`` (besides ``total``), in ``LOSS_TERMS`` order.

    The trained terms plus the polyphony terms of a model with a polyphony head (logged even when
    their weight is 0, as in 3a).
    """
    on = set(active_loss_terms(exp))
    if exp.poly_head:
        on |= {"poly_mix"}
        if exp.matching == "hungarian":
            on |= {"poly_slot"}
    return tuple(t for t in LOSS_TERMS if t in on)


def match_slots(
    exp: Experiment,
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    emb_weight: float = 1.0,
    act_weight: float = 0.0,
) -> list[Match]:
    """Hungarian matching of ``outputs["slot_logits"]`` to the experiment's present targets.

    The timbre cosine term enters the cost (with ``emb_weight``) only when the model has a timbre
    head and the batch carries source embeddings. The activity term
    ``w * softplus(-outputs["activity_logits"])`` (extension 4m) enters with
    ``w = resolve_activity_match_weight(exp, act_weight)``: the row's own weight where it has one
    (4m), else ``act_weight`` (``train.activity_match_weight``; 0 = the paper's matching).
    """
    targets, present, temb = slot_targets(exp, batch)
    semb = outputs.get("timbre") if exp.timbre_head else None
    use_emb = semb is not None and temb is not None
    w_act = resolve_activity_match_weight(exp, act_weight)
    if w_act and "activity_logits" not in outputs:
        raise ValueError(
            f"experiment {exp.name}: activity_match_weight {w_act} needs the model's "
            "activity_logits output"
        )
    return hungarian_match(
        outputs["slot_logits"],
        targets,
        present,
        semb if use_emb else None,
        temb if use_emb else None,
        emb_weight if use_emb else 0.0,
        outputs["activity_logits"].detach() if w_act else None,
        w_act,
    )


def compute_losses(
    exp: Experiment,
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    weights: Mapping[str, float],
    match_emb_weight: float = 1.0,
    matches: list[Match] | None = None,
    match_act_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """All loss terms of ``exp`` and their weighted sum.

    Args:
        exp: the experiment (decides which terms are computed and which targets the slots get).
        outputs: the model's forward dict (``mix_logits`` ``(B,72,T)``, ``slot_logits``
            ``(B,K,72,T)``, ``activity_logits`` ``(B,K)``, ``timbre`` ``(B,K,128)``,
            ``poly_logits`` ``(B,8,T)``, ``masks`` ``(B,K,72,T)`` as the model has them).
        batch: a collated :class:`slotmpe.data.WindowDataset` batch (``mix`` ``(B,72,T)``,
            ``family`` ``(B,4,72,T)``, ``sources`` ``(B,8,72,T)``, ``source_present`` ``(B,8)``,
            ``source_emb`` ``(B,8,128)``, ``poly`` ``(B,T)``, ``source_poly`` ``(B,8,T)``; for
            4h also ``mask_target`` ``(B,8,72,T)`` and ``mask_valid`` ``(B,72,T)``), on the
            outputs' device.
        weights: weight per term (``default_loss_weights(exp)``); terms with weight 0 are logged
            (computed without gradient) but do not enter ``total``.
        match_emb_weight: weight of the timbre cosine distance in the matching cost.
        matches: precomputed matches (else computed here for Hungarian experiments).
        match_act_weight: weight of the slot activity term in the matching cost
            (``train.activity_match_weight``; a row with its own weight, 4m, overrides it; see
            :func:`match_slots`).

    Returns:
        ``{term: scalar tensor for term in logged_terms(exp)} | {"total": weighted sum}``.
    """
    terms = logged_terms(exp)
    for name, w in weights.items():
        if w and name not in terms:
            raise ValueError(
                f"loss term {name!r} has weight {w} but experiment {exp.name} cannot compute it "
                f"(its terms: {', '.join(terms)})"
            )
    if exp.remix and "remixed" not in batch:
        raise ValueError(
            f"experiment {exp.name} trains on remixed windows, but this batch does not come from "
            "slotmpe.remix.experiment_datasets (no 'remixed' key); training it would train its "
            "base instead"
        )
    if exp.matching == "hungarian" and matches is None:
        matches = match_slots(exp, outputs, batch, match_emb_weight, match_act_weight)

    def term(name: str) -> torch.Tensor:
        if name == "mix":
            return mix_loss(outputs["mix_logits"], batch["mix"])
        if name == "fixed_slot":
            return fixed_slot_loss(outputs["slot_logits"], batch["family"])
        if name == "union":
            return union_loss(outputs["slot_logits"], batch["mix"])
        assert matches is not None or name == "poly_mix"
        if name == "slot":
            return slot_pitch_loss(outputs["slot_logits"], slot_targets(exp, batch)[0], matches)
        if name == "activity":
            return activity_loss(outputs["activity_logits"], matches)
        if name == "inactive":
            return inactive_loss(outputs["slot_logits"], matches)
        if name == "timbre":
            emb = slot_targets(exp, batch)[2]
            if emb is None:
                raise ValueError(f"experiment {exp.name} needs source_emb in the batch")
            return timbre_loss(outputs["timbre"], emb, matches)
        if name == "poly_mix":
            return poly_mix_loss(outputs["poly_logits"], batch["poly"])
        if name == "poly_slot":
            return poly_slot_loss(outputs["slot_logits"], batch["source_poly"], matches)
        if name == "overlap":
            return overlap_loss(outputs["slot_logits"])
        if name == "mask":
            if "mask_target" not in batch or "mask_valid" not in batch:
                raise ValueError(
                    f"experiment {exp.name} supervises the slot masks: its batches need "
                    "mask_target/mask_valid (datasets built with mask_targets=True, see "
                    "slotmpe.remix.experiment_datasets)"
                )
            return mask_loss(outputs["masks"], batch["mask_target"], batch["mask_valid"], matches)
        raise KeyError(name)

    out: dict[str, torch.Tensor] = {}
    total: torch.Tensor | None = None
    for name in terms:
        w = float(weights.get(name, 0.0))
        if w:
            v = term(name)
            total = v * w if total is None else total + v * w
        else:
            with torch.no_grad():
                v = term(name)
        out[name] = v
    if total is None:
        raise ValueError(f"experiment {exp.name}: every loss weight is 0")
    out["total"] = total
    return out
