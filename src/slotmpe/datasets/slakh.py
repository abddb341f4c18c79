"""Slakh2100 adapter (the paper's next scale step): unpacked ``slakh2100_flac_redux`` -> manifest.

Layout (Manilow et al., WASPAA 2019; Zenodo record 4599666)::

    slakh2100_flac_redux/{train,validation,test,omitted}/TrackNNNNN/
        metadata.yaml       audio_dir, midi_dir, stems: {Sxx: {inst_class, is_drum, program_num,
                            midi_program_name, audio_rendered, ...}}
        mix.flac            (or mix.wav in the wav release)
        stems/Sxx.flac      one rendered stem per source (or .wav)
        MIDI/Sxx.mid        the source's MIDI
        all_src.mid

The official split folders give the split (``validation`` -> ``val``; ``omitted`` tracks, left out
by the redux release, are skipped). ``cfg["subset"]`` (int) keeps the first N tracks (by name) of
each split, so the scale step can be sized. Sources that were not rendered (``audio_rendered:
false``) or whose stem file is missing are skipped; drum sources (``is_drum: true``) are
non-pitched. A track left with no pitched source is skipped (logged).

Instrument mapping: by the source's General-MIDI ``program_num`` (``gm_program_instrument``),
which is finer than ``inst_class``; ``inst_class`` is the fallback when the program is missing
(``INST_CLASS_MAP``). Documented choices for programs outside the canonical list: electric
pianos/clavinet -> ``electric_piano``; chromatic percussion (celesta ... dulcimer), ethnic,
sound effects and synth effects -> ``synth`` (the catch-all pitched keyboard/electronic label);
accordion/harmonica -> ``organ``; string ensembles, tremolo/pizzicato strings -> ``violin``
(family strings); timpani -> ``synth``; choir/voice -> ``vocals``; brass section / synth brass ->
``trumpet``; recorder/pan flute/ocarina etc. -> ``flute``; percussive programs (112-119: bells,
woodblock, taiko, synth drum, ...) -> ``drums`` (non-pitched).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from slotmpe.constants import family_of
from slotmpe.datasets.manifest import (
    ManifestError,
    audio_duration,
    read_midi,
    relative_path,
    write_manifest,
    write_notes,
)
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


def find_tracks(raw_dir: Path) -> dict[str, list[Path]]:
    """``{split: [TrackNNNNN folders, sorted]}`` from the official split folders below ``raw_dir``."""
    out: dict[str, list[Path]] = {"train": [], "val": [], "test": []}
    for meta in sorted(Path(raw_dir).rglob("metadata.yaml")):
        track = meta.parent
        if not _TRACK_RE.match(track.name):
            continue
        parent = track.parent.name.lower()
        if parent in SKIP_FOLDERS:
            continue
        if parent not in SPLIT_FOLDERS:
            raise ManifestError(
                f"{track}: not inside a train/validation/test folder (parent {track.parent.name!r})"
            )
        out[SPLIT_FOLDERS[parent]].append(track)
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


def _midi_notes(path: Path) -> pd.DataFrame:
    """All notes of a MIDI file as ``onset_s, offset_s, midi``."""
    pm = read_midi(path)
    notes = [
        (n.start, n.end, n.pitch) for inst in pm.instruments for n in inst.notes if n.end > n.start
    ]
    return pd.DataFrame(notes, columns=["onset_s", "offset_s", "midi"]).astype(
        {"onset_s": np.float64, "offset_s": np.float64, "midi": np.int64}
    )


def _track_rows(
    track: Path, split: str, out_dir: Path, dataset: str = DATASET
) -> list[dict[str, Any]]:
    """Manifest rows of one Slakh track folder (empty if it has no pitched source with audio)."""
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
        if smeta.get("audio_rendered") is False:
            continue
        stem = _audio(audio_dir, str(sid))
        if stem is None:
            log.warning(
                "%s: stem audio %s/%s.(flac|wav) missing; source skipped", where, audio_dir, sid
            )
            continue
        instrument = source_instrument(smeta, where)
        pitched = family_of(instrument) != "percussion"
        duration = audio_duration(stem)
        track_id = f"{track.name}_{sid}"
        notes_path = ""
        if pitched:
            mid = midi_dir / f"{sid}.mid"
            if not mid.is_file():
                raise ManifestError(f"{where}: MIDI file {mid} missing for a pitched source")
            notes = _midi_notes(mid)
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


def build_slakh(raw_dir: Path, out_dir: Path, cfg: Mapping[str, Any]) -> Path:
    """Write ``out_dir/manifest.parquet`` (+ ``out_dir/notes/*.csv``) for an unpacked Slakh2100.

    ``cfg["subset"]`` (optional int): at most that many tracks (first by name) per split.
    Returns the manifest path; raises :class:`ManifestError` naming the file for layout problems.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    tracks = find_tracks(raw_dir)
    if not any(tracks.values()):
        raise ManifestError(f"{raw_dir}: no Slakh TrackNNNNN/metadata.yaml folders found")
    subset = cfg.get("subset")
    if subset is not None and int(subset) < 1:
        raise ValueError(
            f"slakh: subset must be a positive number of tracks per split, got {subset!r}"
        )
    rows: list[dict[str, Any]] = []
    for split, folders in tracks.items():
        if subset is not None:
            folders = folders[: int(subset)]
        for track in folders:
            rows.extend(_track_rows(track, split, out_dir, str(cfg.get("name") or DATASET)))
    if not rows:
        raise ManifestError(f"{raw_dir}: no Slakh track with a rendered pitched source")
    path = out_dir / "manifest.parquet"
    write_manifest(pd.DataFrame(rows), path)
    log.info(
        "slakh: %d tracks, %d sources -> %s", len({r["piece_id"] for r in rows}), len(rows), path
    )
    return path
