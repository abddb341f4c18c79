"""What ``slotmpe transcribe --stream`` costs in accuracy against whole-file inference (issue 14).

For every mixture of a manifest split (``mix.wav`` of each piece), the same model transcribes the
file twice, in process: whole-file (:func:`slotmpe.transcribe.transcribe_file`, what
``slotmpe transcribe`` does) and streamed (:func:`slotmpe.transcribe.stream.transcribe_stream`,
what ``--stream`` does), with the model's tuned thresholds (``thresholds.json`` beside it) and the
CLI's defaults otherwise. The notes of each output are turned back into bool rolls ``(72, T)``
(:func:`slotmpe.transcribe.notes_to_roll`, ``T`` = the whole-file frame count) and compared at
frame level (cells = (pitch, frame) pairs):

* **stream vs whole**: F1 of the streamed rolls against the whole-file rolls taken as reference.
  Mixture: the mixture tracks. Slots: the active slot tracks of both outputs, paired by Hungarian
  matching on the number of shared cells (``scipy.optimize.linear_sum_assignment``), since the
  streamed slot order follows the first 4 s window and can differ from the whole-file order;
  cells of unpaired slots count as FP (streamed) or FN (whole-file).
* **against the reference notes** (the manifest's pitched stems of the piece): mixture F1 of each
  output's mixture roll against the union of the stem rolls; stem F1 of each output's active slot
  rolls against the stem rolls, paired by the same Hungarian matching (unpaired slots: FP,
  unpaired stems: FN). This is a note-roll measure (after thresholds, note creation and the
  activity cut), so it is not the evaluation's ``slot_f1`` on probabilities, but both outputs are
  measured the same way, so their difference is the accuracy cost of streaming.

Per file and pooled (counts summed over files). Also prints the wall time of both paths.

Usage::

    python benchmarks/bench_stream.py --model benchmarks/out/models/2b/model.pt \\
        --manifest data/chamber/manifest.parquet --split test [--max-files N] [--csv OUT.csv]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from slotmpe.targets import notes_to_roll as reference_roll
from slotmpe.transcribe import (
    MIX,
    Track,
    TranscribeOptions,
    load_model,
    notes_to_roll,
    resolve_thresholds,
    transcribe_file,
)
from slotmpe.transcribe.stream import transcribe_stream
from slotmpe.utils import set_threads

Counts = tuple[int, int, int]  # (TP, FP, FN)


def f1(c: Counts) -> float:
    """F1 (0..1) of ``(TP, FP, FN)``; 0 when there is nothing to find and nothing found."""
    tp, fp, fn = c
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def roll_counts(pred: np.ndarray, ref: np.ndarray) -> Counts:
    """``(TP, FP, FN)`` of bool rolls of equal shape."""
    return (int((pred & ref).sum()), int((pred & ~ref).sum()), int((~pred & ref).sum()))


def matched_counts(pred: np.ndarray, ref: np.ndarray) -> tuple[Counts, list[tuple[int, int]]]:
    """Pooled ``(TP, FP, FN)`` of ``pred`` ``(K, 72, T)`` against ``ref`` ``(S, 72, T)`` (bool).

    Rolls are paired by Hungarian matching maximising the shared cells; unpaired predicted rolls
    count as false positives, unpaired reference rolls as misses. Returns the counts and the pairs
    ``(k, s)``.
    """
    k, s = pred.shape[0], ref.shape[0]
    pairs: list[tuple[int, int]] = []
    if k and s:
        shared = pred.reshape(k, -1).astype(np.float32) @ ref.reshape(s, -1).T.astype(np.float32)
        rows, cols = linear_sum_assignment(-shared)
        pairs = [(int(a), int(b)) for a, b in zip(rows, cols, strict=True)]
    tp = sum(int((pred[a] & ref[b]).sum()) for a, b in pairs)
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    return (tp, n_pred - tp, n_ref - tp), pairs


def track_rolls(tracks: Sequence[Track], n_frames: int) -> tuple[np.ndarray, np.ndarray, list]:
    """``(mixture roll (72, T), slot rolls (K, 72, T), slot numbers)`` of transcription tracks."""
    mix = next(t for t in tracks if t.slot == MIX)
    slots = [t for t in tracks if t.slot != MIX]
    rolls = (np.stack([notes_to_roll(t.notes, n_frames) for t in slots]) if slots
             else np.zeros((0, 72, n_frames), dtype=bool))
    return notes_to_roll(mix.notes, n_frames), rolls, [t.slot for t in slots]


def piece_reference(rows: pd.DataFrame, root: Path, n_frames: int) -> np.ndarray:
    """Stem rolls ``(S, 72, T)`` of a piece's pitched tracks (manifest rows, notes CSVs)."""
    rolls = [reference_roll(pd.read_csv(root / r.notes_path), n_frames, name=str(r.notes_path))
             for r in rows.itertuples() if bool(r.pitched)]
    return np.stack(rolls) if rolls else np.zeros((0, 72, n_frames), dtype=bool)


KEYS = ("mix_sw", "slot_sw", "mix_w_ref", "mix_s_ref", "stem_w_ref", "stem_s_ref")


def measure_piece(mix_path: Path, rows: pd.DataFrame, root: Path, model: object, meta: dict,
                  options: TranscribeOptions, tmp: Path) -> tuple[dict[str, Counts], dict]:
    """``(counts, info)`` of one mixture: ``counts[k]`` = ``(TP, FP, FN)`` for ``k`` in
    :data:`KEYS` (module docstring); ``info`` = slot counts, slot order, timings."""
    t0 = time.perf_counter()
    whole = transcribe_file(mix_path, model, meta, tmp / "whole", options)
    t1 = time.perf_counter()
    streamed = transcribe_stream(mix_path, model, meta, tmp / "stream", options)
    t2 = time.perf_counter()
    n = whole.n_frames
    mix_w, slots_w, num_w = track_rolls(whole.tracks, n)
    mix_s, slots_s, num_s = track_rolls(streamed.tracks, n)
    ref = piece_reference(rows, root, n)
    slot_sw, pairs = matched_counts(slots_s, slots_w)
    counts = {
        "mix_sw": roll_counts(mix_s, mix_w),
        "slot_sw": slot_sw,
        "mix_w_ref": roll_counts(mix_w, ref.any(axis=0)),
        "mix_s_ref": roll_counts(mix_s, ref.any(axis=0)),
        "stem_w_ref": matched_counts(slots_w, ref)[0],
        "stem_s_ref": matched_counts(slots_s, ref)[0],
    }
    info = {
        "seconds": whole.duration_s, "slots_w": len(num_w), "slots_s": len(num_s),
        "stems": int(ref.shape[0]), "same_order": all(num_s[a] == num_w[b] for a, b in pairs),
        "whole_s": t1 - t0, "stream_s": t2 - t1,
    }
    return counts, info


def _f1s(counts: dict[str, Counts]) -> str:
    return " ".join(f"{f1(counts[k]):.3f}" for k in KEYS)


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Parse the arguments, measure every mixture of the split, print per file and pooled."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="model.pt (thresholds.json beside)")
    p.add_argument("--manifest", type=Path, required=True, help="the dataset's manifest.parquet")
    p.add_argument("--split", default="test")
    p.add_argument("--max-files", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--csv", type=Path, default=None, help="write the per-file table here")
    args = p.parse_args(argv)
    set_threads(args.threads)
    root = args.manifest.parent
    man = pd.read_parquet(args.manifest)
    man = man[man["split"] == args.split]
    if man.empty:
        p.error(f"{args.manifest}: no pieces in split {args.split!r}")
    mix_thr, slot_thr, src = resolve_thresholds(args.model)
    options = TranscribeOptions(mix_threshold=mix_thr, slot_threshold=slot_thr, write_png=False)
    model, meta = load_model(args.model)
    print(f"model {args.model} ({meta.get('experiment', '?')}); thresholds mix {mix_thr:.3g}, "
          f"slots {slot_thr:.3g} ({src}); split {args.split}", flush=True)
    print("piece sec K_w K_s S same_order mixF1_s~w slotF1_s~w mixF1_w mixF1_s stemF1_w stemF1_s "
          "whole_s stream_s", flush=True)
    pieces = sorted(man["piece_id"].unique())[: args.max_files]
    pooled = {k: np.zeros(3, dtype=np.int64) for k in KEYS}
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for piece in pieces:
            prow = man[man["piece_id"] == piece]
            counts, info = measure_piece(root / prow["mix_path"].iloc[0], prow, root, model, meta,
                                         options, Path(tmp))
            for k in KEYS:
                pooled[k] += counts[k]
            table.append({"piece": piece, **info, **{f"f1_{k}": f1(counts[k]) for k in KEYS}})
            print(f"{piece} {info['seconds']:.1f} {info['slots_w']} {info['slots_s']} "
                  f"{info['stems']} {info['same_order']} {_f1s(counts)} {info['whole_s']:.1f} "
                  f"{info['stream_s']:.1f}", flush=True)
    df = pd.DataFrame(table)
    tot = {k: (int(v[0]), int(v[1]), int(v[2])) for k, v in pooled.items()}
    print(f"pooled {df['seconds'].sum():.1f} - - - - {_f1s(tot)} {df['whole_s'].sum():.1f} "
          f"{df['stream_s'].sum():.1f}", flush=True)
    print("s~w: streamed vs whole-file notes (whole-file as reference); _w / _s: whole-file / "
          "streamed notes vs the reference notes; K: active slot tracks; S: pitched stems; "
          "same_order: the slot pairing is the identity", flush=True)
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.csv, index=False)
    return df


if __name__ == "__main__":
    main()
