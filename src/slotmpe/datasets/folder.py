"""The ``folder`` adapter: a user's own multitrack data as a slotmpe dataset.

Expected layout (one subfolder per piece)::

    my_dataset/
      metadata.csv          optional: track,instrument[,family][,pitched][,piece]
      split.csv             optional: piece,split   (split in train/val/test)
      song_a/
        mix.wav             optional; summed from the stems when absent
        stems/violin_1.wav  one audio file per source (wav/flac/ogg/aiff; any sample rate; mono or stereo)
        violin_1.csv        notes of that stem: onset_s,offset_s,midi   (or violin_1.mid / .midi)
        metadata.csv        optional, same columns, overrides the top-level one for this piece
      song_b/ ...

Rules (every violation raises :class:`~slotmpe.datasets.manifest.ManifestError` or
:class:`~slotmpe.audio.AudioError` naming the file and the problem):

* Notes of stem ``<track>`` are looked up as ``<piece>/<track>.csv``, ``.mid``, ``.midi``, then the
  same names in ``<piece>/stems/`` and ``<piece>/notes/``. CSV files are used in place; MIDI files
  are converted with pretty_midi (every non-drum instrument of the file; zero-length MIDI notes are
  dropped with a warning) to ``out_dir/notes/<piece>/<track>.csv``.
* Instruments: the ``instrument`` column of ``metadata.csv``; without one, the track name,
  lower-cased with trailing numbers removed (``Violin 2`` -> ``violin``), through
  :data:`INSTRUMENT_ALIASES` and the URMP codes (``vn`` -> ``violin``). A name that is not a key of
  ``constants.INSTRUMENT_FAMILY`` is an error. ``family`` (if given) must agree with the instrument.
  ``pitched`` defaults to False for ``drums`` and True otherwise; pitched stems need a notes file,
  non-pitched stems have none (a notes file beside them is ignored).
* Audio is used in place (the manifest holds absolute paths to the original files); the feature
  step reads it with ``slotmpe.audio.load_audio``, which down-mixes to mono and resamples to 16 kHz.
  Only a missing mix is written: the sum of the mono stems (resampled to 16 kHz if their rates
  differ), as a float WAV ``out_dir/audio/<piece>/mix.wav``. Stems of one piece whose lengths
  differ by at most ``DURATION_TOL_S`` are zero-padded for that sum (with a warning); larger
  differences are errors.
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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from slotmpe.audio import load_audio, resample
from slotmpe.constants import (
    INSTRUMENT_FAMILY,
    NON_PITCHED_FAMILY,
    SAMPLE_RATE,
    SPLITS,
    URMP_CODES,
)
from slotmpe.datasets.manifest import (
    DURATION_TOL_S,
    ManifestError,
    audio_duration,
    read_midi,
    read_notes,
    relative_path,
    write_manifest,
    write_notes,
)
from slotmpe.datasets.splits import PieceInfo, assign_splits
from slotmpe.utils import atomic_path, get_logger

log = get_logger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")
NOTES_EXTENSIONS = (".csv", ".mid", ".midi")
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


def canonical_instrument(name: str) -> str | None:
    """Canonical instrument of a track or metadata name, or None if unknown.

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


def _safe_id(text: str) -> str:
    """File-name-safe id (``[A-Za-z0-9._-]``, starting with a letter or digit)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.-") or "x"


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
    """Rows of a metadata.csv keyed by track (rows with a ``piece`` column apply to that piece only)."""
    if not path.is_file():
        return {}
    df = _read_table(path, ("track", "instrument"))
    out: dict[str, dict[str, str]] = {}
    for _, r in df.iterrows():
        if "piece" in df.columns and r["piece"] and piece is not None and r["piece"] != piece:
            continue
        out[r["track"]] = {k: str(v) for k, v in r.items()}
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
    """Notes ``(n, 3)`` (onset_s, offset_s, midi) of all non-drum instruments of a MIDI file."""
    pm = read_midi(path)
    rows = [
        (n.start, n.end, n.pitch) for inst in pm.instruments if not inst.is_drum for n in inst.notes
    ]
    df = pd.DataFrame(rows, columns=["onset_s", "offset_s", "midi"])
    bad = df["offset_s"] <= df["onset_s"]
    if bad.any():
        log.warning("%s: dropped %d zero-length MIDI note(s)", path, int(bad.sum()))
        df = df[~bad]
    if len(df) == 0 and any(inst.is_drum and inst.notes for inst in pm.instruments):
        raise ManifestError(f"{path}: MIDI file holds only drum notes, no pitched notes")
    return df.reset_index(drop=True)


def _find_notes(piece_dir: Path, track: str) -> Path | None:
    """First existing notes file of ``track`` (see module doc for the search order)."""
    for d in (piece_dir, piece_dir / "stems", piece_dir / "notes"):
        for ext in NOTES_EXTENSIONS:
            p = d / f"{track}{ext}"
            if p.is_file():
                return p
    return None


def _audio_files(folder: Path) -> list[Path]:
    """Audio files of a folder (by extension), sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
    )


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
    stems = _audio_files(piece_dir / "stems")
    if not stems:
        raise ManifestError(
            f"{piece_dir / 'stems'}: no stem audio files ({', '.join(AUDIO_EXTENSIONS)})"
        )
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
    mixes = [p for p in _audio_files(piece_dir) if p.stem.lower() == "mix"]
    if mixes:
        mix_path = mixes[0]
        if check:
            load_audio(mix_path, sr=None, allow_silent=True)
    else:
        mix_path = out_dir / "audio" / piece_id / "mix.wav"
        _sum_stems(stems, mix_path)
    rows = []
    for p in stems:
        track = p.stem
        m = meta.get(track, {})
        where = str(piece_dir / "metadata.csv" if track in piece_meta else root_meta)
        name = m.get("instrument") or track
        instrument = canonical_instrument(name)
        if instrument is None:
            src = (
                f"{where} (track {track!r})"
                if m.get("instrument")
                else f"{p} (no metadata.csv entry)"
            )
            raise ManifestError(
                f"{src}: unknown instrument {name!r}; use one of {', '.join(sorted(INSTRUMENT_FAMILY))} "
                f"or an alias ({', '.join(sorted(INSTRUMENT_ALIASES))}) in metadata.csv"
            )
        family = INSTRUMENT_FAMILY[instrument]
        if m.get("family") and m["family"].lower() != family:
            raise ManifestError(
                f"{where} (track {track!r}): family {m['family']!r} contradicts instrument "
                f"{instrument!r} (family {family!r})"
            )
        pitched = family != NON_PITCHED_FAMILY
        if m.get("pitched"):
            pitched = _parse_bool(m["pitched"], f"{where} (track {track!r})")
        notes_rel = ""
        if pitched:
            if family == NON_PITCHED_FAMILY:
                raise ManifestError(
                    f"{where} (track {track!r}): instrument {instrument!r} cannot be pitched"
                )
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
                converted = out_dir / "notes" / piece_id / f"{_safe_id(track)}.csv"
                write_notes(converted, midi_to_notes(npath))
                notes_rel = relative_path(out_dir, converted)
        rows.append(
            {
                "dataset": dataset,
                "piece_id": piece_id,
                "split": "",
                "track_id": f"{piece_id}--{_safe_id(track)}",
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
    dataset = str(cfg["name"] or _safe_id(src.name))
    piece_dirs = sorted(
        p for p in src.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )
    if not piece_dirs:
        raise ManifestError(f"{src}: no piece subfolders")
    ids: dict[str, Path] = {}
    for d in piece_dirs:
        pid = _safe_id(d.name)
        if pid in ids:
            raise ManifestError(
                f"{d}: piece name clashes with {ids[pid]} once made file-name safe ({pid!r})"
            )
        ids[pid] = d
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for pid, d in ids.items():
        rows += _piece_rows(
            d, pid, dataset, out_dir, src / "metadata.csv", bool(cfg["check_audio"])
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
        by_folder = {d.name: pid for pid, d in ids.items()}
        out: dict[str, str] = {}
        for i, r in df.iterrows():
            if r["split"] not in SPLITS:
                raise ManifestError(
                    f"{path}: row {i + 2}: split {r['split']!r} is not one of {list(SPLITS)}"
                )
            pid = by_folder.get(r["piece"], r["piece"] if r["piece"] in ids else None)
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
