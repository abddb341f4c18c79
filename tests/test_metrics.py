"""Tests of slotmpe.metrics against hand-computed cases, scikit-learn and mir_eval."""

from __future__ import annotations

import warnings

import mir_eval
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from slotmpe import metrics as M
from slotmpe.constants import MIDI_MIN, midi_to_hz


def _random_rolls(rng: np.random.Generator, p: int = 72, t: int = 50, density: float = 0.08):
    ref = rng.random((p, t)) < density
    scores = np.clip(ref * 0.55 + rng.random((p, t)) * 0.6, 0, 1).astype(np.float32)
    return ref, scores


def test_prf_hand_computed() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 1], dtype=bool)
    scores = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.5, 0.5])
    # >= 0.5 predicts cells 0, 1, 3, 5, 6 -> TP 3 (0, 1, 6), FP 2 (3, 5), FN 1 (2)
    assert M.counts_at_threshold(labels, scores, 0.5) == (3, 2, 1)
    prf = M.prf_at_threshold(labels, scores, 0.5)
    assert prf["p"] == pytest.approx(3 / 5)
    assert prf["r"] == pytest.approx(3 / 4)
    assert prf["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert prf["f1"] == pytest.approx(f1_score(labels, scores >= 0.5))


def test_prf_empty_denominators() -> None:
    assert M.prf_from_counts(0, 0, 0) == {"p": 0.0, "r": 0.0, "f1": 0.0}
    assert M.prf_from_counts(0, 3, 0)["p"] == 0.0


def test_ap_hand_computed_and_sklearn() -> None:
    labels = np.array([1, 0, 1, 0], dtype=bool)
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    # ranking: +, -, +, -  -> AP = (1/1 + 2/3) / 2
    assert M.average_precision(labels, scores) == pytest.approx((1 + 2 / 3) / 2)
    rng = np.random.default_rng(0)
    ref, sc = _random_rolls(rng)
    assert M.average_precision(ref, sc) == pytest.approx(average_precision_score(ref.ravel(), sc.ravel()))
    assert M.average_precision(np.zeros(5, bool), np.ones(5)) is None


def test_pooled_cells_pool_across_files() -> None:
    rng = np.random.default_rng(1)
    pooled = M.PooledCells()
    refs, scs = [], []
    for t in (30, 45):
        ref, sc = _random_rolls(rng, t=t)
        pooled.add(ref, sc)
        refs.append(ref.ravel())
        scs.append(sc.ravel())
    y, s = np.concatenate(refs), np.concatenate(scs)
    assert pooled.n_cells == y.size
    assert pooled.ap() == pytest.approx(average_precision_score(y, s))
    assert pooled.prf(0.5)["f1"] == pytest.approx(f1_score(y, s >= 0.5))
    # pooling is not the mean of per-file F1
    per_file = np.mean([f1_score(a, b >= 0.5) for a, b in zip(refs, scs, strict=True)])
    assert pooled.prf(0.5)["f1"] != pytest.approx(per_file, abs=1e-12)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        M.average_precision(np.zeros((2, 3), bool), np.zeros((3, 2)))


def test_threshold_search_picks_f1_optimal_value() -> None:
    labels = np.array([1, 1, 0, 1, 0, 0, 0, 1], dtype=bool)
    scores = np.array([0.95, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1])
    # candidate t -> F1: 0.95: 2/5; 0.8: 4/6; 0.7: 4/7; 0.6: 6/8 (best); 0.4: 6/9; ...
    thr, f1 = M.best_f1_threshold(labels, scores)
    assert f1 == pytest.approx(0.75)
    assert 0.4 < thr <= 0.6
    assert thr == pytest.approx(0.5)  # midpoint between 0.6 and the next lower score 0.4
    assert M.prf_at_threshold(labels, scores, thr)["f1"] == pytest.approx(0.75)


def test_threshold_search_matches_brute_force() -> None:
    rng = np.random.default_rng(2)
    ref, sc = _random_rolls(rng, t=40)
    sc = np.round(sc, 2)  # ties
    thr, f1 = M.best_f1_threshold(ref, sc)
    brute = max(f1_score(ref.ravel(), sc.ravel() >= t) for t in np.unique(sc))
    assert f1 == pytest.approx(brute)
    assert M.prf_at_threshold(ref, sc, thr)["f1"] == pytest.approx(brute)


def test_threshold_search_without_positives_returns_default() -> None:
    assert M.best_f1_threshold(np.zeros(4, bool), np.linspace(0, 1, 4)) == (0.5, 0.0)


def test_roll_to_mir_eval_frequencies() -> None:
    roll = np.zeros((72, 3), dtype=bool)
    roll[0, 0] = roll[46, 0] = roll[10, 2] = True
    times, freqs = M.roll_to_mir_eval(roll)
    assert times == pytest.approx([0.0, 0.032, 0.064])
    assert freqs[0] == pytest.approx([midi_to_hz(MIDI_MIN), 440.0])
    assert freqs[1].size == 0
    assert freqs[2] == pytest.approx([midi_to_hz(MIDI_MIN + 10)])


def test_pooled_prf_agrees_with_mir_eval() -> None:
    rng = np.random.default_rng(3)
    pooled = M.PooledCells()
    ref_all, est_all = [], []
    for t in (40, 25):
        ref, sc = _random_rolls(rng, t=t)
        pooled.add(ref, sc)
        ref_all.append(ref)
        est_all.append(sc >= 0.5)
    # mir_eval on the files concatenated in time = pooled counts
    ref_t, ref_f = M.roll_to_mir_eval(np.concatenate(ref_all, axis=1))
    est_t, est_f = M.roll_to_mir_eval(np.concatenate(est_all, axis=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = mir_eval.multipitch.evaluate(ref_t, ref_f, est_t, est_f)
    ours = pooled.prf(0.5)
    assert ours["p"] == pytest.approx(scores["Precision"])
    assert ours["r"] == pytest.approx(scores["Recall"])
    me_f1 = 2 * scores["Precision"] * scores["Recall"] / (scores["Precision"] + scores["Recall"])
    assert ours["f1"] == pytest.approx(me_f1)


def _slot_case(rng: np.random.Generator, k: int = 4, s: int = 3, t: int = 20):
    targets = np.zeros((s, 72, t), dtype=bool)
    for i in range(s):
        targets[i, 10 * i + rng.integers(0, 5, size=t), np.arange(t)] = True
    return targets


def test_perfect_slots_in_permuted_order_score_100() -> None:
    rng = np.random.default_rng(4)
    targets = _slot_case(rng)
    slots = np.zeros((4, 72, 20), dtype=np.float32)
    perm = [2, 0, 3]  # target i lives in slot perm[i]; slot 1 is silent
    for i, k in enumerate(perm):
        slots[k] = targets[i]
    rows, cols = M.match_slots(slots, targets)
    assert dict(zip(rows.tolist(), cols.tolist(), strict=True)) == {2: 0, 0: 1, 3: 2}
    y, s = M.slot_cells(slots, targets, (rows, cols))
    assert M.prf_at_threshold(y, s, 0.5) == {"p": 1.0, "r": 1.0, "f1": 1.0}
    assert M.average_precision(y, s) == pytest.approx(1.0)
    # without matching (fixed order) the same prediction scores 0
    yf, sf = M.slot_cells(slots, targets, M.fixed_assignment(4, 3))
    assert M.prf_at_threshold(yf, sf, 0.5)["f1"] == 0.0


def test_extra_active_slot_lowers_precision_only() -> None:
    rng = np.random.default_rng(5)
    targets = _slot_case(rng)
    slots = np.zeros((4, 72, 20), dtype=np.float32)
    slots[:3] = targets
    slots[3, 60:62, :] = 1.0  # an unmatched but active slot: 40 false positives
    assign = M.match_slots(slots, targets)
    assert sorted(assign[0].tolist()) == [0, 1, 2]
    y, s = M.slot_cells(slots, targets, assign)
    prf = M.prf_at_threshold(y, s, 0.5)
    assert prf["r"] == 1.0
    assert prf["p"] == pytest.approx(60 / 100)
    assert M.average_precision(y, s) < 1.0


def test_matching_prefers_active_correct_slot_over_silent_slot() -> None:
    targets = np.zeros((1, 72, 10), dtype=bool)
    targets[0, 5] = True
    slots = np.full((2, 72, 10), 0.01, dtype=np.float32)
    slots[1, 5] = 0.6  # slot 1 is right but weak; slot 0 is silent
    slots[1, 20] = 0.6  # and has some false positives
    rows, cols = M.match_slots(slots, targets)
    assert rows.tolist() == [1] and cols.tolist() == [0]


def test_unmatched_targets_are_misses() -> None:
    rng = np.random.default_rng(6)
    targets = _slot_case(rng, s=3)
    slots = np.zeros((2, 72, 20), dtype=np.float32)
    slots[0], slots[1] = targets[1], targets[2]
    assign = M.match_slots(slots, targets)
    assert sorted(assign[1].tolist()) == [1, 2]
    y, s = M.slot_cells(slots, targets, assign)
    assert y.size == 3 * 72 * 20  # 2 slots + 1 unmatched target
    prf = M.prf_at_threshold(y, s, 0.5)
    assert prf["p"] == 1.0
    assert prf["r"] == pytest.approx(2 / 3)


def test_absent_targets_not_matched() -> None:
    targets = np.zeros((3, 72, 8), dtype=bool)
    targets[1, 3] = True
    slots = np.zeros((2, 72, 8), dtype=np.float32)
    slots[0, 3] = 1.0
    rows, cols = M.match_slots(slots, targets, present=np.array([True, True, True]))
    assert rows.tolist() == [0] and cols.tolist() == [1]
    rows, cols = M.match_slots(slots, targets, present=np.array([True, False, True]))
    assert rows.size == 0


def test_matched_cosines_skip_unknown_embeddings() -> None:
    slot_emb = np.array([[1.0, 0.0], [2.0, 0.0], [1.0, 1.0]])
    src_emb = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    cos = M.matched_cosines(slot_emb, src_emb, (np.array([0, 1, 2]), np.array([1, 0, 2])))
    assert cos == pytest.approx([1.0, 0.0])


def test_poly_std_and_stem_accuracy() -> None:
    probs = np.zeros((8, 4))
    probs[[0, 2, 7, 3], [0, 1, 2, 3]] = 1.0
    assert M.poly_std_correct(probs, np.array([0, 2, 9, 1])) == (3, 4)  # 9 clips to 7
    slots = np.zeros((2, 72, 3), dtype=np.float32)
    slots[0, :3, 0] = 0.5  # sum 1.5 -> 2
    slots[0, :3, 1] = 0.4  # sum 1.2 -> 1
    slots[1, :10, :] = 1.0  # sum 10 -> clipped 7
    np.testing.assert_array_equal(M.slot_counts(slots), [[2, 1, 0], [7, 7, 7]])
    source_poly = np.array([[2, 2, 0], [8, 3, 7], [1, 1, 0]])
    targets = np.zeros((3, 72, 3), dtype=bool)
    targets[2, 0, :2] = True  # present but unmatched -> predicted 0: frames (1, 1, 0) -> 1 correct
    c, n = M.poly_stem_correct(slots, source_poly, (np.array([0, 1]), np.array([0, 1])),
                               targets=targets)
    assert (c, n) == (2 + 2 + 1, 9)


# ------------------------------------------------------------------------------------------
# Note-level metrics against mir_eval.transcription on a hand-made case
# ------------------------------------------------------------------------------------------


def _notes(*rows: tuple[float, float, int]) -> M.NoteSet:
    return M.NoteSet.from_arrays([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


def _mir_eval_prf(ref: M.NoteSet, est: M.NoteSet, offsets: bool) -> tuple[float, float, float]:
    import mir_eval

    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ref.intervals, mir_eval.util.midi_to_hz(ref.midi.astype(float)),
        est.intervals, mir_eval.util.midi_to_hz(est.midi.astype(float)),
        offset_ratio=0.2 if offsets else None)
    return p, r, f


# Two violins (parts I and II) and a flute. Reference notes per stem:
VIOLIN_1 = _notes((0.00, 0.50, 60), (0.50, 1.00, 62), (1.00, 2.00, 64))
VIOLIN_2 = _notes((0.00, 1.00, 55), (1.00, 1.50, 57))
FLUTE = _notes((0.20, 0.60, 72), (0.60, 1.60, 74))
# Slot 0 plays violin I's notes (the last offset 0.3 s early: onset hit, offset miss), slot 1
# plays violin II's first note but also violin I's second one, slot 2 is the flute with a 40 ms
# late onset (inside 50 ms) and its second note 80 ms late (a miss), slot 3 holds a note of its
# own (an unmatched slot).
SLOT_0 = _notes((0.01, 0.49, 60), (0.52, 1.01, 62), (1.00, 1.70, 64))
SLOT_1 = _notes((0.02, 0.98, 55), (0.50, 1.00, 62))
SLOT_2 = _notes((0.24, 0.61, 72), (0.68, 1.60, 74))
SLOT_3 = _notes((1.50, 1.90, 40))
REF = [VIOLIN_1, VIOLIN_2, FLUTE]
EST = [SLOT_0, SLOT_1, SLOT_2, SLOT_3]
ASSIGN = (np.array([0, 1, 2]), np.array([0, 1, 2]))  # slot k <-> stem k; slot 3 unmatched


def test_mixture_note_counts_equal_mir_eval() -> None:
    ref = M.NoteSet.concat(REF)
    est = M.NoteSet.concat(EST)
    for offsets in (False, True):
        tp, fp, fn = M.note_counts(ref, est, offsets)
        assert (tp + fp, tp + fn) == (len(est), len(ref))
        p, r, f = _mir_eval_prf(ref, est, offsets)
        got = M.prf_from_counts(tp, fp, fn)
        assert got["p"] == pytest.approx(p) and got["r"] == pytest.approx(r)
        assert got["f1"] == pytest.approx(f)
    # by hand, onsets: 60, 62, 64 (violin I), 55 (violin II), 72 (flute) = 5 of 7 references
    # (violin II's 57 has no estimate, flute's 74 is 80 ms late) and 8 estimates (slot 1's copy
    # of violin I's 62 finds no second reference, slot 3's 40 none); with offsets violin I's 64
    # is lost too (offset 0.3 s early > max(0.2 * 1 s, 50 ms))
    assert M.note_counts(ref, est, False)[0] == 5
    assert M.note_counts(ref, est, True)[0] == 4


def test_slot_note_counts_pool_matched_pairs_and_count_every_note() -> None:
    for offsets in (False, True):
        tp, fp, fn = M.slot_note_counts(REF, EST, ASSIGN, offsets)
        want = sum(M.note_matches(REF[k], EST[k], offsets) for k in range(3))
        # each matched pair against mir_eval directly
        for k in range(3):
            _, r, _ = _mir_eval_prf(REF[k], EST[k], offsets)
            assert M.note_matches(REF[k], EST[k], offsets) == round(r * len(REF[k]))
        assert tp == want and tp + fp == 8 and tp + fn == 7  # all slots, all stems
    # by hand, onsets: slot 0: 3, slot 1: 1 (its violin-I note is not violin II's), slot 2: 1
    assert M.slot_note_counts(REF, EST, ASSIGN, False) == (5, 3, 2)
    assert M.slot_note_counts(REF, EST, ASSIGN, True) == (4, 4, 3)
    # an unmatched stem still counts its notes as misses
    tp, fp, fn = M.slot_note_counts(REF, EST, (np.array([0]), np.array([0])), False)
    assert (tp, tp + fp, tp + fn) == (3, 8, 7)


def test_multi_instrument_counts_match_per_instrument() -> None:
    labels = ["violin", "violin", "flute"]
    tp, fp, fn = M.multi_instrument_counts(REF, labels, EST, ASSIGN)
    # onset + offset, per instrument: violin slots (0, 1) vs violin I + II notes: 60, 62 (once:
    # slot 0's and slot 1's copies compete for it) and 55; 64 misses its offset: 3; flute: 72
    ref_v = M.NoteSet.concat([VIOLIN_1, VIOLIN_2])
    est_v = M.NoteSet.concat([SLOT_0, SLOT_1])
    _, r_v, _ = _mir_eval_prf(ref_v, est_v, True)
    _, r_f, _ = _mir_eval_prf(FLUTE, SLOT_2, True)
    want = round(r_v * len(ref_v)) + round(r_f * len(FLUTE))
    assert (tp, fp, fn) == (want, 8 - want, 7 - want) and want == 4
    # a violin-II note played by the violin-I slot counts here, not in the slot metric
    swapped = (np.array([0, 1, 2]), np.array([1, 0, 2]))
    assert M.slot_note_counts(REF, EST, swapped, True)[0] < \
        M.multi_instrument_counts(REF, labels, EST, swapped)[0]
    # distinct instruments: the same as the slot onset-offset counts
    assert M.multi_instrument_counts(REF, ["a", "b", "c"], EST, ASSIGN) == \
        M.slot_note_counts(REF, EST, ASSIGN, True)
    # an unmatched slot's notes are false positives whatever they play
    only_3 = (np.array([3]), np.array([0]))
    assert M.multi_instrument_counts(REF, labels, EST, only_3)[0] == 0


def test_note_set_dedupe_and_empty() -> None:
    a = _notes((0.0, 1.0, 60), (1.0, 2.0, 62))
    both = M.NoteSet.concat([a, _notes((0.0004, 1.0, 60))], dedupe=True)
    assert len(both) == 2 and len(M.NoteSet.concat([a, a])) == 4
    assert M.note_counts(M.NoteSet.empty(), a, True) == (0, 2, 0)
    assert M.note_counts(a, M.NoteSet.empty(), False) == (0, 0, 2)
