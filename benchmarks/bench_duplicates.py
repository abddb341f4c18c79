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

**Validation diagnosis** (``val``, issue 29; the issue-21 figures): any trained model.pt of a
Hungarian stem/family experiment and its feature cache. On the fixed validation windows
(:class:`slotmpe.data.WindowDataset`, split ``val``, the training's 23-frame windows) the model's
slots are matched to the sources with the *training* matching
(:func:`slotmpe.losses.match_slots`: pitch BCE + timbre cosine, plus the activity term with the
run's own ``activity_match_weight``, and again with the paper's cost, weight 0), and
:func:`duplicate_tally` counts:

* ``active_unmatched``: slots the activity head calls active (``p >= 0.5``) that the matching leaves
  unmatched, and ``duplicates``, those of them whose pitch map duplicates a matched slot's of the
  same window: soft containment ``sum(min(p_u, p_m)) / sum(p_u) >= 0.5`` over the (pitch, frame)
  cells (:func:`soft_containment`); ``dup_rate = duplicates / active_unmatched``;
* ``matched_inactive``: matched slots the head calls inactive;
* ``activity_bce``: the training's activity loss (BCE of the activity logits against matched = 1).

Beside them: the run's train and validation activity loss at its selected epoch
(``train_log.csv``), and slot P/R/F1/AP and the mixture F1 on the full validation files with
thresholds tuned on those same files (:func:`slotmpe.evaluation.tune_thresholds` /
:func:`~slotmpe.evaluation.evaluate_model` with ``split="val"``; the test split is not touched).
Writes ``duplicates_val.json`` (and the thresholds and metrics files) into ``--work``.

Usage::

    python benchmarks/bench_duplicates.py data/chamber/audio/bach_bwv169--bwv169.7/mix.wav \\
        --model benchmarks/out/models/2b/model.pt [--features data/chamber/features] \\
        [--notes data/chamber/audio/bach_bwv169--bwv169.7/0*.csv]
    python benchmarks/bench_duplicates.py val --model results/chamber/3c/seed0/model.pt \\
        --features data/chamber/features [--embeddings results/chamber/timbre/embeddings.parquet] \\
        [--work benchmarks/out/duplicates/chamber-3c]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
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
ACTIVE = 0.5  # activity probability from which the activity head calls a slot active
CONTAINMENT = 0.5  # soft containment from which an unmatched slot duplicates a matched one


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


# ---- validation diagnosis (issue 29) ----------------------------------------------------------


def soft_containment(probs: torch.Tensor, of: torch.Tensor) -> torch.Tensor:
    """How much of each map in ``probs`` lies inside each map of ``of``.

    ``probs`` ``(U, P, T)`` and ``of`` ``(M, P, T)`` probabilities in [0, 1]; returns ``(U, M)``
    ``sum(min(probs[u], of[m])) / sum(probs[u])`` (0 for an empty ``probs[u]``).
    """
    inter = torch.minimum(probs[:, None], of[None]).flatten(2).sum(-1)  # (U, M)
    mass = probs.flatten(1).sum(-1)[:, None]
    return torch.where(mass > 0, inter / mass.clamp_min(1e-12), torch.zeros_like(inter))


def duplicate_tally(slot_probs: torch.Tensor, activity_logits: torch.Tensor, matched: torch.Tensor,
                    active: float = ACTIVE, containment: float = CONTAINMENT) -> dict[str, float]:
    """Counts of one batch (summed by :func:`validation_duplicates`).

    Args:
        slot_probs: ``(B, K, P, T)`` slot pitch probabilities.
        activity_logits: ``(B, K)`` slot activity logits.
        matched: ``(B, K)`` bool, slots the matching assigned a target.
        active: activity probability from which a slot counts as active.
        containment: soft containment (:func:`soft_containment`) from which an active unmatched
            slot duplicates a matched slot of the same item.

    Returns:
        ``slots``, ``matched``, ``active_unmatched``, ``duplicates``, ``matched_inactive`` (counts)
        and ``activity_bce_sum`` (BCE summed over the ``B * K`` slots).
    """
    if slot_probs.dim() != 4 or activity_logits.shape != slot_probs.shape[:2] or \
            matched.shape != slot_probs.shape[:2]:
        raise ValueError(f"shapes do not fit: slot_probs {tuple(slot_probs.shape)}, activity "
                         f"{tuple(activity_logits.shape)}, matched {tuple(matched.shape)}")
    matched = matched.bool()
    on = torch.sigmoid(activity_logits.float()) >= active
    dups = 0
    for b in range(slot_probs.shape[0]):
        u = torch.nonzero(on[b] & ~matched[b]).flatten()
        m = torch.nonzero(matched[b]).flatten()
        if u.numel() and m.numel():
            c = soft_containment(slot_probs[b, u].float(), slot_probs[b, m].float())
            dups += int((c.amax(dim=1) >= containment).sum())
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        activity_logits.float(), matched.float(), reduction="sum")
    return {"slots": float(matched.numel()), "matched": float(matched.sum()),
            "active_unmatched": float((on & ~matched).sum()), "duplicates": float(dups),
            "matched_inactive": float((~on & matched).sum()), "activity_bce_sum": float(bce)}


def _rates(t: dict[str, float]) -> dict[str, Any]:
    """Counts as ints plus ``dup_rate`` and ``activity_bce`` (mean over slots)."""
    out: dict[str, Any] = {k: int(v) for k, v in t.items() if k != "activity_bce_sum"}
    out["dup_rate"] = t["duplicates"] / t["active_unmatched"] if t["active_unmatched"] else None
    out["activity_bce"] = t["activity_bce_sum"] / t["slots"] if t["slots"] else None
    return out


def run_weights(meta: dict[str, Any], exp: Any) -> tuple[float, float]:
    """``(timbre, activity)`` matching weights the run was trained with (its ``train_config``;
    the row's own activity weight, 4m, wins)."""
    from slotmpe.experiments import resolve_activity_match_weight

    train = ((meta.get("extra") or {}).get("train_config") or {})
    return (float(train.get("timbre_match_weight", 1.0)),
            resolve_activity_match_weight(exp, float(train.get("activity_match_weight", 0.0))))


@torch.no_grad()
def validation_duplicates(model: torch.nn.Module, exp: Any, feature_dir: Path,
                          embeddings: dict[str, np.ndarray] | None,
                          act_weights: Sequence[float], emb_weight: float = 1.0,
                          val_windows: int | None = None, batch_size: int = 8
                          ) -> dict[str, dict[str, Any]]:
    """:func:`duplicate_tally` over the fixed validation windows, once per activity weight of the
    matching cost (``"w=<weight>"`` -> counts and rates, :func:`_rates`)."""
    from torch.utils.data import DataLoader

    from slotmpe.data import WindowDataset
    from slotmpe.experiments import Experiment
    from slotmpe.losses import match_slots, matched_mask

    if exp.matching != "hungarian":
        raise ValueError(f"experiment {exp.name} has no Hungarian matching to diagnose")
    ds = WindowDataset(feature_dir, "val", train=False, windows_per_epoch=val_windows,
                       embeddings=embeddings)
    if len(ds) == 0:
        raise ValueError(f"{feature_dir}: no validation windows")
    model.eval()
    # the matching with a given activity weight: the row with that weight as its own
    rows: dict[str, Experiment] = {
        f"w={w:g}": dataclasses.replace(exp, activity_match_weight=float(w)) for w in act_weights}
    tally = {k: dict.fromkeys(("slots", "matched", "active_unmatched", "duplicates",
                               "matched_inactive", "activity_bce_sum"), 0.0) for k in rows}
    for batch in DataLoader(ds, batch_size=batch_size, shuffle=False):
        out = {k: v.float() for k, v in model(batch["x"]).items() if torch.is_tensor(v)}
        probs = torch.sigmoid(out["slot_logits"])
        for key, row in rows.items():
            m = matched_mask(match_slots(row, out, batch, emb_weight), probs.shape[1])
            for k, v in duplicate_tally(probs, out["activity_logits"], m).items():
                tally[key][k] += v
    return {k: _rates(t) for k, t in tally.items()}


def selected_epoch_losses(model_path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Train and validation activity loss of the selected epoch (``train_log.csv`` beside the
    model; ``{}`` when there is none)."""
    log_csv = model_path.with_name("train_log.csv")
    best = (meta.get("extra") or {}).get("best_epoch")
    if not log_csv.is_file() or best is None:
        return {}
    df = pd.read_csv(log_csv)
    row = df.loc[df["epoch"] == int(best)]
    if row.empty:
        return {}
    r = row.iloc[0]
    keys = [c for c in ("train_activity", "val_activity", "train_slot", "val_slot") if c in df]
    return {"best_epoch": int(best), **{k: float(r[k]) for k in keys}}


def validation_report(model_path: Path, feature_dir: Path, work: Path,
                      embeddings_path: Path | None = None, val_windows: int | None = None,
                      device: str = "cpu") -> dict[str, Any]:
    """The validation diagnosis of one trained model (module docstring); writes
    ``work/duplicates_val.json``, ``work/thresholds_val.json``, ``work/metrics_val.json``."""
    from slotmpe.evaluation import evaluate_model, load_embeddings, tune_thresholds
    from slotmpe.experiments import get_experiment
    from slotmpe.models import load_checkpoint

    model_path, feature_dir, work = Path(model_path), Path(feature_dir), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    model, meta = load_checkpoint(model_path, map_location="cpu")
    extra = meta.get("extra") or {}
    exp = get_experiment(str(extra.get("exp") or meta.get("experiment")))
    if exp.timbre_head and embeddings_path is None:
        guess = model_path.resolve().parents[2] / "timbre" / "embeddings.parquet"
        embeddings_path = guess if guess.is_file() else None
    emb = load_embeddings(embeddings_path) if embeddings_path is not None else None
    w_emb, w_act = run_weights(meta, exp)
    weights = sorted({0.0, w_act})
    windows = validation_duplicates(model, exp, feature_dir, emb, weights, w_emb, val_windows)
    th_path, met_path = work / "thresholds_val.json", work / "metrics_val.json"
    th = tune_thresholds(model_path, feature_dir, th_path, split="val", device=device)
    met = evaluate_model(model_path, th_path, feature_dir, met_path, embeddings_path,
                         split="val", device=device, per_file_path=work / "per_file_val.csv")
    out = {
        "model": str(model_path), "features": str(feature_dir), "exp": exp.name,
        "dataset": extra.get("dataset"), "seed": extra.get("seed"),
        "activity_match_weight": w_act, "timbre_match_weight": w_emb,
        "embeddings": None if embeddings_path is None else str(embeddings_path),
        "windows": windows, "own_matching": f"w={w_act:g}",
        "train_log": selected_epoch_losses(model_path, meta),
        "val": {k: met.get(k) for k in ("slot_f1", "slot_p", "slot_r", "slot_ap", "std_f1",
                                         "dup_rate", "multi_instrument_f1")},
        "thresholds": {"mix": th["mix"], "slots": th["slots"]},
    }
    with atomic_path(work / "duplicates_val.json") as tmp:
        tmp.write_text(json.dumps(out, indent=2) + "\n")
    return out


def _print_val(r: dict[str, Any]) -> None:
    v = {k: "-" if x is None else f"{x:.1f}" for k, x in r["val"].items()}
    print(f"{r['model']} ({r['exp']}, activity_match_weight {r['activity_match_weight']:g}); "
          f"validation files: slot P {v['slot_p']} R {v['slot_r']} F1 {v['slot_f1']} "
          f"AP {v['slot_ap']}", flush=True)
    for key, t in r["windows"].items():
        own = " (the run's own matching)" if key == r["own_matching"] else ""
        print(f"  windows, matching {key}{own}: {t['active_unmatched']} active unmatched slots, "
              f"{t['duplicates']} duplicate a matched one (dup_rate {_pct(t['dup_rate'])}); "
              f"{t['matched_inactive']} matched slots inactive; activity BCE "
              f"{t['activity_bce']:.3f}", flush=True)
    if r["train_log"]:
        print(f"  train_log at epoch {r['train_log']['best_epoch']}: "
              + ", ".join(f"{k} {v:.3f}" for k, v in r["train_log"].items() if k != "best_epoch"),
              flush=True)


def main_val(argv: Sequence[str]) -> dict[str, Any]:
    """The ``val`` subcommand: :func:`validation_report` of one model."""
    p = argparse.ArgumentParser(prog="bench_duplicates.py val",
                                description="duplicate diagnosis of a trained model on validation")
    p.add_argument("--model", type=Path, required=True, help="model.pt of a Hungarian experiment")
    p.add_argument("--features", type=Path, required=True, help="its feature cache folder")
    p.add_argument("--embeddings", type=Path, default=None,
                   help="embeddings.parquet (default: results/<ds>/timbre/ of the model's run)")
    p.add_argument("--work", type=Path, default=None,
                   help="output folder (default: <model folder>/diagnosis)")
    p.add_argument("--val-windows", type=int, default=None, help="fixed validation windows (all)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    set_threads(args.threads)
    r = validation_report(args.model, args.features, args.work or args.model.parent / "diagnosis",
                          args.embeddings, args.val_windows)
    _print_val(r)
    return r


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the arguments, transcribe the file with 2b and 4a, print the duplicate figures
    (``val ...``: the validation diagnosis, :func:`main_val`)."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["val"]:
        return main_val(argv[1:])
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
