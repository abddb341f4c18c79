"""Slakh2100 / BabySlakh adapter: an unpacked Slakh archive -> manifest.

Layouts (Manilow et al., WASPAA 2019)::

    slakh2100_flac_redux/{train,validation,test,omitted}/TrackNNNNN/   (Zenodo record 4599666)
    babyslakh_16k/TrackNNNNN/                                         (Zenodo record 4603870)
        metadata.yaml       audio_dir, midi_dir, stems: {Sxx: {inst_class, is_drum, program_num,
                            midi_program_name, audio_rendered, ...}}
        mix.flac            (mix.wav in BabySlakh and the wav release)
        stems/Sxx.flac      one rendered stem per source (or .wav)
        MIDI/Sxx.mid        the source's MIDI
        all_src.mid

Splits: the official split folders give the split (``validation`` -> ``val``; ``omitted`` tracks,
left out by the redux release, are skipped and named in a warning). A layout without split folders
(BabySlakh: 20 tracks directly in ``babyslakh_16k/``) gets a seeded split by track:
:func:`slotmpe.datasets.splits.assign_splits` with every track its own work, 15 % val and 15 %
test (at least one track each), seed ``cfg["split_seed"]`` (default ``cfg["seed"]``, the pipeline
seed, 0); BabySlakh gives 14/3/3 tracks. Mixing both layouts below one folder is an error.
``cfg["subset"]`` (int) keeps the first N tracks (by name) of each split folder, or of all tracks
before the seeded split, so the scale step can be sized. A split left empty is an error unless
``cfg["fill_empty_splits"]`` (see :func:`slotmpe.datasets.splits.fill_empty_splits`).

Rendered sources: a source counts as rendered when its stem file exists; the ``audio_rendered``
flag is only compared with that (BabySlakh's metadata says ``false`` for every stem, rendered or
not), and every disagreement is named in one warning. Drum sources (``is_drum: true``) are
non-pitched. A track left with no pitched source is skipped (logged). Audio files below the
archive that the manifest does not use are named in a warning.

Instrument mapping: by the source's General-MIDI ``program_num`` (``gm_program_instrument``),
which is finer than ``inst_class``; ``inst_class`` is the fallback when the program is missing
(``INST_CLASS_MAP``). Documented choices for programs outside the canonical list: electric
pianos/clavinet -> ``electric_piano``; chromatic percussion (celesta ... dulcimer), ethnic,
sound effects and synth effects -> ``synth`` (the catch-all pitched keyboard/electronic label);
accordion/harmonica -> ``organ``; string ensembles, tremolo/pizzicato strings -> ``violin``
(family strings); timpani -> ``synth``; choir/voice -> ``vocals``; brass section / synth brass ->
``trumpet``; recorder/pan flute/ocarina etc. -> ``flute``; percussive programs (112-119: bells,
woodblock, taiko, synth drum, ...) -> ``drums`` (non-pitched).

MIDI notes are read with :func:`slotmpe.datasets.manifest.midi_notes` (mido, via
:func:`slotmpe.midi.read_midi_notes`: the tempo map merged from every track).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from slotmpe.constants import family_of
from slotmpe.datasets.manifest import (
    ManifestError,
    audio_duration,
    midi_notes,
    relative_path,
    report_unused_audio,
    resolve_path,
    write_manifest,
    write_notes,
)
from slotmpe.datasets.splits import PieceInfo, assign_splits, fill_empty_splits
from slotmpe.utils import get_logger

log = get_logger(__name__)

DATASET = "slakh"
SPLIT_FOLDERS: Mapping[str, str] = {
    "train": "train",
    "validation": "val",
    "val": "val",
    "test": "test",
}
SKIP_FOLDERS = frozenset({"omitted"})
_TRACK_RE = re.compile(r"^Track\d{5}$")

INST_CLASS_MAP: Mapping[str, str] = {
    "piano": "piano",
    "chromatic percussion": "synth",
    "organ": "organ",
    "guitar": "guitar",
    "bass": "electric_bass",
    "strings": "violin",
    "strings (continued)": "violin",
    "brass": "trumpet",
    "reed": "saxophone",
    "pipe": "flute",
    "synth lead": "synth_lead",
    "synth pad": "synth_pad",
    "synth effects": "synth",
    "sound effects": "synth",
    "ethnic": "synth",
    "percussive": "drums",
    "drums": "drums",
}
"""Slakh ``inst_class`` (lower-case) -> canonical instrument, used when ``program_num`` is missing."""

_GM_RANGES: tuple[tuple[int, int, str], ...] = (
    (0, 3, "piano"),
    (4, 5, "electric_piano"),
    (6, 6, "harpsichord"),
    (7, 7, "electric_piano"),
    (8, 15, "synth"),
    (16, 20, "organ"),
    (21, 23, "organ"),
    (24, 31, "guitar"),
    (32, 32, "double_bass"),
    (33, 37, "electric_bass"),
    (38, 39, "synth_bass"),
    (40, 40, "violin"),
    (41, 41, "viola"),
    (42, 42, "cello"),
    (43, 43, "double_bass"),
    (44, 45, "violin"),
    (46, 46, "harp"),
    (47, 47, "synth"),
    (48, 51, "violin"),
    (52, 54, "vocals"),
    (55, 55, "synth"),
    (56, 56, "trumpet"),
    (57, 57, "trombone"),
    (58, 58, "tuba"),
    (59, 59, "trumpet"),
    (60, 60, "horn"),
    (61, 63, "trumpet"),
    (64, 67, "saxophone"),
    (68, 68, "oboe"),
    (69, 69, "english_horn"),
    (70, 70, "bassoon"),
    (71, 71, "clarinet"),
    (72, 72, "piccolo"),
    (73, 79, "flute"),
    (80, 87, "synth_lead"),
    (88, 95, "synth_pad"),
    (96, 103, "synth"),
    (104, 111, "synth"),
    (112, 119, "drums"),
    (120, 127, "synth"),
)


def gm_program_instrument(program: int) -> str:
    """Canonical instrument of a General-MIDI program number 0..127 (see the module docstring)."""
    p = int(program)
    for lo, hi, inst in _GM_RANGES:
        if lo <= p <= hi:
            return inst
    raise ValueError(f"General-MIDI program {program!r} outside 0..127")


def source_instrument(meta: Mapping[str, Any], where: str) -> str:
    """Canonical instrument of one ``stems:`` entry of ``metadata.yaml``."""
    if meta.get("is_drum"):
        return "drums"
    prog = meta.get("program_num")
    if prog is not None and str(prog).lstrip("-").isdigit() and 0 <= int(prog) <= 127:
        return gm_program_instrument(int(prog))
    cls = str(meta.get("inst_class", "")).strip().lower()
    if cls in INST_CLASS_MAP:
        return INST_CLASS_MAP[cls]
    raise ManifestError(
        f"{where}: cannot map source (program_num={prog!r}, inst_class={meta.get('inst_class')!r}) "
        "to an instrument"
    )


UNSPLIT = "unsplit"
"""Key of :func:`find_tracks` for track folders outside any split folder (BabySlakh)."""


def find_tracks(raw_dir: Path) -> dict[str, list[Path]]:
    """``{split: [TrackNNNNN folders, sorted]}`` below ``raw_dir``.

    Keys ``train``, ``val``, ``test`` (official split folders) and ``UNSPLIT`` (track folders not
    inside a split folder, as in BabySlakh). Tracks in ``omitted`` folders are left out.
    """
    out: dict[str, list[Path]] = {"train": [], "val": [], "test": [], UNSPLIT: []}
    for meta in sorted(Path(raw_dir).rglob("metadata.yaml")):
        track = meta.parent
        if not _TRACK_RE.match(track.name):
            continue
        parent = track.parent.name.lower()
        if parent in SKIP_FOLDERS:
            continue
        out[SPLIT_FOLDERS.get(parent, UNSPLIT)].append(track)
    for split in out:
        out[split].sort(key=lambda p: p.name)
    return out


def _audio(folder: Path, stem: str) -> Path | None:
    """``folder/stem.flac`` or ``folder/stem.wav``, whichever exists."""
    for ext in (".flac", ".wav"):
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def _track_rows(
    track: Path,
    split: str,
    out_dir: Path,
    dataset: str = DATASET,
    flags: dict[str, list[str]] | None = None,
) -> list[dict[str, Any]]:
    """Manifest rows of one Slakh track folder (empty if it has no pitched source with audio).

    A source is used when its stem file exists. ``flags`` collects ``Track/Sxx`` names whose
    ``audio_rendered`` flag disagrees with that: ``"false_but_present"``, ``"true_but_missing"``.
    """
    flags = flags if flags is not None else {}
    meta_path = track / "metadata.yaml"
    try:
        meta = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"{meta_path}: cannot read metadata ({exc})") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("stems"), dict):
        raise ManifestError(f"{meta_path}: no 'stems' mapping")
    mix = _audio(track, "mix")
    if mix is None:
        raise ManifestError(f"{track}: no mix.flac or mix.wav")
    audio_dir = track / str(meta.get("audio_dir") or "stems")
    midi_dir = track / str(meta.get("midi_dir") or "MIDI")
    rows = []
    for sid, smeta in sorted(meta["stems"].items()):
        smeta = smeta or {}
        where = f"{meta_path} [{sid}]"
        stem = _audio(audio_dir, str(sid))
        flag = smeta.get("audio_rendered")
        if stem is None:
            if flag is not False:
                flags.setdefault("true_but_missing", []).append(f"{track.name}/{sid}")
            continue
        if flag is False:
            flags.setdefault("false_but_present", []).append(f"{track.name}/{sid}")
        instrument = source_instrument(smeta, where)
        pitched = family_of(instrument) != "percussion"
        duration = audio_duration(stem)
        track_id = f"{track.name}_{sid}"
        notes_path = ""
        if pitched:
            mid = midi_dir / f"{sid}.mid"
            if not mid.is_file():
                raise ManifestError(f"{where}: MIDI file {mid} missing for a pitched source")
            notes = midi_notes(mid)
            notes["offset_s"] = notes["offset_s"].clip(upper=duration)
            notes = notes[notes["offset_s"] > notes["onset_s"]]
            npath = out_dir / "notes" / f"{track_id}.csv"
            write_notes(npath, notes)
            notes_path = relative_path(out_dir, npath)
        rows.append(
            {
                "dataset": dataset,
                "piece_id": track.name,
                "split": split,
                "track_id": track_id,
                "instrument": instrument,
                "family": family_of(instrument),
                "pitched": pitched,
                "stem_path": relative_path(out_dir, stem),
                "mix_path": relative_path(out_dir, mix),
                "notes_path": notes_path,
                "duration_s": duration,
            }
        )
    if not any(r["pitched"] for r in rows):
        log.warning("%s: no rendered pitched source; track skipped", track)
        return []
    return rows


def _warn_flags(flags: Mapping[str, list[str]]) -> None:
    """One warning per kind of ``audio_rendered`` disagreement (see :func:`_track_rows`)."""
    for kind, text in (
        (
            "false_but_present",
            "say audio_rendered: false but have a stem file; used (the file "
            "decides; BabySlakh's metadata says false for every stem)",
        ),
        ("true_but_missing", "have no stem file although audio_rendered is not false; skipped"),
    ):
        names = flags.get(kind, [])
        if names:
            more = f" +{len(names) - 8} more" if len(names) > 8 else ""
            log.warning(
                "slakh: %d source(s) %s: %s%s", len(names), text, ", ".join(names[:8]), more
            )


def build_slakh(raw_dir: Path, out_dir: Path, cfg: Mapping[str, Any]) -> Path:
    """Write ``out_dir/manifest.parquet`` (+ ``out_dir/notes/*.csv``) for an unpacked Slakh2100
    or BabySlakh (see the module docstring for the layouts and the seeded split).

    ``cfg`` keys (optional): ``subset`` (int, tracks per split folder / before the seeded split),
    ``split_seed`` (default ``seed``, default 0), ``fill_empty_splits``, ``name``.
    Returns the manifest path; raises :class:`ManifestError` naming the file for layout problems.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    tracks = find_tracks(raw_dir)
    n_split = sum(len(tracks[s]) for s in ("train", "val", "test"))
    if not n_split and not tracks[UNSPLIT]:
        raise ManifestError(f"{raw_dir}: no Slakh TrackNNNNN/metadata.yaml folders found")
    if n_split and tracks[UNSPLIT]:
        raise ManifestError(
            f"{raw_dir}: track folders both inside and outside train/validation/test folders, e.g. "
            f"{tracks[UNSPLIT][0]} (parent {tracks[UNSPLIT][0].parent.name!r}); use one layout"
        )
    log.info(
        "slakh: found %d track folders below %s (%s)",
        n_split or len(tracks[UNSPLIT]),
        raw_dir,
        "official split folders" if n_split else "no split folders: seeded split by track",
    )
    subset = cfg.get("subset")
    if subset is not None and int(subset) < 1:
        raise ValueError(
            f"slakh: subset must be a positive number of tracks per split, got {subset!r}"
        )
    seed = int(cfg.get("split_seed", cfg.get("seed", 0)))
    dataset = str(cfg.get("name") or DATASET)
    flags: dict[str, list[str]] = {}
    reasons: dict[Path, str] = {}
    for omitted in raw_dir.rglob("omitted"):
        reasons[omitted] = "official 'omitted' split, not used"
    rows_of: dict[str, list[dict[str, Any]]] = {}
    for split, folders in tracks.items():
        if subset is not None:
            for t in folders[int(subset) :]:
                reasons[t] = f"beyond subset: {int(subset)}"
            folders = folders[: int(subset)]
        for track in folders:
            rows = _track_rows(track, split, out_dir, dataset, flags)
            if rows:
                rows_of[track.name] = rows
    _warn_flags(flags)
    if not rows_of:
        raise ManifestError(f"{raw_dir}: no Slakh track with a rendered pitched source")
    split_of = {t: rows[0]["split"] for t, rows in rows_of.items()}
    if not n_split:
        infos = [
            PieceInfo(t, t, sum(bool(r["pitched"]) for r in rows)) for t, rows in rows_of.items()
        ]
        try:
            split_of = assign_splits(
                infos, seed, min_pieces_val=1, min_pieces_test=1, min_sources=1
            )
        except ValueError as exc:
            raise ManifestError(f"{raw_dir}: seeded split by track: {exc}") from exc
    split_of = fill_empty_splits(
        split_of, str(raw_dir), bool(cfg.get("fill_empty_splits", False)), seed, log
    )
    all_rows = [{**r, "split": split_of[t]} for t in sorted(rows_of) for r in rows_of[t]]
    used = [
        resolve_path(out_dir, r[k]) for r in all_rows for k in ("stem_path", "mix_path") if r[k]
    ]
    report_unused_audio(raw_dir, used, log, "slakh", reasons)
    path = out_dir / "manifest.parquet"
    write_manifest(pd.DataFrame(all_rows), path)
    counts = {s: sum(v == s for v in split_of.values()) for s in ("train", "val", "test")}
    log.info("slakh: %d tracks %s, %d sources -> %s", len(rows_of), counts, len(all_rows), path)
    return path
