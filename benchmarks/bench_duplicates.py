"""Duplicate notes of ``slotmpe transcribe`` on one file, before and after duplicate suppression.

Issue 18 item 2. A 2b model is transcribed as it is ("before") and as extension ``4a`` ("after"):
4a is 2b's trained run with the post-processing step ``exclusive``
(:func:`slotmpe.postprocess.exclusive_cells`: every (pitch, frame) cell keeps only its most
probable slot), derived from the 2b checkpoint by :func:`slotmpe.derive.derive_checkpoint` (the
workflow's ``derive_model`` rule), so the weights are identical and only the post-processing that
``slotmpe transcribe`` applies (:func:`slotmpe.transcribe.postprocess_probs`) differs. Both use
the 2b model's tuned thresholds (``thresholds.json`` beside it); with ``--features`` the 4a model
is also run with its own thresholds tuned on that feature cache's validation split
(:func:`slotmpe.evaluation.tune_thresholds`, as the workflow tunes a 4a run).

Printed per variant:

* active slots (the slot tracks ``slotmpe transcribe`` writes) and the notes per slot, and the
  mixture notes;
* ``dup_rate``: :mod:`slotmpe.postprocess`'s duplicate rate of the file, cells (pitch, frame)
  claimed by >= 2 active slots / cells claimed by >= 1 active slot, a slot claiming a cell when its
  post-processed probability is ``>=`` the slot threshold (inactive slots, which transcribe drops,
  are left out);
* ``note_dup``: the share of mixture-track notes claimed by two or more active slot tracks, where a
  slot track claims a mixture note when its notes cover at least half of the mixture note's frames
  at the same pitch (note rolls of :func:`slotmpe.transcribe.notes_to_roll`).

With ``--notes`` (the piece's stem note CSVs, e.g. ``audio/<piece>/0*.csv``) the unison share of
the reference stems is printed too (cells active in >= 2 stems / in >= 1,
:func:`slotmpe.postprocess.target_duplicate_counts`): the duplicate rate a perfect split would
have, and each variant's stem F1: frame F1 of its active slot note rolls against the stem rolls,
paired by Hungarian matching (:func:`bench_stream.matched_counts`; unpaired slots are false
positives, unpaired stems misses). Writes ``duplicates.json`` into ``--work``.

Usage::

    python benchmarks/bench_duplicates.py data/chamber/audio/bach_bwv169--bwv169.7/mix.wav \\
        --model benchmarks/out/models/2b/model.pt [--features data/chamber/features] \\
        [--notes data/chamber/audio/bach_bwv169--bwv169.7/0*.csv]
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_stream import f1, matched_counts  # benchmarks/ is on sys.path when run as a script

from slotmpe.postprocess import duplicate_counts, target_duplicate_counts
from slotmpe.targets import notes_to_roll as reference_roll
from slotmpe.transcribe import (
    MIX,
    Track,
    TranscribeOptions,
    audio_cqt,
    load_model,
    notes_to_roll,
    resolve_thresholds,
    transcribe_cqt,
)
from slotmpe.transcribe.audio_input import open_audio
from slotmpe.utils import atomic_path, set_threads

MIN_NOTE_SHARE = 0.5  # a slot claims a mixture note covering >= half of its frames


def note_duplicate_share(mix_notes: Sequence[Any], slot_rolls: np.ndarray) -> tuple[int, int, int]:
    """``(claimed_twice, claimed, n_notes)``: mixture notes covered on >= :data:`MIN_NOTE_SHARE`
    of their frames (same pitch) by two or more / one or more of ``slot_rolls`` (bool
    ``(K, 72, T)``)."""
    n_frames = slot_rolls.shape[-1]
    twice = once = 0
    for n in mix_notes:
        roll = notes_to_roll([n], n_frames)  # (72, T), one note
        frames = int(roll.sum())
        if frames == 0:
            continue
        cover = (slot_rolls & roll[None]).reshape(slot_rolls.shape[0], -1).sum(axis=1)
        n_claim = int((cover >= MIN_NOTE_SHARE * frames).sum())
        twice += n_claim >= 2
        once += n_claim >= 1
    return twice, once, len(mix_notes)


def describe(tracks: Sequence[Track], probs: dict[str, np.ndarray], options: TranscribeOptions,
             n_frames: int, stems: np.ndarray | None = None) -> dict[str, Any]:
    """Active slots, notes per slot, ``dup_rate`` and ``note_dup`` of one transcription (and the
    stem F1 against ``stems`` bool ``(S, 72, T)`` when given)."""
    slots = [t for t in tracks if t.slot != MIX]
    mix = next(t for t in tracks if t.slot == MIX)
    act = np.asarray(probs.get("activity", np.ones(probs["slots"].shape[0]))).reshape(-1)
    active = np.flatnonzero(act >= options.activity_threshold)
    claimed, dup = duplicate_counts(probs["slots"][active], options.slot_threshold)
    rolls = (np.stack([notes_to_roll(t.notes, n_frames) for t in slots]) if slots
             else np.zeros((0, 72, n_frames), dtype=bool))
    twice, once, n_mix = note_duplicate_share(mix.notes, rolls)
    stem_f1 = None if stems is None else f1(matched_counts(rolls, stems)[0])
    return {
        "active_slots": len(slots),
        "notes_per_slot": {t.name: len(t.notes) for t in slots},
        "mix_notes": n_mix,
        "dup_rate": dup / claimed if claimed else None, "dup_cells": dup, "claimed_cells": claimed,
        "note_dup": twice / n_mix if n_mix else None, "notes_twice": twice, "notes_claimed": once,
        "stem_f1": stem_f1,
    }


def stem_rolls(paths: Sequence[Path], n_frames: int) -> np.ndarray:
    """Bool ``(S, 72, T)`` rolls of the stem note CSVs ``paths``."""
    return np.stack([reference_roll(pd.read_csv(p), n_frames, name=str(p)) for p in paths])


def reference_duplicates(rolls: np.ndarray) -> dict[str, Any]:
    """Unison share of the stem ``rolls`` ``(S, 72, T)``: cells active in >= 2 stems / in >= 1."""
    active, unison = target_duplicate_counts(rolls)
    return {"stems": int(rolls.shape[0]), "dup_rate": unison / active if active else None,
            "dup_cells": unison, "claimed_cells": active}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def _line(name: str, d: dict[str, Any]) -> str:
    per = ", ".join(f"{k}: {v}" for k, v in d["notes_per_slot"].items())
    return (f"{name}: {d['active_slots']} active slots ({per}); {d['mix_notes']} mixture notes; "
            f"dup_rate {_pct(d['dup_rate'])} ({d['dup_cells']}/{d['claimed_cells']} cells); "
            f"mixture notes claimed by >= 2 slots {_pct(d['note_dup'])} "
            f"({d['notes_twice']}/{d['mix_notes']}), by >= 1 slot {d['notes_claimed']}"
            + ("" if d["stem_f1"] is None else f"; stem F1 {100 * d['stem_f1']:.1f}"))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the arguments, transcribe the file with 2b and 4a, print the duplicate figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("audio", type=Path, help="audio file (e.g. a chamber test mix.wav)")
    p.add_argument("--model", type=Path, required=True, help="2b model.pt (thresholds.json beside)")
    p.add_argument("--work", type=Path, default=Path("benchmarks/out/duplicates"),
                   help="folder for the derived 4a model")
    p.add_argument("--features", type=Path, default=None,
                   help="feature cache to tune the 4a thresholds on (its validation split)")
    p.add_argument("--notes", type=Path, nargs="*", default=[], help="reference stem note CSVs")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    set_threads(args.threads)
    from slotmpe.derive import derive_checkpoint

    model_4a = args.work / "4a" / "model.pt"
    model_4a.parent.mkdir(parents=True, exist_ok=True)
    derive_checkpoint(args.model, "4a", model_4a)
    mix_thr, slot_thr, src = resolve_thresholds(args.model)
    base_opts = TranscribeOptions(mix_threshold=mix_thr, slot_threshold=slot_thr, write_png=False)
    variants: list[tuple[str, Path, TranscribeOptions]] = [
        (f"before (2b, thresholds mix {mix_thr:.3g} slots {slot_thr:.3g}, {src})", args.model,
         base_opts),
        ("after (4a = 2b + exclusive, same thresholds)", model_4a, base_opts),
    ]
    if args.features is not None:
        from slotmpe.evaluation import tune_thresholds

        tuned = model_4a.with_name("thresholds.json")
        th = tune_thresholds(model_4a, args.features, tuned, device="cpu")
        opts = TranscribeOptions(mix_threshold=th["mix"], slot_threshold=th["slots"],
                                 write_png=False)
        variants.append((f"after (4a, own thresholds mix {th['mix']:.3g} slots "
                         f"{th['slots']:.3g}, tuned on validation)", model_4a, opts))
    elif args.model.with_name("thresholds.json").exists():
        shutil.copyfile(args.model.with_name("thresholds.json"), model_4a.with_name("thresholds.json"))
    source = open_audio(args.audio)
    cqt = audio_cqt(source.blocks())
    n_frames = int(cqt.shape[-1])
    print(f"{args.audio}: {source.duration_s:.1f} s, {n_frames} frames", flush=True)
    stems = stem_rolls(args.notes, n_frames) if args.notes else None
    out: dict[str, Any] = {}
    for name, path, opts in variants:
        model, meta = load_model(path)
        tracks, probs = transcribe_cqt(cqt, model, meta, opts, source.duration_s)
        out[name] = describe(tracks, probs, opts, n_frames, stems)
        print(_line(name, out[name]), flush=True)
    if stems is not None:
        ref = reference_duplicates(stems)
        out["reference"] = ref
        print(f"reference: {ref['stems']} stems; unison cells {_pct(ref['dup_rate'])} "
              f"({ref['dup_cells']}/{ref['claimed_cells']})", flush=True)
    with atomic_path(args.work / "duplicates.json") as tmp:
        tmp.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
