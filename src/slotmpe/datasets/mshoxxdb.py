"""mshoxxDB adapter: the unpacked Zenodo archive -> ``manifest.parquet`` + notes CSVs.

What is known about the archive (record 10.5281/zenodo.13284494, its README and CHANGELOG on
github.com/mic-tae/mshoxxdb; the real archive could not be inspected while writing this module):

* 18 pieces, 125 tracks, mono FLAC 44.1 kHz; one folder per piece named ``<Title>_v1`` in v1.1/v1.2
  (v1.0 used per-piece version tags such as ``Beneath_(8)``); the mixture is ``<folder>.flac`` and
  each track ``<folder>_<label>.flac`` with labels such as ``bass``, ``bassline1``, ``mel2``,
  ``mel8bit``, ``piano``, ``organ``, ``choir``, ``strings``, ``drums``.
* "track-wise MIDI files": one MIDI file of pitch annotations per track. Assumed name:
  ``<folder>_<label>.mid`` (or ``.midi``) anywhere below the archive root (beside the FLAC or in a
  ``midi``-like subfolder); drum tracks need none (they are non-pitched).
* ``metadata.csv`` (v1.0, v1.2; v1.2 adds ``piece_id``) and the splits ``ms12`` (one JSON file)
  and ``ms14`` (three JSON files). v1.1's JSON files name pieces by file/folder names, v1.2's by
  ``piece_id``. v1.1 has a folder-name typo, ``Güte_des_Geschicks_v1`` where its JSON files say
  ``Guete``; v1.2 replaced every "ü" by "ue".
* Mixtures are not exact sums of the stems (limiting, side-chain); the provided mixture is used.

Parsing is tolerant where the layout is not known for sure:

* Piece folders are found anywhere below ``raw_dir``: a folder holding ``<folder>.flac|wav`` (the
  mix) and at least one ``<folder>_<label>.flac|wav`` (a stem).
* Names are matched after normalisation (umlauts transliterated, ü -> ue; case, punctuation and a
  trailing version tag ``_v1`` / ``_(8)`` ignored); a split entry may name the piece, its mix or
  one of its stems, with or without extension or folder.
* The split file is the JSON whose name contains ``cfg["split"]`` (default ``"ms12"``), or
  ``cfg["split_file"]``. Accepted shapes: ``{"train": [...], "val"|"valid"|"validation": [...],
  "test": [...]}`` (possibly nested one level deeper), ``{name: split}`` or a list of
  ``{"piece_id"|"name"|...: ..., "split": ...}``. Entries are strings, integers (``piece_id``) or
  objects holding one of those. Integer/opaque ``piece_id`` values are resolved with
  ``metadata.csv``, using whichever of its columns names the piece folders. Pieces the split file
  does not list are left out (logged); a split entry that matches no piece is an error. If the
  split has no validation part, ``cfg["val_pieces"]`` (an int) draws that many training pieces
  with ``cfg["seed"]`` (default 0); otherwise it is an error. A split left empty is an error unless
  ``cfg["fill_empty_splits"]``; audio files the manifest does not use are named in a warning.

Labels map to canonical instruments (``LABEL_MAP``, after stripping trailing digits): drums ->
``drums`` (non-pitched); bass/bassline -> ``synth_bass``; mel/lead/arp -> ``synth_lead``;
8-bit labels -> ``chiptune``; pad -> ``synth_pad``; choir/vox -> ``vocals``; strings -> ``violin``
(string-ensemble patches; the family, strings, is what matters); piano, organ, guitar and any
canonical name map to themselves. ``cfg["instrument_map"]`` ({label: instrument}) overrides;
an unknown label is an error naming the file unless ``cfg["unknown_instrument"]`` (e.g.
``"synth"``) is set.
"""

from __future__ import annotations

import csv
import json
import random
import re
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from slotmpe.constants import INSTRUMENT_FAMILY, SPLITS, family_of
from slotmpe.datasets.manifest import (
    ManifestError,
    audio_duration,
    clip_notes,
    midi_notes,
    relative_path,
    report_unused_audio,
    write_manifest,
    write_notes,
)
from slotmpe.datasets.splits import fill_empty_splits
from slotmpe.utils import get_logger

log = get_logger(__name__)

DATASET = "mshoxxdb"
AUDIO_EXT = (".flac", ".wav")
MIDI_EXT = (".mid", ".midi")

DRUM_LABELS = frozenset(
    {
        "drums",
        "drum",
        "drumkit",
        "kit",
        "percussion",
        "perc",
        "kick",
        "kicks",
        "snare",
        "hihat",
        "hihats",
        "hats",
        "hh",
        "clap",
        "claps",
        "cymbal",
        "cymbals",
        "toms",
        "beat",
        "beats",
    }
)
LABEL_MAP: Mapping[str, str] = {
    **{lab: "drums" for lab in DRUM_LABELS},
    "bass": "synth_bass",
    "bassline": "synth_bass",
    "subbass": "synth_bass",
    "sub": "synth_bass",
    "synthbass": "synth_bass",
    "reese": "synth_bass",
    "mel": "synth_lead",
    "melody": "synth_lead",
    "lead": "synth_lead",
    "synthlead": "synth_lead",
    "arp": "synth_lead",
    "arpeggio": "synth_lead",
    "pluck": "synth_lead",
    "seq": "synth_lead",
    "mel8bit": "chiptune",
    "8bit": "chiptune",
    "chip": "chiptune",
    "chiptune": "chiptune",
    "pad": "synth_pad",
    "pads": "synth_pad",
    "synthpad": "synth_pad",
    "atmo": "synth_pad",
    "synth": "synth",
    "fx": "synth",
    "sfx": "synth",
    "choir": "vocals",
    "vox": "vocals",
    "vocal": "vocals",
    "vocals": "vocals",
    "voice": "vocals",
    "strings": "violin",
    "string": "violin",
    "piano": "piano",
    "keys": "piano",
    "epiano": "electric_piano",
    "rhodes": "electric_piano",
    "organ": "organ",
    "guitar": "guitar",
    "gtr": "guitar",
    "harp": "harp",
    "brass": "trumpet",
    "sax": "saxophone",
}
_SPLIT_ALIASES: Mapping[str, str] = {
    "train": "train",
    "training": "train",
    "trn": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "development": "val",
    "test": "test",
    "testing": "test",
    "tst": "test",
    "eval": "test",
    "evaluation": "test",
}
_ID_KEYS = (
    "piece_id",
    "pieceid",
    "id",
    "name",
    "piece",
    "title",
    "file",
    "filename",
    "folder",
    "path",
)
_VERSION_RE = re.compile(r"(?:[_ -]v\d+|[_ -]?\(\d+\))$", re.IGNORECASE)


# ------------------------------------------------------------------------------------------ names
def _ascii(name: str) -> str:
    """``name`` in ASCII: German umlauts and ß transliterated (ü -> ue), other accents dropped."""
    s = str(name)
    for a, b in (
        ("ä", "ae"),
        ("ö", "oe"),
        ("ü", "ue"),
        ("Ä", "Ae"),
        ("Ö", "Oe"),
        ("Ü", "Ue"),
        ("ß", "ss"),
    ):
        s = s.replace(a, b)
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii")
    return s


def normalise(name: str) -> str:
    """Matching key of a name: umlauts transliterated (ü -> ue), accents dropped, lower-case,
    only letters and digits kept (``"Güte_des_Geschicks_v1"`` -> ``"guetedesgeschicksv1"``)."""
    return re.sub(r"[^a-z0-9]", "", _ascii(name).lower())


def strip_version(name: str) -> str:
    """A name without its trailing version tag (``"Beneath_v1"``, ``"Beneath_(8)"`` -> ``"Beneath"``)."""
    return _VERSION_RE.sub("", name)


def safe_piece_id(folder_name: str) -> str:
    """Manifest ``piece_id`` of a piece folder: ASCII, ``[A-Za-z0-9._-]``, no version tag."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", _ascii(strip_version(folder_name))).strip("_.-")
    return s or "piece"


def label_instrument(label: str, where: Path, cfg: Mapping[str, Any]) -> str:
    """Canonical instrument of a stem label (``"bassline2"`` -> ``"synth_bass"``); see module doc."""
    overrides = {normalise(k): v for k, v in (cfg.get("instrument_map") or {}).items()}
    key = normalise(label)
    base = re.sub(r"\d+$", "", key) or key
    for k in (key, base):
        if k in overrides:
            inst = str(overrides[k])
            if inst not in INSTRUMENT_FAMILY:
                raise ValueError(
                    f"mshoxxdb: instrument_map maps {label!r} to unknown instrument {inst!r}"
                )
            return inst
    for k in (key, base):
        if k in LABEL_MAP:
            return LABEL_MAP[k]
        if k in INSTRUMENT_FAMILY:
            return k
    if "8bit" in key or "chip" in key:
        return "chiptune"
    if "drum" in key or "perc" in key:
        return "drums"
    fallback = cfg.get("unknown_instrument")
    if fallback:
        if fallback not in INSTRUMENT_FAMILY:
            raise ValueError(
                f"mshoxxdb: unknown_instrument {fallback!r} is not a canonical instrument"
            )
        log.warning("%s: unknown track label %r mapped to %r", where, label, fallback)
        return str(fallback)
    raise ManifestError(
        f"{where}: unknown mshoxxDB track label {label!r}; add it to datasets.mshoxxdb.instrument_map "
        f"(label: instrument, one of {sorted(INSTRUMENT_FAMILY)}) or set unknown_instrument: synth"
    )


# -------------------------------------------------------------------------------------- discovery
class Piece:
    """One piece folder: its mixture and ``{label: stem path}``."""

    def __init__(self, folder: Path, mix: Path, stems: dict[str, Path]) -> None:
        self.folder = folder
        self.mix = mix
        self.stems = stems
        self.name = mix.stem
        self.piece_id = safe_piece_id(self.name)
        self.keys = {normalise(self.name), normalise(strip_version(self.name))}


def find_pieces(raw_dir: Path) -> list[Piece]:
    """Every mshoxxDB piece folder below ``raw_dir`` (mix ``<folder>.ext`` + stems ``<folder>_<label>.ext``)."""
    pieces = []
    for folder in sorted({p.parent for ext in AUDIO_EXT for p in Path(raw_dir).rglob(f"*{ext}")}):
        audio = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXT and p.is_file())
        by_norm = {normalise(p.stem): p for p in audio}
        mix = by_norm.get(normalise(folder.name))
        if mix is None:
            continue
        prefix = mix.stem + "_"
        mix_key = normalise(mix.stem)
        stems = {}
        for p in audio:
            if p == mix:
                continue
            if p.stem.startswith(prefix):
                stems[p.stem[len(prefix) :]] = p
            elif normalise(p.stem).startswith(mix_key) and "_" in p.stem:
                # same piece, other spelling of the name (e.g. Güte vs Guete): label after the last _
                stems[p.stem.rsplit("_", 1)[1]] = p
        if stems:
            pieces.append(Piece(folder, mix, stems))
    ids = [p.piece_id for p in pieces]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise ManifestError(
            f"{raw_dir}: several mshoxxDB piece folders give the piece id(s) {sorted(dup)}"
        )
    return pieces


def _midi_index(raw_dir: Path) -> dict[str, list[Path]]:
    """``{normalised file stem: [MIDI files]}`` of every MIDI file below ``raw_dir``."""
    idx: dict[str, list[Path]] = {}
    for ext in MIDI_EXT:
        for p in Path(raw_dir).rglob(f"*{ext}"):
            idx.setdefault(normalise(p.stem), []).append(p)
    return idx


def find_midi(piece: Piece, label: str, index: Mapping[str, list[Path]]) -> Path | None:
    """The MIDI file of a track, by normalised name (with or without the piece's version tag)."""
    cands: list[Path] = []
    for key in (
        normalise(f"{piece.name}_{label}"),
        normalise(f"{strip_version(piece.name)}_{label}"),
    ):
        cands.extend(index.get(key, []))
    cands = sorted(set(cands))
    if len(cands) > 1:
        inside = [c for c in cands if piece.folder in c.parents]
        if len(inside) == 1:
            return inside[0]
        raise ManifestError(f"{piece.folder}: several MIDI files for track {label!r}: {cands}")
    return cands[0] if cands else None


# ------------------------------------------------------------------------------------------ split
def _find_split_file(raw_dir: Path, cfg: Mapping[str, Any]) -> Path:
    """The split JSON: ``cfg["split_file"]`` (path, or a name below ``raw_dir``), else the one
    JSON file whose name contains ``cfg["split"]`` (default "ms12")."""
    if cfg.get("split_file"):
        p = Path(str(cfg["split_file"]))
        if p.is_file():
            return p
        hits = [q for q in Path(raw_dir).rglob("*.json") if q.name == p.name]
        if len(hits) == 1:
            return hits[0]
        raise ManifestError(
            f"{raw_dir}: split file {cfg['split_file']!r} not found (or found {len(hits)} times)"
        )
    name = str(cfg.get("split", "ms12")).lower()
    hits = sorted(q for q in Path(raw_dir).rglob("*.json") if name in q.name.lower())
    if len(hits) != 1:
        raise ManifestError(
            f"{raw_dir}: expected one JSON split file with {name!r} in its name, found "
            f"{[str(h) for h in hits]}; set datasets.mshoxxdb.split_file"
        )
    return hits[0]


def _entry_value(entry: Any) -> str:
    """The identifier of one split entry (string, number, or an object holding one)."""
    if isinstance(entry, dict):
        low = {str(k).lower(): v for k, v in entry.items()}
        for k in _ID_KEYS:
            if k in low and low[k] not in (None, ""):
                return str(low[k])
        raise ValueError(f"split entry {entry!r} has none of the keys {list(_ID_KEYS)}")
    if isinstance(entry, bool) or entry is None:
        raise ValueError(f"split entry {entry!r} is not a name or id")
    return str(entry)


def _find_split_lists(data: Any) -> dict[str, list[str]] | None:
    """``{split: [entries]}`` from the accepted JSON shapes (see the module docstring), or None."""
    if isinstance(data, dict):
        keyed = {_SPLIT_ALIASES.get(str(k).strip().lower()): v for k, v in data.items()}
        keyed.pop(None, None)
        if keyed and all(isinstance(v, list) for v in keyed.values()):
            return {s: [_entry_value(e) for e in v] for s, v in keyed.items()}
        values = list(data.values())
        if values and all(
            isinstance(v, str) and v.strip().lower() in _SPLIT_ALIASES for v in values
        ):
            out: dict[str, list[str]] = {}
            for k, v in data.items():
                out.setdefault(_SPLIT_ALIASES[v.strip().lower()], []).append(str(k))
            return out
        for v in values:  # nested one level deeper, e.g. {"ms12": {"train": [...], ...}}
            found = _find_split_lists(v)
            if found:
                return found
        return None
    if isinstance(data, list) and data and all(isinstance(e, dict) for e in data):
        out = {}
        for e in data:
            low = {str(k).lower(): v for k, v in e.items()}
            s = _SPLIT_ALIASES.get(str(low.get("split", "")).strip().lower())
            if s is None:
                return None
            out.setdefault(s, []).append(_entry_value(e))
        return out
    return None


def read_metadata_ids(raw_dir: Path, pieces: list[Piece]) -> dict[str, Piece]:
    """``{normalised piece_id: piece}`` from ``metadata.csv`` (v1.2); empty if there is none.

    The column naming the pieces is the one whose values match the most piece folders.
    """
    hits = sorted(Path(raw_dir).rglob("metadata.csv"))
    if not hits:
        return {}
    path = hits[0]
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read metadata.csv ({exc})") from exc
    if not rows or not any("piece_id" == (k or "").strip().lower() for k in rows[0]):
        return {}
    id_col = next(k for k in rows[0] if (k or "").strip().lower() == "piece_id")
    best_col, best = None, 0
    for col in rows[0]:
        if col == id_col:
            continue
        n = sum(_match_piece(str(r.get(col, "")), pieces) is not None for r in rows)
        if n > best:
            best_col, best = col, n
    if best_col is None:
        log.warning("%s: no column of metadata.csv names the piece folders", path)
        return {}
    out: dict[str, Piece] = {}
    for r in rows:
        p = _match_piece(str(r.get(best_col, "")), pieces)
        if p is not None and r.get(id_col) not in (None, ""):
            out[normalise(str(r[id_col]))] = p
    return out


def _match_piece(entry: str, pieces: list[Piece]) -> Piece | None:
    """The piece an entry names (piece, mix or stem name, any folder/extension), longest key wins."""
    base = re.split(r"[\\/]", entry.strip())[-1]
    stem = re.sub(r"\.(flac|wav|mid|midi|json|csv)$", "", base, flags=re.IGNORECASE)
    key = normalise(stem)
    if not key:
        return None
    best, best_len = None, 0
    for p in pieces:
        for k in p.keys:
            if k and (key == k or key.startswith(k)) and len(k) > best_len:
                best, best_len = p, len(k)
    return best


def resolve_split(raw_dir: Path, pieces: list[Piece], cfg: Mapping[str, Any]) -> dict[str, str]:
    """``{piece_id: split}`` from the archive's split file (see the module docstring)."""
    path = _find_split_file(raw_dir, cfg)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: cannot read split JSON ({exc})") from exc
    try:
        lists = _find_split_lists(data)
    except ValueError as exc:
        raise ManifestError(f"{path}: {exc}") from exc
    if not lists or "train" not in lists or "test" not in lists:
        raise ManifestError(
            f"{path}: no train/test lists found (keys: {list(data)[:10] if isinstance(data, dict) else type(data).__name__})"
        )
    by_id = read_metadata_ids(raw_dir, pieces)
    split_of: dict[str, str] = {}
    for split, entries in lists.items():
        for e in entries:
            p = by_id.get(normalise(e)) or _match_piece(e, pieces)
            if p is None:
                raise ManifestError(
                    f"{path}: {split} entry {e!r} matches no piece folder (known: "
                    f"{sorted(q.name for q in pieces)})"
                )
            if split_of.get(p.piece_id, split) != split:
                raise ManifestError(
                    f"{path}: piece {p.name} is in both {split_of[p.piece_id]!r} and {split!r}"
                )
            split_of[p.piece_id] = split
    if "val" not in lists:
        n_val = cfg.get("val_pieces")
        if not n_val:
            raise ManifestError(
                f"{path}: the split has no validation part; set datasets.mshoxxdb.val_pieces to draw "
                "that many validation pieces from train"
            )
        train = sorted(k for k, s in split_of.items() if s == "train")
        rng = random.Random(int(cfg.get("seed", 0)))
        for pid in rng.sample(train, int(n_val)):
            split_of[pid] = "val"
        log.warning("%s: no validation split; drew %d of the train pieces as val", path, int(n_val))
    left_out = sorted(p.name for p in pieces if p.piece_id not in split_of)
    if left_out:
        log.warning(
            "%s does not list %d piece(s); they are left out: %s",
            path.name,
            len(left_out),
            left_out,
        )
    log.info(
        "mshoxxdb: split %s from %s",
        {s: sum(v == s for v in split_of.values()) for s in SPLITS},
        path,
    )
    return split_of


# ------------------------------------------------------------------------------------------ build
def build_mshoxxdb(raw_dir: Path, out_dir: Path, cfg: Mapping[str, Any]) -> Path:
    """Write ``out_dir/manifest.parquet`` (+ ``out_dir/notes/*.csv``) for an unpacked mshoxxDB.

    ``cfg`` keys (optional): ``split`` (default "ms12"), ``split_file``, ``val_pieces``, ``seed``,
    ``instrument_map``, ``unknown_instrument``. Drum tracks are non-pitched (no notes file);
    every pitched track needs its MIDI file. Returns the manifest path; raises
    :class:`ManifestError` naming the file or entry for layout problems.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    pieces = find_pieces(raw_dir)
    if not pieces:
        raise ManifestError(
            f"{raw_dir}: no mshoxxDB piece folders found (a folder with <folder>.flac and "
            "<folder>_<label>.flac files)"
        )
    log.info("mshoxxdb: found %d piece folders below %s", len(pieces), raw_dir)
    split_of = fill_empty_splits(
        resolve_split(raw_dir, pieces, cfg),
        str(raw_dir),
        bool(cfg.get("fill_empty_splits", False)),
        int(cfg.get("seed", 0)),
        log,
    )
    midi_idx = _midi_index(raw_dir)
    notes_dir = out_dir / "notes"
    rows = []
    for piece in pieces:
        if piece.piece_id not in split_of:
            continue
        for label, stem in sorted(piece.stems.items()):
            instrument = label_instrument(label, stem, cfg)
            pitched = family_of(instrument) != "percussion"
            track_id = f"{piece.piece_id}__{safe_piece_id(label)}"
            duration = audio_duration(stem)
            notes_path = ""
            if pitched:
                mid = find_midi(piece, label, midi_idx)
                if mid is None:
                    raise ManifestError(
                        f"{stem}: no MIDI file for pitched track {label!r} (looked for "
                        f"{piece.name}_{label}.mid below {raw_dir})"
                    )
                notes = clip_notes(midi_notes(mid), duration)
                npath = notes_dir / f"{track_id}.csv"
                write_notes(npath, notes)
                notes_path = relative_path(out_dir, npath)
            rows.append(
                {
                    "dataset": str(cfg.get("name") or DATASET),
                    "piece_id": piece.piece_id,
                    "split": split_of[piece.piece_id],
                    "track_id": track_id,
                    "instrument": instrument,
                    "family": family_of(instrument),
                    "pitched": pitched,
                    "stem_path": relative_path(out_dir, stem),
                    "mix_path": relative_path(out_dir, piece.mix),
                    "notes_path": notes_path,
                    "duration_s": duration,
                }
            )
    used = [f for p in pieces if p.piece_id in split_of for f in (p.mix, *p.stems.values())]
    reasons = {p.folder: "not in the split file" for p in pieces if p.piece_id not in split_of}
    report_unused_audio(raw_dir, used, log, "mshoxxdb", reasons)
    path = out_dir / "manifest.parquet"
    write_manifest(pd.DataFrame(rows), path)
    log.info("mshoxxdb: %d pieces, %d tracks -> %s", len(split_of), len(rows), path)
    return path


def labels_of(pieces: Iterable[Piece]) -> list[str]:
    """Sorted distinct stem labels of some pieces (handy to check ``LABEL_MAP`` against an archive)."""
    return sorted({lab for p in pieces for lab in p.stems})
