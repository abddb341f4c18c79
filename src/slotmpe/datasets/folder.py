"""The ``folder`` adapter: a user's own multitrack data as a slotmpe dataset.

Expected layout (one subfolder per piece)::

    my_dataset/
      metadata.csv          optional: track,instrument[,family][,pitched][,piece]
      split.csv             optional: piece,split   (split in train/val/test)
      song_a/
        mix.wav             optional; summed from the stems when absent
        stems/violin_1.wav  one audio file per source (any format of ``audio.readable_audio_extensions``;
                            any sample rate; mono or stereo)
        violin_1.csv        notes of that stem: onset_s,offset_s,midi   (or violin_1.mid / .midi)
        metadata.csv        optional, same columns, overrides the top-level one for this piece
      song_b/ ...

Rules (every violation raises :class:`~slotmpe.datasets.manifest.ManifestError` or
:class:`~slotmpe.audio.AudioError` naming the file and the problem):

* Audio files are found by extension: :func:`slotmpe.audio.readable_audio_extensions`, derived
  from what soundfile/libsndfile reads on this install (WAV, FLAC, OGG/Opus, MP3, AIFF, ...).
  Every file in ``stems/`` is accounted for: an audio format this install cannot read
  (``.m4a``, ``.wma``, ...) or two stems with the same name (``flute.wav`` and ``flute.flac``)
  are errors, any other unused file (e.g. ``readme.txt``, a notes file without a stem) is named in
  a warning; hidden files (``.DS_Store``) are skipped. Notes files in the piece folder or
  ``notes/`` that match no stem are named in a warning too.
* Notes of stem ``<track>`` are looked up as ``<piece>/<track>.csv``, ``.mid``, ``.midi``, then the
  same names in ``<piece>/stems/`` and ``<piece>/notes/``. CSV files are used in place; MIDI files
  are read with :func:`slotmpe.midi.read_midi_notes` (tempo map merged from every track, note-offs
  paired first-in first-out, unclosed notes ended at the end of the file; every non-drum note of
  the file) and written to ``out_dir/notes/<piece>/<track>.csv``.
* Instruments (open vocabulary): the ``instrument`` column of ``metadata.csv``, else the track
  name without a trailing number (``Violin 2`` -> ``Violin``). A name of the built-in vocabulary
  (``constants.INSTRUMENT_FAMILY``, matched case-insensitively, through :data:`INSTRUMENT_ALIASES`
  and the URMP codes: ``vn`` -> ``violin``) is stored canonically with its family; a ``family``
  column that names another family is an error. Any other name (``saw_lead``, ``Rhodes``) keeps
  its spelling and takes the ``family`` given (brass, keyboards, strings, woodwinds, or
  percussion, alias drums), or ``constants.UNKNOWN_FAMILY`` without one: such a stem is in the
  mixture and source targets, and family-level experiments (1b, 1c) refuse the dataset with a
  message saying so. ``pitched`` defaults to False for the percussion family and True otherwise;
  pitched stems need a notes file, non-pitched stems have none (a notes file beside them is
  ignored).
* Ids: piece and track ids keep the letters and digits of any script (``ヴァイオリン``), other
  characters become ``_``; names whose ids would collide get a hash suffix
  (:mod:`slotmpe.datasets.ids`). Folder and track names are matched NFC-normalised.
* Audio is used in place (the manifest refers to the original files); the feature step reads it
  with ``slotmpe.audio.load_audio``, which down-mixes to mono and resamples to 16 kHz.
  Only a missing mix is written: the sum of the mono stems (resampled to 16 kHz if their rates
  differ), as a float WAV ``out_dir/audio/<piece>/mix.wav``. Stems of one piece whose lengths
  differ by at most ``DURATION_TOL_S`` are zero-padded for that sum (with a warning); larger
  differences are errors.
* Subfolders starting with ``.`` or ``_`` and cache folders (a ``CACHEDIR.TAG`` inside, or the
  name ``slotmpe_eval``: :mod:`slotmpe.workdir`) are not pieces; a cache folder is named in a
  warning.
* Splits: ``split.csv`` must name every piece; without it a seeded split by piece is drawn
  (``val_fraction``/``test_fraction``, at least one piece each, so at least three pieces).
* A piece needs at least one pitched stem; notes may not end after the audio, nor have zero or
  negative durations or pitches outside 0..127 (checked by ``validate_manifest``).

Config keys (``cfg``): ``name`` (dataset name, default: the folder name), ``seed`` (0),
``val_fraction`` (0.15), ``test_fraction`` (0.15), ``check_audio`` (True: decode every file to
catch unreadable, empty or non-finite audio).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from slotmpe.audio import (
    audio_files,
    load_audio,
    readable_audio_extensions,
    resample,
    unreadable_audio_extensions,
)
from slotmpe.constants import (
    FAMILIES,
    INSTRUMENT_FAMILY,
    NON_PITCHED_FAMILY,
    SAMPLE_RATE,
    SPLITS,
    UNKNOWN_FAMILY,
    URMP_CODES,
    canonical_family,
)
from slotmpe.datasets.ids import safe_id, unique_ids
from slotmpe.datasets.manifest import (
    DURATION_TOL_S,
    ManifestError,
    audio_duration,
    read_notes,
    relative_path,
    write_manifest,
    write_notes,
)
from slotmpe.datasets.splits import PieceInfo, assign_splits
from slotmpe.midi import MidiError, read_midi_notes
from slotmpe.utils import atomic_path, get_logger
from slotmpe.workdir import DEFAULT_ROOT, is_cache_dir

log = get_logger(__name__)

NOTES_EXTENSIONS = (".csv", ".mid", ".midi")
TABLE_NAMES = frozenset({"metadata.csv", "split.csv"})
"""CSV files of the layout that are not notes files."""
INSTRUMENT_ALIASES: dict[str, str] = {
    **URMP_CODES,
    "drum": "drums",
    "kit": "drums",
    "drum_kit": "drums",
    "percussion": "drums",
    "voice": "vocals",
    "vocal": "vocals",
    "vox": "vocals",
    "singer": "vocals",
    "sax": "saxophone",
    "alto_sax": "saxophone",
    "tenor_sax": "saxophone",
    "contrabass": "double_bass",
    "doublebass": "double_bass",
    "bass_guitar": "electric_bass",
    "french_horn": "horn",
    "keys": "piano",
    "synthesizer": "synth",
    "violoncello": "cello",
}
"""Extra names accepted for canonical instruments (besides the canonical names themselves)."""

GENERIC_KEYS = frozenset({"type", "path", "url", "md5", "sha256", "subset", "raw_dir"})
"""Keys of a dataset entry that other dataset types use; ignored here."""
DEFAULTS: dict[str, Any] = {
    "name": None,
    "seed": 0,
    "val_fraction": 0.15,
    "test_fraction": 0.15,
    "check_audio": True,
}
ACCEPTED_FAMILIES = (*FAMILIES, NON_PITCHED_FAMILY)
"""Families a metadata.csv may name (``drums`` is accepted for ``percussion``)."""


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def canonical_instrument(name: str) -> str | None:
    """Built-in instrument named by a track or metadata name, or None if it is not one.

    Lower-cases, turns spaces/hyphens into ``_``, tries the name, then without trailing digits
    (``violin_2`` -> ``violin``), through :data:`INSTRUMENT_ALIASES`.
    """
    n = re.sub(r"[\s\-]+", "_", name.strip().lower())
    for cand in (n, re.sub(r"[_\d]+$", "", n)):
        if cand in INSTRUMENT_FAMILY:
            return cand
        if cand in INSTRUMENT_ALIASES:
            return INSTRUMENT_ALIASES[cand]
    return None


def resolve_instrument(
    track: str, meta: dict[str, str], where: str
) -> tuple[str, str, bool]:
    """``(instrument, family, pitched)`` of a stem from its name and metadata row (module doc).

    ``meta`` holds the metadata cells of the track (possibly empty); ``where`` names the source
    for error messages. Raises :class:`ManifestError` for an unknown family name, a family that
    contradicts a built-in instrument, a bad ``pitched`` cell, or a pitched percussion stem.
    """
    given = meta.get("instrument", "")
    name = _nfc(given or track).strip()
    fam_cell = meta.get("family", "")
    family_given = canonical_family(fam_cell) if fam_cell else None
    if fam_cell and family_given is None:
        raise ManifestError(
            f"{where}: family {fam_cell!r} is not one of {', '.join(ACCEPTED_FAMILIES)} "
            f"(or drums); leave it empty if none fits"
        )
    canon = canonical_instrument(name)
    if canon is not None:
        instrument, family = canon, INSTRUMENT_FAMILY[canon]
        if family_given is not None and family_given != family:
            raise ManifestError(
                f"{where}: family {fam_cell!r} contradicts instrument {instrument!r} "
                f"(family {family!r})"
            )
    else:
        instrument = name if given else (re.sub(r"[\s_-]*\d+$", "", name) or name)
        family = family_given or UNKNOWN_FAMILY
    pitched = family != NON_PITCHED_FAMILY
    if meta.get("pitched"):
        pitched = _parse_bool(meta["pitched"], where)
        if pitched and family == NON_PITCHED_FAMILY:
            raise ManifestError(
                f"{where}: instrument {instrument!r} of family {family!r} cannot be pitched; "
                "give it the family the model should learn, or none"
            )
    return instrument, family, pitched


def _read_table(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read a small CSV with string cells; ManifestError if unreadable or a column is missing."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise ManifestError(f"{path}: cannot parse CSV ({exc})") from exc
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}; got {list(df.columns)}")
    return df.apply(lambda col: col.str.strip())


def _metadata(path: Path, piece: str | None) -> dict[str, dict[str, str]]:
    """Rows of a metadata.csv keyed by NFC track name (rows with a ``piece`` apply to that piece)."""
    if not path.is_file():
        return {}
    df = _read_table(path, ("track", "instrument"))
    out: dict[str, dict[str, str]] = {}
    for _, r in df.iterrows():
        if "piece" in df.columns and r["piece"] and piece is not None:
            if _nfc(r["piece"]) != _nfc(piece):
                continue
        out[_nfc(r["track"])] = {k: str(v) for k, v in r.items()}
    return out


def _parse_bool(value: str, where: str) -> bool:
    """``pitched`` cell of a metadata file as bool."""
    v = value.strip().lower()
    if v in ("true", "1", "yes", "y"):
        return True
    if v in ("false", "0", "no", "n"):
        return False
    raise ManifestError(f"{where}: 'pitched' must be true/false, got {value!r}")


def midi_to_notes(path: Path) -> pd.DataFrame:
    """Notes ``(n, 3)`` (onset_s, offset_s, midi) of all non-drum notes of a MIDI file.

    Read with :func:`slotmpe.midi.read_midi_notes` (its timing and pairing rules); a file with only
    drum notes raises :class:`ManifestError`.
    """
    try:
        notes = read_midi_notes(path)
    except MidiError as exc:
        raise ManifestError(str(exc)) from exc
    pitched = notes[~notes["is_drum"]]
    if len(pitched) == 0 and len(notes):
        raise ManifestError(f"{path}: MIDI file holds only drum notes, no pitched notes")
    return pitched[["onset_s", "offset_s", "midi"]].reset_index(drop=True)


def _find_notes(piece_dir: Path, track: str) -> Path | None:
    """First existing notes file of ``track`` (see module doc for the search order)."""
    for d in (piece_dir, piece_dir / "stems", piece_dir / "notes"):
        for ext in NOTES_EXTENSIONS:
            p = d / f"{track}{ext}"
            if p.is_file():
                return p
    return None


def _unreadable_error(path: Path, what: str) -> ManifestError:
    return ManifestError(
        f"{path}: {what} in a format soundfile (libsndfile {sf.__libsndfile_version__}) cannot "
        f"read on this install; convert it to one of {', '.join(readable_audio_extensions())}"
    )


def _stems(piece_dir: Path) -> list[Path]:
    """Stem audio files of a piece; every other file of ``stems/`` is an error or a warning."""
    folder = piece_dir / "stems"
    stems = audio_files(folder)
    if not folder.is_dir():
        return stems
    by_name: dict[str, Path] = {}
    for p in stems:
        key = _nfc(p.stem)
        if key in by_name:
            raise ManifestError(
                f"{p}: two stems named {p.stem!r} ({by_name[key].name} and {p.name}); keep one"
            )
        by_name[key] = p
    unused = []
    bad = unreadable_audio_extensions()
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p in stems:
            continue
        if p.is_file() and p.suffix.lower() in bad:
            raise _unreadable_error(p, "stem audio (its notes would be missing from every target)")
        if p.is_file() and p.suffix.lower() in NOTES_EXTENSIONS and _nfc(p.stem) in by_name:
            continue  # notes of a stem
        unused.append(p.name + ("/" if p.is_dir() else ""))
    if unused:
        log.warning(
            "%s: %d file(s) not used (no readable stem audio of that name): %s",
            folder, len(unused), ", ".join(unused),
        )
    return stems


def _warn_orphan_notes(piece_dir: Path, stems: list[Path]) -> None:
    """Name the notes files of the piece folder and ``notes/`` that match no stem."""
    names = {_nfc(p.stem) for p in stems}
    orphans = [
        p
        for d in (piece_dir, piece_dir / "notes")
        if d.is_dir()
        for p in sorted(d.iterdir())
        if p.is_file()
        and p.suffix.lower() in NOTES_EXTENSIONS
        and p.name.lower() not in TABLE_NAMES
        and _nfc(p.stem) not in names
    ]
    if orphans:
        log.warning(
            "%s: %d notes file(s) match no stem in stems/ and are not used: %s",
            piece_dir, len(orphans), ", ".join(str(p.relative_to(piece_dir)) for p in orphans),
        )


def _mix_file(piece_dir: Path) -> Path | None:
    """The piece's own ``mix.<ext>`` (None if absent); two mixes or an unreadable one are errors."""
    mixes = [p for p in audio_files(piece_dir) if p.stem.lower() == "mix"]
    if len(mixes) > 1:
        raise ManifestError(
            f"{piece_dir}: several mix files ({', '.join(p.name for p in mixes)}); keep one"
        )
    bad = unreadable_audio_extensions()
    for p in piece_dir.iterdir():
        if p.is_file() and p.stem.lower() == "mix" and p.suffix.lower() in bad:
            raise _unreadable_error(p, "mix audio")
    return mixes[0] if mixes else None


def _sum_stems(stems: list[Path], out_path: Path) -> None:
    """Write the mono sum of ``stems`` as a float WAV (16 kHz if their rates differ)."""
    loaded = [load_audio(p, sr=None, allow_silent=True) for p in stems]
    rates = {sr for _, sr in loaded}
    sr_out = rates.pop() if len(rates) == 1 else SAMPLE_RATE
    arrays = [resample(a, sr, sr_out) for a, sr in loaded]
    n = max(len(a) for a in arrays)
    short = [(p, len(a)) for p, a in zip(stems, arrays, strict=True) if len(a) != n]
    if short:
        log.warning(
            "%s: stems of slightly different lengths zero-padded to %d samples for the mix: %s",
            out_path.parent,
            n,
            ", ".join(f"{p.name} ({k})" for p, k in short),
        )
    mix = np.zeros(n, dtype=np.float32)
    for a in arrays:
        mix[: len(a)] += a
    with atomic_path(out_path) as tmp:
        sf.write(str(tmp), mix, sr_out, subtype="FLOAT", format="WAV")


def _piece_rows(
    piece_dir: Path, piece_id: str, dataset: str, out_dir: Path, root_meta: Path, check: bool
) -> list[dict[str, Any]]:
    """Manifest rows (split unset) of one piece folder; writes converted notes / summed mix."""
    stems = _stems(piece_dir)
    if not stems:
        raise ManifestError(
            f"{piece_dir / 'stems'}: no stem audio files "
            f"({', '.join(readable_audio_extensions())})"
        )
    _warn_orphan_notes(piece_dir, stems)
    piece_meta = _metadata(piece_dir / "metadata.csv", None)
    meta = {**_metadata(root_meta, piece_dir.name), **piece_meta}
    durations = {}
    for p in stems:
        if check:
            load_audio(p, sr=None, allow_silent=True)  # AudioError for unreadable/empty/NaN audio
        durations[p] = audio_duration(p)
    longest = max(durations.values())
    for p, d in durations.items():
        if longest - d > DURATION_TOL_S:
            listing = ", ".join(f"{q.name} {v:.3f} s" for q, v in durations.items())
            raise ManifestError(f"{p}: stems of different lengths in {piece_dir} ({listing})")
    mix_path = _mix_file(piece_dir)
    if mix_path is not None:
        if check:
            load_audio(mix_path, sr=None, allow_silent=True)
    else:
        mix_path = out_dir / "audio" / piece_id / "mix.wav"
        _sum_stems(stems, mix_path)
    track_ids = unique_ids(p.stem for p in stems)
    rows = []
    for p in stems:
        track = p.stem
        m = meta.get(_nfc(track), {})
        where = str(piece_dir / "metadata.csv" if _nfc(track) in piece_meta else root_meta)
        where = f"{where} (track {track!r})" if m else f"{p} (no metadata.csv entry)"
        instrument, family, pitched = resolve_instrument(track, m, where)
        notes_rel = ""
        if pitched:
            npath = _find_notes(piece_dir, track)
            if npath is None:
                raise ManifestError(
                    f"{p}: pitched stem has no notes file ({track}.csv / {track}.mid in {piece_dir}, "
                    f"stems/ or notes/)"
                )
            if npath.suffix.lower() == ".csv":
                read_notes(npath)  # fail early with the CSV's own error
                notes_rel = relative_path(out_dir, npath)
            else:
                converted = out_dir / "notes" / piece_id / f"{track_ids[track]}.csv"
                write_notes(converted, midi_to_notes(npath))
                notes_rel = relative_path(out_dir, converted)
        rows.append(
            {
                "dataset": dataset,
                "piece_id": piece_id,
                "split": "",
                "track_id": f"{piece_id}--{track_ids[track]}",
                "instrument": instrument,
                "family": family,
                "pitched": pitched,
                "stem_path": relative_path(out_dir, p),
                "mix_path": relative_path(out_dir, mix_path),
                "notes_path": notes_rel,
                "duration_s": durations[p],
            }
        )
    if not any(r["pitched"] for r in rows):
        raise ManifestError(f"{piece_dir}: piece has no pitched stem")
    return rows


def build_folder(src: Path, out_dir: Path, cfg: dict[str, Any]) -> Path:
    """Build a manifest for the multitrack folder ``src`` (layout in the module doc).

    Writes ``out_dir/manifest.parquet`` (plus converted MIDI notes and summed mixes under
    ``out_dir``) and returns its path. Raises ``ManifestError``/``AudioError`` naming the offending
    file for bad input.
    """
    src, out_dir = Path(src).absolute(), Path(out_dir).absolute()
    cfg = {k: v for k, v in cfg.items() if k not in GENERIC_KEYS}
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown folder-dataset config key(s) {unknown}; known: {sorted(DEFAULTS)}"
        )
    cfg = {**DEFAULTS, **cfg}
    if not src.is_dir():
        raise ManifestError(f"{src}: dataset folder does not exist")
    dataset = str(cfg["name"] or safe_id(src.name))
    piece_dirs = sorted(
        p for p in src.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )
    for d in [d for d in piece_dirs if is_cache_dir(d)]:
        log.warning("folder dataset %s: skipping %s, a cache folder (CACHEDIR.TAG or %s), not a "
                    "piece", src, d.name, DEFAULT_ROOT)
        piece_dirs.remove(d)
    if not piece_dirs:
        raise ManifestError(f"{src}: no piece subfolders")
    piece_ids = unique_ids(d.name for d in piece_dirs)
    ids = {piece_ids[d.name]: d for d in piece_dirs}
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for pid, d in ids.items():
        rows += _piece_rows(
            d, pid, dataset, out_dir, src / "metadata.csv", bool(cfg["check_audio"])
        )
    no_family = sorted({r["instrument"] for r in rows if r["family"] == UNKNOWN_FAMILY})
    if no_family:
        log.warning(
            "folder dataset %s: instrument(s) %s are outside the built-in vocabulary and have no "
            "family: fine for standard and stem experiments, but family-level experiments (1b, 1c) "
            "will refuse this dataset; add a family column (%s) to metadata.csv to allow them",
            src, ", ".join(map(repr, no_family)), ", ".join(ACCEPTED_FAMILIES),
        )
    split_of = _splits(src, ids, rows, cfg)
    df = pd.DataFrame(rows)
    df["split"] = df["piece_id"].map(split_of)
    manifest = out_dir / "manifest.parquet"
    try:
        write_manifest(df, manifest)
    except ManifestError as exc:
        raise ManifestError(f"folder dataset {src}: {exc}") from exc
    log.info("folder %s: %d pieces, %d tracks -> %s", src, len(ids), len(df), manifest)
    return manifest


def _splits(
    src: Path, ids: dict[str, Path], rows: list[dict[str, Any]], cfg: dict[str, Any]
) -> dict[str, str]:
    """Split per piece id from ``split.csv`` (pieces named by folder) or a seeded split."""
    path = src / "split.csv"
    if path.is_file():
        df = _read_table(path, ("piece", "split"))
        by_folder = {_nfc(d.name): pid for pid, d in ids.items()}
        out: dict[str, str] = {}
        for i, r in df.iterrows():
            if r["split"] not in SPLITS:
                raise ManifestError(
                    f"{path}: row {i + 2}: split {r['split']!r} is not one of {list(SPLITS)}"
                )
            pid = by_folder.get(_nfc(r["piece"]), r["piece"] if r["piece"] in ids else None)
            if pid is None:
                raise ManifestError(f"{path}: row {i + 2}: no piece folder named {r['piece']!r}")
            out[pid] = r["split"]
        missing = sorted(ids[p].name for p in ids if p not in out)
        if missing:
            raise ManifestError(f"{path}: no split given for piece(s) {missing}")
        return out
    if len(ids) < 3:
        raise ManifestError(
            f"{src}: {len(ids)} piece(s) are too few for an automatic train/val/test split; "
            f"add a split.csv (piece,split)"
        )
    n_pitched = {pid: 0 for pid in ids}
    for r in rows:
        n_pitched[r["piece_id"]] += int(r["pitched"])
    infos = [PieceInfo(pid, pid, n_pitched[pid]) for pid in ids]
    return assign_splits(
        infos,
        int(cfg["seed"]),
        val_fraction=float(cfg["val_fraction"]),
        test_fraction=float(cfg["test_fraction"]),
        min_pieces_val=1,
        min_pieces_test=1,
        min_sources=1,
    )
