"""Frame-level evaluation metrics of Section V-B (pure numpy / scipy / scikit-learn).

Every metric of Table III is defined here; :mod:`slotmpe.evaluation` only runs the model and feeds
these functions. Conventions (all rolls are ``(pitch, frame)`` maps with ``P = 72`` pitches):

Cells and decisions
    A *cell* is one (frame, pitch) pair of one map. A cell is predicted active iff its probability
    is ``>= threshold``.

Standard (mixture) MPE
    ``std_ap`` = :func:`sklearn.metrics.average_precision_score` over all cells of all files pooled
    (mixture probability vs mixture roll). ``std_p/r/f1`` are pooled counts at the tuned threshold:
    ``P = TP / (TP + FP)``, ``R = TP / (TP + FN)``, ``F1 = 2PR / (P + R)`` (each 0 when its
    denominator is 0, as in ``mir_eval.multipitch``). On semitone rolls these counts are exactly
    what ``mir_eval.multipitch`` computes (see :func:`roll_to_mir_eval`; a test checks it).

Slot (family / stem) MPE, per file
    Let the file have ``K`` slot probability maps ``p_k`` and ``S`` target maps ``y_s`` of which the
    *present* ones (at least one active cell) take part in the matching.

    * Hungarian matching (:func:`match_slots`): the assignment of present targets to slots that
      minimises the total pitch BCE of the file, where an unmatched slot is compared with an
      all-zero map (it should be silent). Removing the part that does not depend on the assignment
      leaves the cost ``C[k, s] = -sum_{cells with y_s = 1} logit(p_k)`` (probabilities clipped to
      ``[1e-7, 1 - 1e-7]``), solved with ``scipy.optimize.linear_sum_assignment``. Plain
      ``BCE(p_k, y_s)`` as a cost would favour leaving *active* slots unmatched when ``S < K``;
      this cost does not. The matching is threshold-free, so AP and P/R/F1 share it, and uses
      pitch maps only (not timbre), so that the pitch metrics do not depend on embeddings.
    * Experiment 1b (fixed family slots) is evaluated as trained: slot ``k`` is compared with
      family ``k`` (brass, keyboards, strings, woodwinds), no matching (:func:`fixed_assignment`);
      a slot whose family is silent in the file is scored against an all-zero map.
    * Pooled cells (:func:`slot_cells`): for every matched pair the cells of ``p_k`` against
      ``y_s``; for every unmatched slot its cells against 0 (its activity above threshold is false
      positives); for every unmatched present target (only possible when ``S > K``) its cells with
      score 0 (its active cells are misses). ``slot_ap`` is sklearn's AP over these cells of all
      files; ``slot_p/r/f1`` are pooled counts on them at the tuned slot threshold.

Timbre
    ``timbre_cos`` = mean cosine similarity over all matched (slot embedding, source embedding)
    pairs of all files whose source embedding is known (non-zero); ``None`` if there are none.

Polyphony
    ``poly_std_acc`` = pooled frame accuracy of ``argmax`` over the 8 mixture-polyphony classes vs
    the polyphony target (counts clipped to 0..7). ``poly_stem_acc`` = pooled accuracy over the
    frames of every matched (slot, source) pair of ``clip(floor(sum_p p_k[p, t] + 0.5), 0, 7)``
    (round half up) vs the source's active-pitch count clipped to 0..7; an unmatched present target
    contributes its frames with predicted count 0. Unmatched slots do not enter (no source).

Notes (``mir_eval.transcription``, defaults: onset within 50 ms, pitch within 50 cents, offset
within ``max(0.2 * reference duration, 50 ms)``)
    Estimated notes come from the probability maps at the tuned thresholds through the same
    frame-to-note step as ``slotmpe transcribe`` (:func:`slotmpe.notes.make_tracks`:
    merge gaps, minimum length, slot activity, offsets clipped to the audio); reference notes are
    the dataset's notes files (pitched tracks, clipped to the audio, MIDI 23..94 as the rolls).
    Every note metric pools counts over files (:class:`NoteSet`, :func:`note_counts`):
    ``P = TP / #est``, ``R = TP / #ref``, ``F1 = 2 TP / (#est + #ref)``, with TP the size of
    mir_eval's maximum matching (:func:`note_matches`).

    * ``note_onset_f1`` / ``note_onoff_f1``: mixture notes vs the notes of all pitched tracks
      (exact duplicates, e.g. a unison written in two parts, counted once: the mixture cannot show
      them twice), onset only / onset and offset.
    * ``slot_note_onset_f1`` / ``slot_note_onoff_f1`` (:func:`slot_note_counts`): TP summed over
      the matched (slot, target) pairs of every file, each slot's notes matched against its own
      target's notes only (the targets of the slot metric: stems, or families for 1b/1c whose
      reference is the union of the family's tracks); ``#est`` counts the notes of *all* slots
      kept by the activity threshold, matched or not, ``#ref`` the notes of *all* targets,
      matched or not (a source with more sources than slots is missed).
    * ``multi_instrument_f1`` (:func:`multi_instrument_counts`), MT3's measure with our slots
      as the instrument decision: a slot's notes carry the instrument of the target the
      evaluation's matching (Hungarian; fixed family order for 1b) gave it, unmatched slots
      carry none; notes are then matched, onset and offset, per instrument label, against the
      reference notes of every target with that label. With one track per instrument this is
      ``slot_note_onoff_f1``; two parts of one instrument (violin I and II) are one instrument
      here, as in MT3's "full program" score, so a violin-I slot playing violin-II notes counts.
      For the family task the label is the family.

Threshold tuning
    :func:`best_f1_threshold` evaluates F1 at *every* distinct score of the pooled validation cells
    (``sklearn.metrics.precision_recall_curve``, exact, ``O(n log n)``) and returns the midpoint
    between the F1-optimal score and the next lower distinct score, which gives the same decisions
    on the validation cells and a margin on both sides for test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import mir_eval
import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import average_precision_score, precision_recall_curve

from slotmpe.constants import FRAME_RATE, MIDI_MIN, N_POLY_CLASSES, midi_to_hz

PROB_EPS = 1e-7
DEFAULT_THRESHOLD = 0.5

Assignment = tuple[np.ndarray, np.ndarray]


# --------------------------------------------------------------------------------------------
# Pooled P/R/F1 and AP
# --------------------------------------------------------------------------------------------


def _check_pair(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    return labels.astype(bool, copy=False).ravel(), scores.ravel()


def prf_from_counts(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall, F1 (fractions 0..1) from pooled counts; 0 where a denominator is 0."""
    p = tp / (tp + fp) if tp + fp > 0 else 0.0
    r = tp / (tp + fn) if tp + fn > 0 else 0.0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return {"p": float(p), "r": float(r), "f1": float(f1)}


def counts_at_threshold(
    labels: np.ndarray, scores: np.ndarray, threshold: float
) -> tuple[int, int, int]:
    """``(TP, FP, FN)`` of the cells ``scores >= threshold`` against boolean ``labels`` (same shape)."""
    y, s = _check_pair(labels, scores)
    pred = s >= threshold
    tp = int(np.count_nonzero(pred & y))
    fp = int(np.count_nonzero(pred & ~y))
    fn = int(np.count_nonzero(~pred & y))
    return tp, fp, fn


def prf_at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Pooled precision/recall/F1 (fractions) of ``scores >= threshold`` vs ``labels``."""
    return prf_from_counts(*counts_at_threshold(labels, scores, threshold))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """sklearn's average precision (fraction) over all cells; ``None`` if there is no positive."""
    y, s = _check_pair(labels, scores)
    if y.size == 0 or not y.any():
        return None
    return float(average_precision_score(y, s))


def best_f1_threshold(
    labels: np.ndarray, scores: np.ndarray, default: float = DEFAULT_THRESHOLD
) -> tuple[float, float]:
    """The threshold maximising pooled F1 of ``scores >= t`` vs ``labels``, and that F1 (fraction).

    Exact search over all distinct scores with ``precision_recall_curve``; returns the midpoint
    between the optimal score and the next lower distinct score (same decisions on these cells).
    With no positive cell, returns ``(default, 0.0)``.
    """
    y, s = _check_pair(labels, scores)
    if y.size == 0 or not y.any():
        return float(default), 0.0
    precision, recall, thresholds = precision_recall_curve(y, s)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    i = int(np.argmax(f1))
    best = float(thresholds[i])
    lower = s[s < best]
    thr = 0.5 * (best + float(lower.max())) if lower.size else best
    return float(thr), float(f1[i])


@dataclass
class PooledCells:
    """Accumulates (labels, scores) cells of many files for pooled AP / P / R / F1.

    Scores are stored as float32 and labels as bool (5 bytes per cell).
    """

    labels: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)

    def add(self, labels: np.ndarray, scores: np.ndarray) -> None:
        """Append cells; ``labels`` and ``scores`` have the same (any) shape."""
        y, s = _check_pair(labels, scores)
        self.labels.append(y.copy())
        self.scores.append(s.astype(np.float32))

    @property
    def n_cells(self) -> int:
        """Number of cells added so far."""
        return int(sum(a.size for a in self.labels))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All cells as 1-D ``(labels bool (N,), scores float32 (N,))``."""
        if not self.labels:
            return np.zeros(0, dtype=bool), np.zeros(0, dtype=np.float32)
        return np.concatenate(self.labels), np.concatenate(self.scores)

    def ap(self) -> float | None:
        """Pooled AP (fraction) or ``None`` without positives."""
        return average_precision(*self.arrays())

    def prf(self, threshold: float) -> dict[str, float]:
        """Pooled P/R/F1 (fractions) at ``threshold``."""
        return prf_at_threshold(*self.arrays(), threshold)

    def best_threshold(self, default: float = DEFAULT_THRESHOLD) -> tuple[float, float]:
        """F1-optimal threshold and its F1 over the pooled cells (see :func:`best_f1_threshold`)."""
        return best_f1_threshold(*self.arrays(), default=default)


# --------------------------------------------------------------------------------------------
# mir_eval bridge
# --------------------------------------------------------------------------------------------


def roll_to_mir_eval(
    roll: np.ndarray, midi_min: int = MIDI_MIN, frame_rate: float = FRAME_RATE
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Convert a boolean roll ``(P, T)`` to ``mir_eval.multipitch`` input.

    Returns ``times`` float64 ``(T,)`` (frame ``t`` at ``t / frame_rate`` s) and a list of ``T``
    float64 arrays of the active pitches' frequencies in Hz (pitch index ``p`` is MIDI
    ``midi_min + p``).
    """
    roll = np.asarray(roll, dtype=bool)
    if roll.ndim != 2:
        raise ValueError(f"roll must be (pitch, frame), got shape {roll.shape}")
    freqs_of_pitch = np.array([midi_to_hz(midi_min + p) for p in range(roll.shape[0])])
    times = np.arange(roll.shape[1], dtype=np.float64) / frame_rate
    freqs = [freqs_of_pitch[np.flatnonzero(roll[:, t])] for t in range(roll.shape[1])]
    return times, freqs


# --------------------------------------------------------------------------------------------
# Slot matching and slot cells
# --------------------------------------------------------------------------------------------


def _present(targets: np.ndarray, present: np.ndarray | None) -> np.ndarray:
    """Boolean ``(S,)``: the target is flagged present (if flags are given) and has an active cell."""
    active = targets.reshape(targets.shape[0], -1).any(axis=1)
    if present is None:
        return active
    present = np.asarray(present, dtype=bool)
    if present.shape != (targets.shape[0],):
        raise ValueError(f"present must be ({targets.shape[0]},), got {present.shape}")
    return active & present


def match_slots(
    slot_probs: np.ndarray, targets: np.ndarray, present: np.ndarray | None = None
) -> Assignment:
    """Hungarian matching of slots to the present targets of one file (module docstring).

    Args:
        slot_probs: float ``(K, P, T)`` slot probabilities.
        targets: bool ``(S, P, T)`` target rolls (padding rows allowed).
        present: optional bool ``(S,)``; targets not flagged or without activity are not matched.

    Returns:
        ``(slot_idx, target_idx)`` int arrays of equal length ``min(K, S_present)``, sorted by slot.
    """
    slot_probs = np.asarray(slot_probs)
    targets = np.asarray(targets, dtype=bool)
    if slot_probs.ndim != 3 or targets.ndim != 3 or slot_probs.shape[1:] != targets.shape[1:]:
        raise ValueError(
            f"slot_probs (K,P,T) and targets (S,P,T) must agree, got {slot_probs.shape} and "
            f"{targets.shape}"
        )
    cand = np.flatnonzero(_present(targets, present))
    if cand.size == 0 or slot_probs.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    p = np.clip(slot_probs.reshape(slot_probs.shape[0], -1).astype(np.float64), PROB_EPS, 1 - PROB_EPS)
    logit = np.log(p) - np.log1p(-p)  # (K, P*T)
    y = targets[cand].reshape(cand.size, -1).astype(np.float64)  # (S', P*T)
    cost = -(logit @ y.T)  # (K, S')
    rows, cols = linear_sum_assignment(cost)
    order = np.argsort(rows)
    return rows[order].astype(np.int64), cand[cols[order]].astype(np.int64)


def fixed_assignment(n_slots: int, n_targets: int) -> Assignment:
    """Slot ``k`` <-> target ``k`` for ``k < min(n_slots, n_targets)`` (experiment 1b)."""
    n = min(n_slots, n_targets)
    idx = np.arange(n, dtype=np.int64)
    return idx, idx.copy()


def slot_cells(
    slot_probs: np.ndarray,
    targets: np.ndarray,
    assignment: Assignment,
    present: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The cells one file contributes to the slot metrics (module docstring).

    Args:
        slot_probs: float ``(K, P, T)``; targets: bool ``(S, P, T)``;
        assignment: ``(slot_idx, target_idx)``; present: optional bool ``(S,)`` as in
        :func:`match_slots` (unmatched targets are counted only if present and active).

    Returns:
        ``(labels bool (N,), scores float32 (N,))`` with ``N = (K + U) * P * T`` where ``U`` is
        the number of unmatched present targets.
    """
    slot_probs = np.asarray(slot_probs, dtype=np.float32)
    targets = np.asarray(targets, dtype=bool)
    rows, cols = (np.asarray(a, dtype=np.int64) for a in assignment)
    k_total = slot_probs.shape[0]
    labels = np.zeros(slot_probs.shape, dtype=bool)
    if rows.size:
        labels[rows] = targets[cols]
    unmatched_t = np.setdiff1d(np.flatnonzero(_present(targets, present)), cols)
    lab = [labels.reshape(k_total, -1)]
    sco = [slot_probs.reshape(k_total, -1)]
    if unmatched_t.size:
        miss = targets[unmatched_t].reshape(unmatched_t.size, -1)
        lab.append(miss)
        sco.append(np.zeros(miss.shape, dtype=np.float32))
    return np.concatenate(lab).ravel(), np.concatenate(sco).ravel()


# --------------------------------------------------------------------------------------------
# Timbre and polyphony
# --------------------------------------------------------------------------------------------


def matched_cosines(
    slot_emb: np.ndarray, source_emb: np.ndarray, assignment: Assignment
) -> np.ndarray:
    """Cosine similarities ``(M,)`` of matched (slot, source) embedding pairs.

    ``slot_emb`` ``(K, E)``, ``source_emb`` ``(S, E)``; pairs whose source embedding is all zero
    (unknown) are left out.
    """
    rows, cols = assignment
    if len(rows) == 0:
        return np.zeros(0)
    a = np.asarray(slot_emb, dtype=np.float64)[rows]
    b = np.asarray(source_emb, dtype=np.float64)[cols]
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    keep = (nb > 0) & (na > 0)
    return np.sum(a[keep] * b[keep], axis=1) / (na[keep] * nb[keep])


def poly_std_correct(poly_probs: np.ndarray, poly_target: np.ndarray) -> tuple[int, int]:
    """``(correct, total)`` frames of ``argmax`` over ``poly_probs`` ``(8, T)`` vs ``poly_target`` ``(T,)``.

    Target counts are clipped to ``0..7``.
    """
    pred = np.argmax(np.asarray(poly_probs), axis=0)
    tgt = np.clip(np.asarray(poly_target).astype(np.int64), 0, N_POLY_CLASSES - 1)
    if pred.shape != tgt.shape:
        raise ValueError(f"poly prediction {pred.shape} and target {tgt.shape} differ")
    return int(np.count_nonzero(pred == tgt)), int(tgt.size)


def slot_counts(slot_probs: np.ndarray) -> np.ndarray:
    """Rounded slot polyphony ``(K, T)``: ``clip(floor(sum_p slot_probs + 0.5), 0, 7)``."""
    s = np.asarray(slot_probs, dtype=np.float64).sum(axis=1)
    return np.clip(np.floor(s + 0.5), 0, N_POLY_CLASSES - 1).astype(np.int64)


def poly_stem_correct(
    slot_probs: np.ndarray,
    source_poly: np.ndarray,
    assignment: Assignment,
    present: np.ndarray | None = None,
    targets: np.ndarray | None = None,
) -> tuple[int, int]:
    """``(correct, total)`` frames of rounded matched slot counts vs source counts.

    Args:
        slot_probs: ``(K, P, T)``; source_poly: ``(S, T)`` active-pitch counts per source;
        assignment: matched ``(slot_idx, source_idx)``; present / targets: optional ``(S,)`` flags
        and ``(S, P, T)`` rolls; when ``targets`` is given, present sources left unmatched count
        their frames with predicted count 0.
    """
    rows, cols = (np.asarray(a, dtype=np.int64) for a in assignment)
    tgt = np.clip(np.asarray(source_poly).astype(np.int64), 0, N_POLY_CLASSES - 1)
    correct = total = 0
    if rows.size:
        pred = slot_counts(np.asarray(slot_probs)[rows])
        correct += int(np.count_nonzero(pred == tgt[cols]))
        total += int(pred.size)
    if targets is not None:
        unmatched = np.setdiff1d(np.flatnonzero(_present(np.asarray(targets), present)), cols)
        if unmatched.size:
            correct += int(np.count_nonzero(tgt[unmatched] == 0))
            total += int(tgt[unmatched].size)
    return correct, total


def safe_ratio(num: float, den: float) -> float | None:
    """``num / den`` or ``None`` when ``den`` is 0."""
    return float(num) / float(den) if den else None


def mean_or_none(values: Sequence[float] | np.ndarray) -> float | None:
    """Mean of ``values`` or ``None`` when empty."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()) if arr.size else None


# --------------------------------------------------------------------------------------------
# Notes (mir_eval.transcription)
# --------------------------------------------------------------------------------------------

NOTE_ONSET_TOL_S = 0.05
NOTE_OFFSET_RATIO = 0.2
NOTE_OFFSET_MIN_S = 0.05
Counts = tuple[int, int, int]


@dataclass(frozen=True)
class NoteSet:
    """Notes of one track: ``intervals`` float64 ``(N, 2)`` onset/offset seconds, ``midi`` int
    ``(N,)``."""

    intervals: np.ndarray
    midi: np.ndarray

    def __post_init__(self) -> None:
        iv = np.asarray(self.intervals, dtype=np.float64).reshape(-1, 2)
        mi = np.asarray(self.midi, dtype=np.int64).reshape(-1)
        if len(iv) != len(mi):
            raise ValueError(f"{len(iv)} intervals but {len(mi)} pitches")
        object.__setattr__(self, "intervals", iv)
        object.__setattr__(self, "midi", mi)

    def __len__(self) -> int:
        return len(self.midi)

    @classmethod
    def empty(cls) -> NoteSet:
        """No notes."""
        return cls(np.zeros((0, 2)), np.zeros(0, dtype=np.int64))

    @classmethod
    def from_arrays(cls, onset: Sequence[float], offset: Sequence[float],
                    midi: Sequence[int]) -> NoteSet:
        """Notes from three equal-length sequences (seconds, seconds, MIDI)."""
        return cls(np.stack([np.asarray(onset, np.float64), np.asarray(offset, np.float64)],
                            axis=-1), np.asarray(midi))

    @classmethod
    def concat(cls, sets: Sequence[NoteSet], dedupe: bool = False) -> NoteSet:
        """All notes of ``sets``; ``dedupe`` keeps one of notes with the same pitch whose onset
        and offset agree within 1 ms."""
        sets = [x for x in sets if len(x)]
        if not sets:
            return cls.empty()
        out = cls(np.concatenate([x.intervals for x in sets]),
                  np.concatenate([x.midi for x in sets]))
        if dedupe and len(out):
            key = np.column_stack([out.midi, np.round(out.intervals * 1000.0).astype(np.int64)])
            _, keep = np.unique(key, axis=0, return_index=True)
            keep = np.sort(keep)
            out = cls(out.intervals[keep], out.midi[keep])
        return out


def note_matches(ref: NoteSet, est: NoteSet, offsets: bool) -> int:
    """Number of matched notes (``mir_eval.transcription.match_notes``, default tolerances;
    ``offsets=False``: onset and pitch only)."""
    if not len(ref) or not len(est):
        return 0
    pairs = mir_eval.transcription.match_notes(
        ref.intervals, mir_eval.util.midi_to_hz(ref.midi.astype(np.float64)),
        est.intervals, mir_eval.util.midi_to_hz(est.midi.astype(np.float64)),
        onset_tolerance=NOTE_ONSET_TOL_S, pitch_tolerance=50.0,
        offset_ratio=NOTE_OFFSET_RATIO if offsets else None,
        offset_min_tolerance=NOTE_OFFSET_MIN_S,
    )
    return len(pairs)


def note_counts(ref: NoteSet, est: NoteSet, offsets: bool) -> Counts:
    """``(TP, FP, FN)`` = ``(matches, #est - matches, #ref - matches)`` of one note track."""
    tp = note_matches(ref, est, offsets)
    return tp, len(est) - tp, len(ref) - tp


def slot_note_counts(
    ref_by_target: Sequence[NoteSet],
    est_by_slot: Sequence[NoteSet],
    assignment: Assignment,
    offsets: bool,
) -> Counts:
    """``(TP, FP, FN)`` of the slot note metric of one file (module docstring).

    Args:
        ref_by_target: reference notes of every target ``s`` (``S`` entries, all of them count).
        est_by_slot: estimated notes of every slot ``k`` (``K`` entries; empty for a dropped slot).
        assignment: matched ``(slot_idx, target_idx)``.
    """
    rows, cols = assignment
    tp = sum(note_matches(ref_by_target[int(t)], est_by_slot[int(k)], offsets)
             for k, t in zip(rows, cols, strict=True))
    n_est = sum(len(e) for e in est_by_slot)
    n_ref = sum(len(r) for r in ref_by_target)
    return tp, n_est - tp, n_ref - tp


def multi_instrument_counts(
    ref_by_target: Sequence[NoteSet],
    labels: Sequence[str],
    est_by_slot: Sequence[NoteSet],
    assignment: Assignment,
) -> Counts:
    """``(TP, FP, FN)`` of the multi-instrument note metric of one file (module docstring).

    ``labels[s]`` is the instrument of target ``s``; a slot's notes take the label of the target
    it is matched to, and notes are matched (onset and offset) per label.
    """
    if len(labels) != len(ref_by_target):
        raise ValueError(f"{len(labels)} labels for {len(ref_by_target)} targets")
    rows, cols = assignment
    est_of: dict[str, list[NoteSet]] = {}
    for k, t in zip(rows, cols, strict=True):
        est_of.setdefault(str(labels[int(t)]), []).append(est_by_slot[int(k)])
    tp = 0
    for label, ests in est_of.items():
        ref = NoteSet.concat([r for r, lab in zip(ref_by_target, labels, strict=True)
                              if str(lab) == label])
        tp += note_matches(ref, NoteSet.concat(ests), offsets=True)
    n_est = sum(len(e) for e in est_by_slot)
    n_ref = sum(len(r) for r in ref_by_target)
    return tp, n_est - tp, n_ref - tp
