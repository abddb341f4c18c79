"""Tests of slotmpe.postprocess: duplicate suppression and the duplicate rate."""

from __future__ import annotations

import numpy as np
import pytest

from slotmpe import postprocess as PP


def _probs() -> np.ndarray:
    """3 slots, 4 pitches, 5 frames: slot 1 duplicates slot 0 on most cells; slot 2 elsewhere."""
    p = np.zeros((3, 4, 5), dtype=np.float32)
    p[0, 1, :] = 0.9
    p[1, 1, :4] = 0.6  # the duplicate, weaker
    p[2, 3, :] = 0.8
    p[2, 1, 0] = 0.95  # one cell where slot 2 wins over slot 0
    return p


def test_exclusive_keeps_only_the_winner() -> None:
    p = _probs()
    q = PP.exclusive_cells(p)
    assert q.shape == p.shape and q.dtype == p.dtype
    n_on = (q > 0).sum(axis=0)
    assert n_on.max() == 1
    assert q[2, 1, 0] == pytest.approx(0.95) and q[0, 1, 0] == 0 and q[1, 1, 0] == 0
    np.testing.assert_array_equal(q[0, 1, 1:], p[0, 1, 1:])
    assert not q[1].any()
    np.testing.assert_array_equal(q.max(axis=0), p.max(axis=0))  # the union is unchanged
    assert PP.duplicate_rate(q, 0.5) == 0.0
    # ties go to the lowest slot index
    tie = np.full((2, 1, 1), 0.75, dtype=np.float32)
    np.testing.assert_array_equal(PP.exclusive_cells(tie)[:, 0, 0], [0.75, 0.0])


def test_duplicate_rate_counts_cells() -> None:
    p = _probs()
    # claimed at 0.5: pitch 1 (5 cells) + pitch 3 (5 cells); twice: pitch 1 frames 0-3 (slot 0
    # with slot 1 on frames 0-3, and with slot 2 on frame 0)
    assert PP.duplicate_counts(p, 0.5) == (10, 4)
    assert PP.duplicate_rate(p, 0.5) == pytest.approx(0.4)
    assert PP.duplicate_counts(p, 0.7) == (10, 1)
    assert PP.duplicate_rate(np.zeros((2, 3, 4)), 0.5) is None


def test_duplicate_counter_pools_files_at_any_threshold() -> None:
    rng = np.random.default_rng(0)
    files = [rng.random((4, 6, t)).astype(np.float32) for t in (5, 9, 3)]
    c = PP.DuplicateCounter()
    for f in files:
        c.add(f)
    for th in (0.2, 0.5, 0.9):
        per = [PP.duplicate_counts(f, th) for f in files]
        assert c.per_file(th) == per
        claimed, dup = sum(x for x, _ in per), sum(y for _, y in per)
        assert c.counts(th) == (claimed, dup)
        assert c.rate(th) == pytest.approx(dup / claimed)
    one = PP.DuplicateCounter()
    one.add(files[0][:1])
    assert one.counts(0.5)[1] == 0


def test_merge_joins_duplicate_slots_with_the_same_timbre() -> None:
    p = _probs()
    act = np.array([0.9, 0.7, 0.8], dtype=np.float32)
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], dtype=np.float32)
    before = p.copy()
    q, a, merges = PP.merge_duplicate_slots(p, act, emb)
    np.testing.assert_array_equal(p, before)  # input untouched
    assert merges == [(0, 1)]
    assert not q[1].any() and a[1] == 0 and a[0] == pytest.approx(0.9)
    np.testing.assert_array_equal(q[0], np.maximum(p[0], p[1]))
    np.testing.assert_array_equal(q[2], p[2])
    # different timbres: the maps alone do not merge them
    emb_far = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    assert PP.merge_duplicate_slots(p, act, emb_far)[2] == []
    # no embeddings: the maps decide
    assert PP.merge_duplicate_slots(p)[2] == [(0, 1)]
    # disjoint maps never merge
    d = np.zeros((2, 3, 3), dtype=np.float32)
    d[0, 0], d[1, 2] = 0.9, 0.9
    assert PP.merge_duplicate_slots(d, overlap_min=0.1)[2] == []


def test_soft_containment() -> None:
    p = np.zeros((3, 2, 2))
    p[0] = 1.0
    p[1, 0] = 0.5  # inside slot 0
    c = PP.soft_containment(p)
    assert c[0, 1] == c[1, 0] == pytest.approx(1.0)
    assert c[0, 2] == 0 and c[2, 2] == 0  # silent slot 2


def test_suppress_and_postprocess_prediction() -> None:
    p = _probs()
    pred = {"mix": p.max(0), "slots": p, "activity": np.array([0.9, 0.7, 0.8]),
            "timbre": np.eye(3, 4)}
    assert PP.postprocess_prediction(pred, ()) is pred
    out = PP.postprocess_prediction(pred, ("exclusive",))
    np.testing.assert_array_equal(out["slots"], PP.exclusive_cells(p))
    assert out["mix"] is pred["mix"] and pred["slots"] is p
    both, act = PP.suppress_duplicates(p, pred["activity"], None, steps=("merge", "exclusive"))
    assert (both > 0).sum(axis=0).max() == 1 and act[1] == 0
    with pytest.raises(ValueError, match="unknown post-processing"):
        PP.suppress_duplicates(p, steps=("dedupe",))
    with pytest.raises(ValueError, match=r"\(K, P, T\)"):
        PP.exclusive_cells(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="embeddings"):
        PP.merge_duplicate_slots(p, embeddings=np.zeros((2, 4)))


def test_target_duplicate_counts() -> None:
    t = np.zeros((3, 2, 4), dtype=bool)
    t[0, 0, :] = True
    t[1, 0, :2] = True  # unison with source 0 on 2 cells
    t[2, 1, :] = True
    assert PP.target_duplicate_counts(t) == (8, 2)
    assert PP.target_duplicate_counts(t, np.array([True, False, True])) == (8, 0)


def test_silence_inactive() -> None:
    p = _probs()
    act = np.array([0.9, 0.4, 0.5])
    q = PP.silence_inactive(p, act)
    assert not q[1].any()
    np.testing.assert_array_equal(q[[0, 2]], p[[0, 2]])
    out, a = PP.suppress_duplicates(p, act, steps=("active",))
    np.testing.assert_array_equal(out, q)
    np.testing.assert_array_equal(a, act)
    with pytest.raises(ValueError, match="needs the slot activity"):
        PP.suppress_duplicates(p, steps=("active",))
    with pytest.raises(ValueError, match="activity must be"):
        PP.silence_inactive(p, act[:2])


def test_transcribe_applies_the_checkpoint_postprocessing() -> None:
    from slotmpe.transcribe.notes import postprocess_probs

    p = _probs()
    probs = {"mix": p.max(0), "slots": p, "activity": np.array([0.9, 0.7, 0.8])}
    assert PP.steps_for_checkpoint({"experiment": "4a"}) == ("exclusive",)
    assert PP.steps_for_checkpoint({"extra": {"exp": "4a"}}) == ("exclusive",)
    assert PP.steps_for_checkpoint({"experiment": "2b"}) == ()
    assert PP.steps_for_checkpoint({"experiment": "not-ours"}) == ()
    assert PP.steps_for_checkpoint(None) == ()
    out = postprocess_probs(probs, {"experiment": "4a"})
    np.testing.assert_array_equal(out["slots"], PP.exclusive_cells(p))
    assert postprocess_probs(probs, {"experiment": "2b"}) is probs
