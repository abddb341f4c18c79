"""MusicNet adapter: the unpacked ``musicnet.tar.gz`` (Zenodo record 5120004) -> manifest + notes.

Layout (Thickstun et al., ICLR 2017; the Zenodo re-release)::

    musicnet/train_data/{id}.wav     44.1 kHz mono recordings (320)
    musicnet/train_labels/{id}.csv   start_time,end_time,instrument,note,start_beat,end_beat,note_value
    musicnet/test_data/{id}.wav      (10)
    musicnet/test_labels/{id}.csv

Label times are sample indices at 44.1 kHz; ``note`` is the MIDI pitch; ``instrument`` is a
MusicNet instrument code (General-MIDI program + 1), mapped by ``MUSICNET_INSTRUMENTS``.

MusicNet has no stems: every recording gives one manifest row per instrument it uses, with
``stem_path`` "" and ``mix_path`` the recording, and that instrument's notes; only the mixture
targets are used (Exp 1a). The split is MuN-10 (Weiss & Peeters 2022; 293/27/10 recordings) from
``slotmpe/data/reference/musicnet_mun10_split.json`` (or ``cfg["split_file"]``), whose names are
``{id}_{Composer}_{Work}`` (e.g. ``1727_Schubert_OP114_PianoQuintet``); the leading number is the
MusicNet id and the whole name is the manifest ``piece_id``. The archive's own train/test folders
are only where files are looked for. By default every recording of the split must be present
(``cfg["allow_missing_pieces"]: true`` relaxes this); a split left empty is an error unless
``cfg["fill_empty_splits"]`` (:func:`slotmpe.datasets.splits.fill_empty_splits`). Audio files the
manifest does not use are named in a warning.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slotmpe.constants import family_of
from slotmpe.datasets.manifest import (
    ManifestError,
    audio_duration,
    check_split_coverage,
    clip_notes,
    relative_path,
    report_unused_audio,
    write_manifest,
    write_notes,
)
from slotmpe.datasets.splits import fill_empty_splits
from slotmpe.utils import get_logger

log = get_logger(__name__)

DATASET = "musicnet"
LABEL_SAMPLE_RATE = 44_100
LABEL_COLUMNS = ("start_time", "end_time", "instrument", "note")

MUSICNET_INSTRUMENTS: Mapping[int, str] = {
    1: "piano",
    7: "harpsichord",
    41: "violin",
    42: "viola",
    43: "cello",
    44: "double_bass",
    61: "horn",
    69: "oboe",
    71: "bassoon",
    72: "clarinet",
    74: "flute",
}
"""MusicNet instrument code (GM program + 1) -> canonical instrument."""


def default_split_path() -> Path:
    """The MuN-10 split shipped with the package."""
    return Path(
        str(resources.files("slotmpe") / "data" / "reference" / "musicnet_mun10_split.json")
    )


def load_split(path: str | os.PathLike[str] | None = None) -> dict[int, tuple[str, str]]:
    """``{MusicNet id: (piece name, split)}`` from a MuN-10-style split JSON."""
    p = Path(path) if path is not None else default_split_path()
    try:
        data = json.loads(Path(p).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{p}: cannot read MusicNet split file ({exc})") from exc
    out: dict[int, tuple[str, str]] = {}
    for split in ("train", "val", "test"):
        names = data.get(split)
        if not isinstance(names, list):
            raise ValueError(f"{p}: MusicNet split file lacks a list {split!r}")
        for name in names:
            m = re.match(r"^(\d+)", str(name))
            if not m:
                raise ValueError(f"{p}: {split} entry {name!r} does not start with a MusicNet id")
            rid = int(m.group(1))
            if rid in out:
                raise ValueError(f"{p}: MusicNet id {rid} listed twice ({out[rid][0]!r}, {name!r})")
            safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name))
            out[rid] = (safe, split)
    return out


def find_recordings(raw_dir: Path) -> dict[int, tuple[Path, Path]]:
    """``{id: (wav, labels csv)}`` for every recording in ``*_data/`` + ``*_labels/`` below ``raw_dir``."""
    out: dict[int, tuple[Path, Path]] = {}
    for data_dir in sorted(Path(raw_dir).rglob("*_data")):
        if not data_dir.is_dir():
            continue
        label_dir = data_dir.with_name(data_dir.name[: -len("_data")] + "_labels")
        if not label_dir.is_dir():
            continue
        for wav in sorted(data_dir.glob("*.wav")):
            if not wav.stem.isdigit():
                continue
            rid = int(wav.stem)
            csv = label_dir / f"{wav.stem}.csv"
            if not csv.is_file():
                raise ManifestError(f"{wav}: no label file {csv}")
            if rid in out:
                raise ManifestError(f"MusicNet id {rid} found twice: {out[rid][0]} and {wav}")
            out[rid] = (wav, csv)
    return out


def read_labels(path: Path) -> pd.DataFrame:
    """A MusicNet label CSV -> frame ``instrument`` (int code), ``onset_s``, ``offset_s``, ``midi``."""
    try:
        df = pd.read_csv(path)
    except Exception as exc:
        raise ManifestError(f"{path}: cannot parse MusicNet label CSV ({exc})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in LABEL_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{path}: label CSV lacks column(s) {missing}; has {list(df.columns)}")
    vals = {c: pd.to_numeric(df[c], errors="coerce") for c in LABEL_COLUMNS}
    for c, v in vals.items():
        if v.isna().any():
            row = int(np.flatnonzero(v.isna().to_numpy())[0])
            raise ManifestError(
                f"{path}: row {row + 2}: column {c!r} is not numeric ({df[c].iloc[row]!r})"
            )
    out = pd.DataFrame(
        {
            "instrument": vals["instrument"].astype(np.int64),
            "onset_s": vals["start_time"].astype(np.float64) / LABEL_SAMPLE_RATE,
            "offset_s": vals["end_time"].astype(np.float64) / LABEL_SAMPLE_RATE,
            "midi": vals["note"].astype(np.int64),
        }
    )
    bad = ~out["midi"].between(0, 127)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ManifestError(
            f"{path}: row {row + 2}: note {out['midi'].iloc[row]} outside MIDI 0..127"
        )
    return out


def build_musicnet(raw_dir: Path, out_dir: Path, cfg: Mapping[str, Any]) -> Path:
    """Write ``out_dir/manifest.parquet`` (+ ``out_dir/notes/*.csv``) for an unpacked MusicNet.

    ``cfg`` keys (optional): ``split_file`` (default: MuN-10), ``allow_missing_pieces``.
    One row per (recording, instrument); ``track_id`` = ``{piece_id}__{instrument}``.
    Raises :class:`ManifestError` naming the file for unknown instrument codes, malformed labels
    or recordings absent from the split.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    split = load_split(cfg.get("split_file"))
    recs = find_recordings(raw_dir)
    if not recs:
        raise ManifestError(
            f"{raw_dir}: no MusicNet recordings (*_data/{{id}}.wav + *_labels/{{id}}.csv)"
        )
    log.info("musicnet: found %d recordings below %s", len(recs), raw_dir)
    check_split_coverage(
        {rid: wav for rid, (wav, _) in recs.items()}, split, raw_dir, "MusicNet recording", cfg, log
    )

    notes_dir = out_dir / "notes"
    rows = []
    for rid in sorted(recs):
        wav, csv = recs[rid]
        piece_id, part = split[rid]
        labels = read_labels(csv)
        duration = audio_duration(wav)
        codes = sorted(labels["instrument"].unique())
        if not codes:
            raise ManifestError(f"{csv}: label file has no notes")
        for code in codes:
            if int(code) not in MUSICNET_INSTRUMENTS:
                raise ManifestError(
                    f"{csv}: unknown MusicNet instrument code {code} (known: {sorted(MUSICNET_INSTRUMENTS)})"
                )
            instrument = MUSICNET_INSTRUMENTS[int(code)]
            notes = clip_notes(
                labels.loc[labels["instrument"] == code, ["onset_s", "offset_s", "midi"]], duration
            )
            track_id = f"{piece_id}__{instrument}"
            npath = notes_dir / f"{track_id}.csv"
            write_notes(npath, notes)
            rows.append(
                {
                    "dataset": str(cfg.get("name") or DATASET),
                    "piece_id": piece_id,
                    "split": part,
                    "track_id": track_id,
                    "instrument": instrument,
                    "family": family_of(instrument),
                    "pitched": True,
                    "stem_path": "",
                    "mix_path": relative_path(out_dir, wav),
                    "notes_path": relative_path(out_dir, npath),
                    "duration_s": duration,
                }
            )
    split_of = fill_empty_splits(
        {split[rid][0]: split[rid][1] for rid in recs},
        str(raw_dir),
        bool(cfg.get("fill_empty_splits", False)),
        int(cfg.get("seed", 0)),
        log,
    )
    rows = [{**r, "split": split_of[r["piece_id"]]} for r in rows]
    report_unused_audio(raw_dir, [wav for wav, _ in recs.values()], log, "musicnet")
    path = out_dir / "manifest.parquet"
    write_manifest(pd.DataFrame(rows), path)
    log.info("musicnet: %d recordings, %d tracks -> %s", len(recs), len(rows), path)
    return path
