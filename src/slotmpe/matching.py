"""Hungarian matching of predicted slots to the active target maps of a window.

The slot outputs of the model form an unordered set. Before the permutation-invariant losses
(Section III-D of the paper) each of the ``S`` *present* targets of a batch item (a family or stem
that is active in the window) is assigned to exactly one of the ``K`` slots by minimising

``cost[k, s] = mean_{p,t} BCE(slot_logits[k, p, t], target[s, p, t])
              + emb_weight * (1 - cos(slot_emb[k], target_emb[s]))
              + act_weight * softplus(-activity_logits[k])``

with :func:`scipy.optimize.linear_sum_assignment`. The last term (extension 4m, issue 29;
``act_weight`` 0 is the paper's matching) is ``-log sigmoid(activity_logit)``, the activity BCE of
calling slot ``k`` active, added to every entry of slot ``k``'s row: when two slots predict the
same source (near-equal pitch and timbre costs), the one that predicts itself active is matched,
as DETR puts the class probability into its matching cost. A constant per row only decides
*which* slots stay unmatched: with ``S >= K`` every slot is matched and the assignment is the
paper's. Targets that are silent in the window are not matched (``S`` may be anything from 0 to
``K``); slots left without a target are "unmatched" and are supervised as inactive by the losses.

The cost matrix of the whole batch is computed in one vectorised torch expression (no Python loop
over slots or targets) and moved to the CPU once; only the assignment itself runs per batch item.
The mean BCE with logits ``x`` and binary/soft target ``y`` is
``mean(softplus(x)) - mean(x * y)``, so the ``(B, K, S)`` cost needs only a per-slot mean and one
batched matrix product.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

Match = tuple[np.ndarray, np.ndarray]


@torch.no_grad()
def match_cost(
    slot_logits: torch.Tensor,
    targets: torch.Tensor,
    slot_emb: torch.Tensor | None = None,
    target_emb: torch.Tensor | None = None,
    emb_weight: float = 0.0,
    activity_logits: torch.Tensor | None = None,
    act_weight: float = 0.0,
) -> torch.Tensor:
    """Matching cost of every (slot, target) pair.

    Args:
        slot_logits: ``(B, K, P, T)`` slot pitch logits.
        targets: ``(B, S, P, T)`` target pitch maps in ``[0, 1]``.
        slot_emb: ``(B, K, E)`` predicted slot embeddings, or ``None``.
        target_emb: ``(B, S, E)`` target embeddings, or ``None``. A zero row (unknown embedding)
            has cosine 0 with everything, i.e. the same cost for every slot, so it does not change
            the assignment.
        emb_weight: weight of the cosine-distance term (ignored unless both embeddings are given).
        activity_logits: ``(B, K)`` slot activity logits, or ``None``.
        act_weight: weight of the activity term ``softplus(-activity_logits)`` (``>= 0``; ignored
            when 0). ``ValueError`` when it is non-zero and ``activity_logits`` is missing.

    Returns:
        ``(B, K, S)`` float32 cost: mean BCE over ``P*T`` plus ``emb_weight`` times cosine distance
        plus ``act_weight * softplus(-activity_logits)`` (the same for every target of a slot).
    """
    if slot_logits.dim() != 4 or targets.dim() != 4:
        raise ValueError(
            f"slot_logits and targets must be (B, K, P, T) and (B, S, P, T); got "
            f"{tuple(slot_logits.shape)} and {tuple(targets.shape)}"
        )
    b, k, p, t = slot_logits.shape
    if targets.shape[0] != b or targets.shape[2:] != (p, t):
        raise ValueError(
            f"targets {tuple(targets.shape)} do not fit slot_logits {tuple(slot_logits.shape)}"
        )
    x = slot_logits.float().reshape(b, k, p * t)
    y = targets.to(x.dtype).reshape(b, targets.shape[1], p * t)
    n = float(p * t)
    # mean BCE-with-logits = mean(softplus(x)) - mean(x * y)
    cost = F.softplus(x).mean(-1).unsqueeze(-1) - torch.bmm(x, y.transpose(1, 2)) / n
    if slot_emb is not None and target_emb is not None and emb_weight != 0.0:
        if slot_emb.shape[:2] != (b, k) or target_emb.shape[:2] != targets.shape[:2]:
            raise ValueError(
                f"embedding shapes {tuple(slot_emb.shape)} / {tuple(target_emb.shape)} do not fit "
                f"{b} items, {k} slots, {targets.shape[1]} targets"
            )
        se = F.normalize(slot_emb.float(), dim=-1)
        te = F.normalize(target_emb.float(), dim=-1)
        cost = cost + float(emb_weight) * (1.0 - torch.bmm(se, te.transpose(1, 2)))
    if act_weight != 0.0:
        if not act_weight > 0:
            raise ValueError(f"act_weight must be >= 0; got {act_weight}")
        if activity_logits is None:
            raise ValueError(f"act_weight {act_weight} needs the slots' activity_logits")
        if activity_logits.shape != (b, k):
            raise ValueError(
                f"activity_logits {tuple(activity_logits.shape)} must be (B, K) = {(b, k)}"
            )
        cost = cost + float(act_weight) * F.softplus(-activity_logits.float()).unsqueeze(-1)
    return cost


def hungarian_match(
    slot_logits: torch.Tensor,
    targets: torch.Tensor,
    present: torch.Tensor,
    slot_emb: torch.Tensor | None = None,
    target_emb: torch.Tensor | None = None,
    emb_weight: float = 0.0,
    activity_logits: torch.Tensor | None = None,
    act_weight: float = 0.0,
) -> list[Match]:
    """Optimal one-to-one assignment of the present targets to slots, per batch item.

    Args:
        slot_logits: ``(B, K, P, T)`` slot pitch logits.
        targets: ``(B, S, P, T)`` target maps (padded; padding rows must have ``present`` False).
        present: ``(B, S)`` bool, which targets take part in the matching.
        slot_emb: ``(B, K, E)`` or ``None``.
        target_emb: ``(B, S, E)`` or ``None``.
        emb_weight: weight of the cosine-distance term of the cost.
        activity_logits: ``(B, K)`` slot activity logits, or ``None``.
        act_weight: weight of the activity term of the cost (:func:`match_cost`; 0 = the paper's).

    Returns:
        One ``(slot_idx, target_idx)`` pair of int64 arrays per batch item, equal lengths
        ``min(K, n_present)``, sorted by slot index; ``target_idx`` indexes the ``S`` axis of
        ``targets``. Both arrays are empty when no target is present.
    """
    if present.shape != targets.shape[:2]:
        raise ValueError(
            f"present {tuple(present.shape)} must be (B, S) = {tuple(targets.shape[:2])}"
        )
    cost = match_cost(slot_logits, targets, slot_emb, target_emb, emb_weight, activity_logits,
                      act_weight).cpu().numpy()
    pres = present.detach().to("cpu", torch.bool).numpy()
    out: list[Match] = []
    empty = np.zeros(0, dtype=np.int64)
    for i in range(cost.shape[0]):
        cols = np.flatnonzero(pres[i])
        if cols.size == 0:
            out.append((empty.copy(), empty.copy()))
            continue
        rows_m, cols_m = linear_sum_assignment(cost[i][:, cols])
        out.append((rows_m.astype(np.int64), cols[cols_m].astype(np.int64)))
    return out
