"""What a user hears: the MIDI tracks ``slotmpe transcribe`` writes for one piece, per model.

Issue 29 item 4. One piece of a feature cache's dataset (its ``mix.wav``, the stems' note CSVs and
instruments from ``manifest.parquet``) is transcribed by each model of ``--model LABEL=PATH``
exactly as ``slotmpe transcribe`` does (the model's tuned thresholds, :func:`transcribe_cqt`).
Every slot track is then put beside the sources:

* the track note rolls ``(K, 72, T)`` are paired with the stem rolls ``(S, 72, T)`` by Hungarian
  matching on the shared (pitch, frame) cells (``bench_stream.matched_counts``); a pair that shares
  no cell is no pair;
* a paired track is ``source`` (its stem, instrument and frame F1 against it);
* an unpaired track is a ``duplicate`` of a paired track when at least :data:`CONTAINMENT` of its
  cells lie in that track's roll, otherwise ``extra``;
* a stem without a paired track is ``missed``.

Prints one Markdown table per model (track name and GM program as written into the MIDI file,
notes, verdict, stem, F1) and a summary line per model: tracks written, sources found, duplicate
tracks, extra tracks, missed sources, names right (at the level written) among the paired tracks.
With several ``--piece`` folders, a table of the counts summed over them per model comes first.
With ``--out`` the same Markdown and a JSON are written there.

Usage::

    PYTHONPATH=src python benchmarks/bench_what_you_hear.py \\
        --piece data/chamber/audio/<piece> --manifest data/chamber/manifest.parquet \\
        --model 3c=results/chamber/3c/seed0/model.pt --model 4m=OUT/w1/seed0/model.pt \\
        [--out benchmarks/out/what_you_hear/chamber]
    # every piece of the test split (the totals first):
    PYTHONPATH=src python benchmarks/bench_what_you_hear.py --split test \\
        --manifest data/chamber/manifest.parquet --model ... --model ...
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_stream import (  # benchmarks/ is on sys.path when run as a script
    f1,
    matched_counts,
    piece_reference,
    roll_counts,
)

from slotmpe.instruments import name_is_right
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

CONTAINMENT = 0.5  # share of an unpaired track's cells inside a paired track: a duplicate


@dataclass(frozen=True)
class Source:
    """One pitched stem of the piece: its instrument, note roll ``(72, T)`` (bool) and family
    (``""``: the package's family of the instrument)."""

    name: str
    instrument: str
    roll: np.ndarray
    family: str = ""


def piece_sources(piece: Path, manifest: Path, n_frames: int) -> list[Source]:
    """The pitched stems of ``piece`` (a folder ``audio/<piece_id>``) from the dataset's
    ``manifest.parquet``; ``ValueError`` naming the piece when the manifest has none."""
    rows = pd.read_parquet(manifest)
    root = manifest.parent
    rows = rows[(rows["piece_id"] == piece.name) & rows["pitched"].astype(bool)]
    if rows.empty:
        raise ValueError(f"{manifest}: no pitched stems of piece {piece.name!r}")
    return [Source(Path(r.notes_path).stem, str(r.instrument), roll, str(r.family))
            for r, roll in zip(rows.itertuples(), piece_reference(rows, root, n_frames),
                               strict=True)]


def classify(tracks: Sequence[Track], sources: Sequence[Source], n_frames: int
             ) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (one per slot track, in track order) and the names of the missed sources.

    ``tracks``: slot tracks (not the mixture); ``sources``: the piece's stems with rolls
    ``(72, n_frames)``. A row holds ``track``, ``program``, ``notes``, ``verdict`` (``source``,
    ``duplicate``, ``extra``), ``named`` (the instrument or family the track was named after,
    :attr:`Track.instrument`), ``stem`` (the paired stem, or for a duplicate the track it copies),
    ``instrument`` and ``family`` (the stem's) and ``f1`` (frame F1 against that stem, 0..1)."""
    rolls = (np.stack([notes_to_roll(t.notes, n_frames) for t in tracks]) if tracks
             else np.zeros((0, 72, n_frames), dtype=bool))
    ref = (np.stack([s.roll for s in sources]) if sources
           else np.zeros((0, 72, n_frames), dtype=bool))
    _, pairs = matched_counts(rolls, ref)
    paired = {k: s for k, s in pairs if int((rolls[k] & ref[s]).sum()) > 0}
    rows: list[dict[str, Any]] = []
    for k, t in enumerate(tracks):
        row: dict[str, Any] = {"track": t.name, "named": t.instrument, "program": int(t.program),
                               "notes": len(t.notes), "verdict": "extra", "stem": "", "instrument": "", "family": "",
                               "f1": None}
        if k in paired:
            s = sources[paired[k]]
            row.update(verdict="source", stem=s.name, instrument=s.instrument, family=s.family,
                       f1=f1(roll_counts(rolls[k], s.roll)))
        else:
            cells = int(rolls[k].sum())
            best = max(paired, key=lambda j: int((rolls[k] & rolls[j]).sum()), default=None)
            if best is not None and cells and (rolls[k] & rolls[best]).sum() >= CONTAINMENT * cells:
                s = sources[paired[best]]
                row.update(verdict="duplicate", stem=f"copies {tracks[best].name}",
                           instrument=s.instrument, family=s.family,
                           f1=f1(roll_counts(rolls[k], s.roll)))
        rows.append(row)
    missed = [s.name for i, s in enumerate(sources) if i not in paired.values()]
    return rows, missed


def summary(rows: Sequence[dict[str, Any]], missed: Sequence[str], n_sources: int) -> dict[str, Any]:
    """Counts of one model's transcription: tracks, found/duplicate/extra/missed, names right
    (a paired track whose name is right at the level written: its stem's instrument, or its
    family for a family name; :func:`slotmpe.instruments.name_is_right`)."""
    found = [r for r in rows if r["verdict"] == "source"]
    return {
        "tracks": len(rows), "sources": n_sources, "found": len(found),
        "duplicates": sum(r["verdict"] == "duplicate" for r in rows),
        "extra": sum(r["verdict"] == "extra" for r in rows), "missed": len(missed),
        "named_right": sum(name_is_right(r["named"], r["instrument"], r["family"] or None)
                           for r in found),
    }


def markdown(label: str, rows: Sequence[dict[str, Any]], missed: Sequence[str],
             s: dict[str, Any]) -> str:
    """One model's table and summary line as Markdown."""
    lines = [f"**{label}**: {s['tracks']} tracks for {s['sources']} sources: {s['found']} found, "
             f"{s['duplicates']} duplicate, {s['extra']} extra, {s['missed']} missed"
             + (f" ({', '.join(missed)})" if missed else "")
             + f"; name right on {s['named_right']} of {s['found']} found", "",
             "| track (name in the MIDI) | GM program | notes | is | stem | F1 vs stem |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        score = "" if r["f1"] is None else f"{100 * r['f1']:.1f}"
        lines.append(f"| {r['track']} | {r['program']} | {r['notes']} | {r['verdict']} | "
                     f"{r['stem']} | {score} |")
    return "\n".join(lines) + "\n"


def totals(per_piece: Sequence[dict[str, Any]], labels: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per model, the :func:`summary` counts summed over ``per_piece`` (each a dict with one
    summary per label), plus ``pieces``."""
    keys = ("sources", "tracks", "found", "duplicates", "extra", "missed", "named_right")
    return {lab: {"pieces": len(per_piece), **{k: sum(int(p[lab][k]) for p in per_piece)
                                                for k in keys}} for lab in labels}


def totals_markdown(tot: dict[str, dict[str, int]]) -> str:
    """The totals of :func:`totals` as a Markdown table, one row per model."""
    lines = ["| model | pieces | sources | tracks written | sources found | duplicate tracks | "
             "extra tracks | sources missed | names right (of found) |", "|" + "---|" * 9]
    for lab, t in tot.items():
        lines.append(f"| {lab} | {t['pieces']} | {t['sources']} | {t['tracks']} | {t['found']} | "
                     f"{t['duplicates']} | {t['extra']} | {t['missed']} | "
                     f"{t['named_right']} ({t['found']}) |")
    return "\n".join(lines) + "\n"


def split_pieces(manifest: Path, split: str) -> list[Path]:
    """The piece folders (``audio/<piece_id>`` beside ``manifest``) of ``split``, sorted;
    ``ValueError`` naming the manifest when the split has none."""
    rows = pd.read_parquet(manifest)
    ids = sorted(rows.loc[rows["split"] == split, "piece_id"].unique())
    if not ids:
        raise ValueError(f"{manifest}: no pieces in split {split!r}")
    return [Path(manifest).parent / "audio" / str(i) for i in ids]


def one_piece(piece: Path, manifest: Path, models: Sequence[tuple[str, Path]]
              ) -> tuple[dict[str, Any], list[str]]:
    """Transcribe ``piece`` with every model: its JSON record and its Markdown parts."""
    source = open_audio(piece / "mix.wav")
    cqt = audio_cqt(source.blocks())
    n_frames = int(cqt.shape[-1])
    sources = piece_sources(piece, manifest, n_frames)
    head = (f"{piece.name}: {source.duration_s:.1f} s, {len(sources)} sources "
            f"({', '.join(s.instrument for s in sources)})\n")
    print(head, flush=True)
    out: dict[str, Any] = {"piece": piece.name, "sources": [s.instrument for s in sources]}
    text = [head]
    for label, path in models:
        mix_thr, slot_thr, _ = resolve_thresholds(path)
        opts = TranscribeOptions(mix_threshold=mix_thr, slot_threshold=slot_thr, write_png=False)
        model, meta = load_model(path)
        tracks, _ = transcribe_cqt(cqt, model, meta, opts, source.duration_s)
        rows, missed = classify([t for t in tracks if t.slot != MIX], sources, n_frames)
        s = summary(rows, missed, len(sources))
        out[label] = {"model": str(path), "rows": rows, "missed_sources": missed, **s}
        md = markdown(label, rows, missed, s)
        print(md, flush=True)
        text.append(md)
    return out, text


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the arguments, transcribe every piece with every model, print the tables (and,
    for several pieces, the totals per model)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--piece", type=Path, nargs="+", default=[],
                   help="data/<ds>/audio/<piece_id> folder(s)")
    p.add_argument("--split", default=None,
                   help="every piece of this split of the manifest (e.g. test), in piece order")
    p.add_argument("--manifest", type=Path, required=True, help="data/<ds>/manifest.parquet")
    p.add_argument("--model", action="append", required=True, metavar="LABEL=PATH",
                   help="a model (.pt or .onnx) and its label; repeat for each model")
    p.add_argument("--out", type=Path, default=None, help="folder for what_you_hear.md/.json")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    set_threads(args.threads)
    models = []
    for item in args.model:
        label, sep, path = item.partition("=")
        if not sep:
            p.error(f"--model {item!r}: expected LABEL=PATH")
        models.append((label, Path(path)))
    if bool(args.piece) == bool(args.split):
        p.error("give --piece folder(s) or --split, not both or neither")
    folders = list(args.piece) or split_pieces(args.manifest, args.split)
    pieces, text = [], []
    for piece in folders:
        rec, md = one_piece(piece, args.manifest, models)
        pieces.append(rec)
        text += md
    out: dict[str, Any] = pieces[0] if len(pieces) == 1 else {"pieces": pieces}
    if len(pieces) > 1:
        out["totals"] = totals(pieces, [lab for lab, _ in models])
        md = totals_markdown(out["totals"])
        print(md, flush=True)
        text = [f"Totals over {len(pieces)} pieces\n", md, *text]
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out / "what_you_hear.md") as tmp:
            tmp.write_text("\n".join(text))
        with atomic_path(args.out / "what_you_hear.json") as tmp:
            tmp.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
