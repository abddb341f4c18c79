"""Tests of slotmpe.matching: optimal assignment on constructed cases, S < K, S = 0, cost values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slotmpe.matching import hungarian_match, match_cost

torch.set_num_threads(1)


def _maps(n: int, p: int = 6, t: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, p, t, generator=g) > 0.6).float()


def _logits_from(maps: torch.Tensor) -> torch.Tensor:
    return (maps * 2 - 1) * 8.0


def test_cost_equals_mean_bce_and_cosine() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    tgt = torch.rand(2, 2, 4, 5, generator=g)
    se, te = torch.randn(2, 3, 7, generator=g), torch.randn(2, 2, 7, generator=g)
    cost = match_cost(logits, tgt, se, te, emb_weight=0.3)
    for b, k, s in itertools.product(range(2), range(3), range(2)):
        ref = F.binary_cross_entropy_with_logits(logits[b, k], tgt[b, s]) + 0.3 * (
            1 - F.cosine_similarity(se[b, k], te[b, s], dim=0)
        )
        assert cost[b, k, s].item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)


def test_recovers_permutation_full() -> None:
    targets = _maps(4, seed=3)
    perm = [2, 0, 3, 1]  # slot k predicts target perm[k]
    logits = _logits_from(targets[perm]).unsqueeze(0)
    (slots, tg), = hungarian_match(logits, targets.unsqueeze(0), torch.ones(1, 4, dtype=torch.bool))
    assert slots.tolist() == [0, 1, 2, 3]
    assert tg.tolist() == perm


def test_optimal_against_brute_force() -> None:
    g = torch.Generator().manual_seed(5)
    k, s = 5, 3
    logits = torch.randn(4, k, 6, 5, generator=g)
    targets = torch.rand(4, s, 6, 5, generator=g)
    present = torch.ones(4, s, dtype=torch.bool)
    cost = match_cost(logits, targets).numpy()
    for b, (rows, cols) in enumerate(hungarian_match(logits, targets, present)):
        got = cost[b, rows, cols].sum()
        best = min(
            sum(cost[b, r, c] for r, c in zip(rs, range(s), strict=True))
            for rs in itertools.permutations(range(k), s)
        )
        assert got == pytest.approx(best, rel=1e-6)


def test_fewer_targets_than_slots_and_absent_targets() -> None:
    # 8 slots, targets padded to 8 with only rows 1 and 5 present
    maps = _maps(8, seed=7)
    logits = torch.full((1, 8, 6, 5), -8.0)
    logits[0, 6] = _logits_from(maps[1])
    logits[0, 2] = _logits_from(maps[5])
    # an absent target that slot 0 would match perfectly must not be used
    logits[0, 0] = _logits_from(maps[3])
    present = torch.zeros(1, 8, dtype=torch.bool)
    present[0, [1, 5]] = True
    (slots, tg), = hungarian_match(logits, maps.unsqueeze(0), present)
    assert dict(zip(slots.tolist(), tg.tolist(), strict=True)) == {2: 5, 6: 1}
    assert slots.dtype == np.int64 and tg.dtype == np.int64


def test_no_present_target() -> None:
    logits = torch.randn(2, 4, 6, 5)
    present = torch.zeros(2, 4, dtype=torch.bool)
    present[1, 2] = True
    out = hungarian_match(logits, _maps(4).expand(2, -1, -1, -1), present)
    assert len(out) == 2
    assert out[0][0].size == 0 and out[0][1].size == 0
    assert out[1][1].tolist() == [2] and out[1][0].size == 1


def test_embedding_term_breaks_ties() -> None:
    # two identical target maps: only the embeddings tell which slot is which
    m = _maps(1, seed=9)
    targets = torch.cat([m, m]).unsqueeze(0)
    logits = _logits_from(targets)
    e = torch.eye(4)[:2]
    slot_emb = e[[1, 0]].unsqueeze(0)  # slot 0 looks like source 1
    out_emb = hungarian_match(logits, targets, torch.ones(1, 2, dtype=torch.bool),
                              slot_emb, e.unsqueeze(0), emb_weight=1.0)
    assert out_emb[0][1].tolist() == [1, 0]
    # the embedding only matters with a non-zero weight
    out_w0 = hungarian_match(logits, targets, torch.ones(1, 2, dtype=torch.bool),
                             slot_emb, e.unsqueeze(0), emb_weight=0.0)
    assert out_w0[0][1].tolist() == [0, 1]


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="present"):
        hungarian_match(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), torch.ones(1, 3).bool())
    with pytest.raises(ValueError, match="do not fit"):
        match_cost(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 5))


# ---- activity term of the cost (extension 4m, issue 29) ----------------------------------------


def test_activity_term_matches_the_slot_that_predicts_itself_active() -> None:
    """Two slots with identical pitch maps compete for one target: with the activity term the
    slot with the higher activity logit is matched, whichever index it has; without it the tie
    goes to the first slot."""
    tgt = _maps(1, seed=4)
    logits = torch.stack([_logits_from(tgt[0])] * 2 + [_logits_from(1 - tgt[0])])[None]
    present = torch.ones(1, 1, dtype=torch.bool)
    for act, expected in (([-2.0, 3.0, 0.0], 1), ([3.0, -2.0, 0.0], 0), ([0.1, 0.2, 9.0], 1)):
        a = torch.tensor([act])
        (rows, cols), = hungarian_match(logits, tgt[None], present, activity_logits=a,
                                        act_weight=1.0)
        assert rows.tolist() == [expected] and cols.tolist() == [0]
    (rows, _), = hungarian_match(logits, tgt[None], present,
                                 activity_logits=torch.tensor([[-2.0, 3.0, 0.0]]), act_weight=0.0)
    assert rows.tolist() == [0]  # the paper's cost: a tie, linear_sum_assignment takes slot 0


def test_activity_term_value() -> None:
    g = torch.Generator().manual_seed(2)
    logits, tgt = torch.randn(2, 3, 4, 5, generator=g), torch.rand(2, 2, 4, 5, generator=g)
    act = torch.randn(2, 3, generator=g) * 3
    base = match_cost(logits, tgt)
    cost = match_cost(logits, tgt, activity_logits=act, act_weight=0.3)
    ref = base + 0.3 * -torch.log(torch.sigmoid(act))[..., None]
    torch.testing.assert_close(cost, ref, rtol=1e-5, atol=1e-6)


def test_zero_activity_weight_is_the_paper_matching() -> None:
    """``act_weight`` 0 gives exactly the old cost and assignment on random inputs (S < K too)."""
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(3, 8, 6, 5, generator=g) * 3
        tgt = (torch.rand(3, 8, 6, 5, generator=g) > 0.6).float()
        present = torch.rand(3, 8, generator=g) > 0.5
        se, te = torch.randn(3, 8, 7, generator=g), torch.randn(3, 8, 7, generator=g)
        act = torch.randn(3, 8, generator=g) * 5
        old = match_cost(logits, tgt, se, te, 1.0)
        new = match_cost(logits, tgt, se, te, 1.0, activity_logits=act, act_weight=0.0)
        assert torch.equal(old, new)
        a = hungarian_match(logits, tgt, present, se, te, 1.0)
        b = hungarian_match(logits, tgt, present, se, te, 1.0, activity_logits=act, act_weight=0.0)
        for (ra, ca), (rb, cb) in zip(a, b, strict=True):
            assert np.array_equal(ra, rb) and np.array_equal(ca, cb)


def test_activity_term_changes_nothing_when_every_slot_is_matched() -> None:
    """A constant per slot row cannot change a full (S = K) assignment."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 4, 6, 5, generator=g) * 3
    tgt = (torch.rand(2, 4, 6, 5, generator=g) > 0.5).float()
    present = torch.ones(2, 4, dtype=torch.bool)
    act = torch.randn(2, 4, generator=g) * 5
    a = hungarian_match(logits, tgt, present)
    b = hungarian_match(logits, tgt, present, activity_logits=act, act_weight=3.0)
    for (ra, ca), (rb, cb) in zip(a, b, strict=True):
        assert np.array_equal(ra, rb) and np.array_equal(ca, cb)


def test_activity_term_errors() -> None:
    logits, tgt = torch.zeros(1, 2, 3, 4), torch.zeros(1, 1, 3, 4)
    with pytest.raises(ValueError, match="needs the slots' activity_logits"):
        match_cost(logits, tgt, act_weight=1.0)
    with pytest.raises(ValueError, match="must be \\(B, K\\)"):
        match_cost(logits, tgt, activity_logits=torch.zeros(1, 3), act_weight=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        match_cost(logits, tgt, activity_logits=torch.zeros(1, 2), act_weight=-1.0)
