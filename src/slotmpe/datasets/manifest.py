"""The dataset manifest: one table, one row per track, shared by every dataset adapter.

Schema (``MANIFEST_COLUMNS``), one row per track:

==============  ======  ======================================================================
column          dtype   meaning
==============  ======  ======================================================================
dataset         str     dataset name (same for all rows)
piece_id        str     unique within the dataset, safe as a file name (:func:`.ids.is_safe_id`)
split           str     "train" | "val" | "test" (one split per piece)
track_id        str     unique within the dataset
instrument      str     a key of ``constants.INSTRUMENT_FAMILY``, or (``folder`` data) any name
family          str     ``constants.family_of(instrument)`` for built-in instruments, else one of
                        ``constants.MANIFEST_FAMILIES`` ("percussion" for drums, "unknown")
pitched         bool    False for non-pitched tracks (drums): never in pitch targets
stem_path       str     isolated stem audio, "" where the dataset has no stems (MusicNet)
mix_path        str     mixture audio, the same for every row of a piece
notes_path      str     notes CSV (``onset_s,offset_s,midi``), "" for non-pitched tracks
duration_s      float   duration of the stem (or of the mix where there is no stem), seconds
==============  ======  ======================================================================

Paths are relative to the manifest's folder, with POSIX separators (``../raw/urmp/...`` for audio
outside it), so a ``data/`` tree can be moved as a whole: writers make them with
:func:`relative_path`, every reader resolves them with :func:`resolve_path`, and
:func:`validate_manifest` refuses absolute paths (on write and on read). Notes files are CSV with the header ``onset_s,offset_s,midi`` (float, float,
int), one row per note, read with :func:`read_notes`.

:func:`validate_manifest` checks the schema, the values, the per-piece invariants (one split and one
mix per piece, at least one pitched track) and, with ``check_files``, that every file exists, that
audio durations agree with ``duration_s`` and with the piece's mix (within ``DURATION_TOL_S``), and
that no note ends after its audio (beyond ``NOTES_END_TOL_S``). Every problem raises
:class:`ManifestError` naming the manifest row / file and the problem.

It also holds the small helpers the adapters share: :func:`midi_notes`, :func:`clip_notes`,
:func:`check_split_coverage` and :func:`report_unused_audio`.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from slotmpe.constants import NON_PITCHED_FAMILY, SPLITS, family_problem
from slotmpe.datasets.ids import is_safe_id
from slotmpe.utils import atomic_path

MANIFEST_COLUMNS: tuple[str, ...] = (
    "dataset",
    "piece_id",
    "split",
    "track_id",
    "instrument",
    "family",
    "pitched",
    "stem_path",
    "mix_path",
    "notes_path",
    "duration_s",
)
NOTES_COLUMNS: tuple[str, ...] = ("onset_s", "offset_s", "midi")

_STR_COLUMNS = ("dataset", "piece_id", "split", "track_id", "instrument", "family")
_PATH_COLUMNS = ("stem_path", "mix_path", "notes_path")

DURATION_TOL_S = 0.1
"""Largest allowed disagreement (s) between ``duration_s``, the stem files and the mix of a piece."""
NOTES_END_TOL_S = 0.1
"""A note may end at most this long (s) after the end of its audio; beyond it is an error."""


class ManifestError(ValueError):
    """A manifest or notes file is malformed or inconsistent; the message names the file and problem."""


VIDEO_SUFFIXES: frozenset[str] = frozenset({".mp4", ".webm"})
"""Video containers (URMP ships ``Vid_*.mp4``): not counted as audio by :func:`report_unused_audio`."""


def _audio_suffixes() -> frozenset[str]:
    """Extensions :func:`report_unused_audio` counts as audio: every audio format slotmpe knows
    (:mod:`slotmpe.audio`, readable on this install or not) except video containers."""
    from slotmpe.audio import readable_audio_extensions, unreadable_audio_extensions

    known = set(readable_audio_extensions()) | set(unreadable_audio_extensions())
    return frozenset(known - VIDEO_SUFFIXES)


def path_problem(p: str) -> str | None:
    """Why ``p`` is not a valid manifest path (``None`` if it is): it must not be absolute."""
    if p.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", p):
        return "is absolute; manifest paths are relative to the manifest's folder"
    return None


def resolve_path(root: Path, p: str) -> Path:
    """The file a manifest path ``p`` names: ``root / p`` (``root``: the manifest's folder).

    The one way every reader resolves manifest paths. Raises :class:`ManifestError` for an
    absolute path (manifests written before paths were made relative: rebuild them).
    """
    why = path_problem(str(p))
    if why:
        raise ManifestError(f"manifest path {p!r} {why} (rebuild the manifest)")
    return Path(root) / p


def relative_path(root: Path, path: Path) -> str:
    """Manifest form of ``path``: the POSIX path relative to ``root``, ``..`` where needed.

    Both are resolved first (symlinks followed), so ``root / result`` names the same file.
    """
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(root))
    return Path(rel).as_posix()


def read_notes(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a notes CSV (header ``onset_s,offset_s,midi``) into a frame of shape ``(n_notes, 3)``.

    Returns columns ``onset_s`` (float64), ``offset_s`` (float64), ``midi`` (int64), sorted by onset
    then pitch. An empty file with only the header gives an empty frame. Raises
    :class:`ManifestError` (naming the file) if the file is missing or unreadable, a column is
    missing, a value is not a finite number, an onset is negative, a duration is zero or negative,
    or a MIDI pitch is not an integer in 0..127.
    """
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"{p}: notes file does not exist")
    try:
        df = pd.read_csv(p)
    except pd.errors.EmptyDataError as exc:
        raise ManifestError(
            f"{p}: notes file is empty (expected header onset_s,offset_s,midi)"
        ) from exc
    except Exception as exc:
        raise ManifestError(f"{p}: cannot parse notes CSV ({exc})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in NOTES_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{p}: notes file lacks column(s) {missing}; expected header onset_s,offset_s,midi, "
            f"got {list(df.columns)}"
        )
    out = pd.DataFrame(index=df.index)
    for col in NOTES_COLUMNS:
        vals = pd.to_numeric(df[col], errors="coerce")
        bad = ~np.isfinite(vals.to_numpy(dtype=np.float64, na_value=np.nan))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ManifestError(
                f"{p}: row {row + 2}: column {col!r} is not a finite number ({df[col].iloc[row]!r})"
            )
        out[col] = vals.astype(np.float64)
    if len(out) == 0:
        return pd.DataFrame(
            {
                "onset_s": pd.Series([], dtype=np.float64),
                "offset_s": pd.Series([], dtype=np.float64),
                "midi": pd.Series([], dtype=np.int64),
            }
        )
    onset = out["onset_s"].to_numpy()
    offset = out["offset_s"].to_numpy()
    midi = out["midi"].to_numpy()
    _first_bad(p, onset < 0, "negative onset", out)
    _first_bad(p, offset <= onset, "zero or negative duration (offset_s <= onset_s)", out)
    _first_bad(p, midi != np.round(midi), "MIDI pitch is not an integer", out)
    _first_bad(p, (midi < 0) | (midi > 127), "MIDI pitch outside 0..127", out)
    out["midi"] = midi.astype(np.int64)
    out = out.sort_values(["onset_s", "midi"], kind="stable").reset_index(drop=True)
    return out


def _first_bad(p: Path, mask: np.ndarray, what: str, notes: pd.DataFrame) -> None:
    """Raise :class:`ManifestError` for the first row where ``mask`` holds (rows numbered as in the file)."""
    if mask.any():
        i = int(np.flatnonzero(mask)[0])
        r = notes.iloc[i]
        raise ManifestError(
            f"{p}: row {i + 2}: {what} (onset_s={r['onset_s']:g}, offset_s={r['offset_s']:g}, "
            f"midi={r['midi']:g}); {int(mask.sum())} bad row(s) in all"
        )


def write_notes(path: str | os.PathLike[str], notes: pd.DataFrame | Mapping[str, object]) -> None:
    """Atomically write a notes CSV (``onset_s,offset_s,midi``), sorted by onset then pitch.

    ``notes`` holds the three columns (``n_notes`` rows). Times are written with 6 decimals.
    """
    df = pd.DataFrame(notes)[list(NOTES_COLUMNS)].copy()
    df["onset_s"] = df["onset_s"].astype(np.float64).round(6)
    df["offset_s"] = df["offset_s"].astype(np.float64).round(6)
    df["midi"] = df["midi"].astype(np.int64)
    df = df.sort_values(["onset_s", "midi"], kind="stable")
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def audio_duration(path: Path) -> float:
    """Duration in seconds of an audio file from its header (no decoding); ``ManifestError`` if unreadable."""
    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise ManifestError(f"{path}: cannot read audio header ({exc})") from exc
    if info.frames <= 0 or info.samplerate <= 0:
        raise ManifestError(f"{path}: audio is empty (0 samples)")
    return float(info.frames) / float(info.samplerate)


# --------------------------------------------------------------------- helpers of the adapters
def midi_notes(path: Path) -> pd.DataFrame:
    """Notes ``(n, 3)`` (``onset_s, offset_s, midi``) of the non-drum notes of a MIDI file (all
    notes if it has only drum notes), read with :func:`slotmpe.midi.read_midi_notes` (tempo from
    every track, notes paired first-in first-out); :class:`ManifestError` naming the file if it
    cannot be read."""
    from slotmpe.midi import MidiError, read_midi_notes

    try:
        notes = read_midi_notes(path)
    except MidiError as exc:
        raise ManifestError(str(exc)) from exc
    pitched = notes[~notes["is_drum"]]
    keep = pitched if len(pitched) else notes
    return (
        keep[["onset_s", "offset_s", "midi"]]
        .reset_index(drop=True)
        .astype({"onset_s": np.float64, "offset_s": np.float64, "midi": np.int64})
    )


def clip_notes(notes: pd.DataFrame, duration: float) -> pd.DataFrame:
    """Notes cut to ``[0, duration]``; notes left empty by the cut are dropped."""
    df = notes.copy()
    df["onset_s"] = df["onset_s"].clip(lower=0.0)
    df["offset_s"] = df["offset_s"].clip(upper=duration)
    return df[df["offset_s"] > df["onset_s"]].reset_index(drop=True)


def check_split_coverage(
    found: Mapping[Any, Any],
    split: Mapping[Any, Any],
    raw_dir: Path,
    what: str,
    cfg: Mapping[str, Any],
    log: logging.Logger,
) -> None:
    """Compare the items ``found`` in an archive with those of its ``split`` file.

    ``found`` maps an item key (piece folder name, recording id) to where it was found, ``what``
    names the items in messages ("URMP piece folder", "MusicNet recording"). An item that the split
    file does not list raises :class:`ManifestError` naming it and its location. Items of the split
    absent from the archive raise too, unless ``cfg["allow_missing_pieces"]`` (a partial copy);
    then they are logged as a warning on ``log``.
    """
    unknown = sorted(set(found) - set(split))
    if unknown:
        raise ManifestError(
            f"{raw_dir}: {what}(s) not in the split file: {unknown[:10]} "
            f"(first at {found[unknown[0]]})"
        )
    missing = sorted(set(split) - set(found))
    if not missing:
        return
    msg = f"{raw_dir}: {len(missing)} {what}(s) of the split file are missing, e.g. {missing[:10]}"
    if not cfg.get("allow_missing_pieces", False):
        raise ManifestError(msg + " (set allow_missing_pieces: true to build from a partial copy)")
    log.warning(msg)


def report_unused_audio(
    raw_dir: Path,
    used: Iterable[Path],
    log: logging.Logger,
    what: str,
    reasons: Mapping[Path, str] | None = None,
) -> list[Path]:
    """Warn about every audio file below ``raw_dir`` that the adapter does not use.

    ``used``: the audio files the manifest references; ``reasons``: ``{folder or file: why it is
    left out}`` for what the adapter skips on purpose (a split folder it ignores, a track beyond
    ``subset``). Unused files are grouped by folder in one warning on ``log`` (``what`` names the
    dataset), so nothing is dropped silently. Returns the unused files, sorted.
    """
    raw_dir = Path(raw_dir)
    used_real = {os.path.realpath(p) for p in used}
    suffixes = _audio_suffixes()
    unused = sorted(
        p
        for p in raw_dir.rglob("*")
        if p.suffix.lower() in suffixes and p.is_file() and os.path.realpath(p) not in used_real
    )
    if not unused:
        return []
    reasons = {Path(k): v for k, v in (reasons or {}).items()}
    groups: dict[tuple[Path, str], list[Path]] = {}
    for f in unused:
        why = next((reasons[a] for a in (f, *f.parents) if a in reasons), "not recognised")
        groups.setdefault((f.parent, why), []).append(f)
    shown = [
        f"{folder.relative_to(raw_dir) if folder != raw_dir else '.'}/ ({why}): "
        + ", ".join(x.name for x in files[:4])
        + (f" +{len(files) - 4} more" if len(files) > 4 else "")
        for (folder, why), files in list(groups.items())[:12]
    ]
    more = f"; and {len(groups) - 12} more folder(s)" if len(groups) > 12 else ""
    log.warning(
        "%s: %d audio file(s) in %d folder(s) below %s are not used: %s%s",
        what,
        len(unused),
        len(groups),
        raw_dir,
        "; ".join(shown),
        more,
    )
    return unused


def validate_manifest(df: pd.DataFrame, root: Path, check_files: bool = True) -> pd.DataFrame:
    """Check a manifest and return it normalised (column order, dtypes, "" for missing paths).

    ``df`` has one row per track and the columns ``MANIFEST_COLUMNS`` (extra columns are dropped);
    ``root`` is the folder relative paths are resolved against (the manifest's folder). With
    ``check_files`` every referenced file must exist, stem/mix durations must agree with
    ``duration_s`` and with each other within ``DURATION_TOL_S``, and every notes file must parse
    (:func:`read_notes`) with no note ending more than ``NOTES_END_TOL_S`` after its audio.
    Raises :class:`ManifestError` naming the problem (and the file or row concerned).
    """
    root = Path(root)
    if not isinstance(df, pd.DataFrame):
        raise ManifestError(f"manifest must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"manifest (root {root}) lacks column(s) {missing}")
    if len(df) == 0:
        raise ManifestError(f"manifest (root {root}) has no rows")
    out = df.loc[:, list(MANIFEST_COLUMNS)].copy().reset_index(drop=True)

    for col in _STR_COLUMNS:
        vals = out[col]
        if vals.isna().any() or not all(isinstance(v, str) and v != "" for v in vals):
            i = next(j for j, v in enumerate(vals) if not (isinstance(v, str) and v != ""))
            raise ManifestError(
                f"manifest row {i}: column {col!r} must be a non-empty string, got {vals.iloc[i]!r}"
            )
        out[col] = vals.astype(str)
    for col in _PATH_COLUMNS:
        vals = out[col].astype(object).where(out[col].notna(), "")
        bad = [j for j, v in enumerate(vals) if not isinstance(v, str)]
        if bad:
            raise ManifestError(f"manifest row {bad[0]}: column {col!r} must be a string path")
        for j, v in enumerate(vals):
            why = path_problem(v) if v else None
            if why:
                raise ManifestError(f"manifest row {j}: column {col!r}: {v!r} {why}")
        out[col] = vals.astype(str)
    out["pitched"] = _as_bool(out["pitched"])
    try:
        out["duration_s"] = pd.to_numeric(out["duration_s"]).astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"manifest: column 'duration_s' is not numeric ({exc})") from exc

    where = lambda i: _row_name(out, i)  # noqa: E731
    datasets = out["dataset"].unique()
    if len(datasets) != 1:
        raise ManifestError(f"manifest mixes several datasets: {sorted(datasets)}")
    for i, r in out.iterrows():
        i = int(i)
        if not is_safe_id(r["piece_id"]):
            raise ManifestError(
                f"{where(i)}: piece_id {r['piece_id']!r} is not safe as a file name"
            )
        if r["split"] not in SPLITS:
            raise ManifestError(f"{where(i)}: split {r['split']!r} is not one of {list(SPLITS)}")
        problem = family_problem(r["instrument"], r["family"])
        if problem:
            raise ManifestError(f"{where(i)}: {problem}")
        if r["pitched"] and r["family"] == NON_PITCHED_FAMILY:
            raise ManifestError(f"{where(i)}: instrument {r['instrument']!r} cannot be pitched")
        if r["pitched"] and r["notes_path"] == "":
            raise ManifestError(f"{where(i)}: pitched track has no notes_path")
        if not r["pitched"] and r["notes_path"] != "":
            raise ManifestError(f"{where(i)}: non-pitched track must have an empty notes_path")
        if r["mix_path"] == "":
            raise ManifestError(f"{where(i)}: mix_path is empty")
        d = float(r["duration_s"])
        if not math.isfinite(d) or d <= 0:
            raise ManifestError(f"{where(i)}: duration_s must be a positive number, got {d!r}")

    dup = out["track_id"][out["track_id"].duplicated()]
    if len(dup):
        rows = out[out["track_id"] == dup.iloc[0]]
        files = [r.stem_path or r.notes_path or r.mix_path for r in rows.itertuples()]
        raise ManifestError(f"manifest: duplicate track_id {dup.iloc[0]!r} (rows for {files})")
    for piece, g in out.groupby("piece_id", sort=False):
        if g["split"].nunique() != 1:
            raise ManifestError(
                f"piece {piece!r}: rows in several splits {sorted(g['split'].unique())}"
            )
        if g["mix_path"].nunique() != 1:
            raise ManifestError(
                f"piece {piece!r}: rows disagree on mix_path {sorted(g['mix_path'].unique())}"
            )
        if not g["pitched"].any():
            raise ManifestError(f"piece {piece!r}: has no pitched track")
        has_stem = g["stem_path"] != ""
        if has_stem.any() and not has_stem.all():
            raise ManifestError(f"piece {piece!r}: some tracks have stems and others do not")

    if check_files:
        _check_files(out, root)
    return out


def _row_name(df: pd.DataFrame, i: int) -> str:
    """Human-readable name of manifest row ``i`` for error messages."""
    r = df.iloc[i]
    return f"manifest row {i} (piece {r['piece_id']!r}, track {r['track_id']!r})"


def _as_bool(col: pd.Series) -> pd.Series:
    """Coerce a ``pitched`` column (bool, 0/1 or "true"/"false" strings) to bool; ManifestError otherwise."""
    mapping = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
    vals = []
    for i, v in enumerate(col):
        if isinstance(v, bool | np.bool_):
            vals.append(bool(v))
        elif isinstance(v, int | np.integer) and int(v) in (0, 1):
            vals.append(bool(v))
        elif isinstance(v, str) and v.strip().lower() in mapping:
            vals.append(mapping[v.strip().lower()])
        else:
            raise ManifestError(f"manifest row {i}: column 'pitched' must be a boolean, got {v!r}")
    return pd.Series(vals, index=col.index, dtype=bool)


def _check_files(df: pd.DataFrame, root: Path) -> None:
    """File-level checks of :func:`validate_manifest` (existence, durations, notes vs audio)."""
    mix_dur: dict[str, float] = {}
    for mix in df["mix_path"].unique():
        p = resolve_path(root, mix)
        if not p.is_file():
            raise ManifestError(f"{p}: mix file listed in the manifest does not exist")
        mix_dur[mix] = audio_duration(p)
    for i, r in df.iterrows():
        i = int(i)
        mdur = mix_dur[r["mix_path"]]
        if r["stem_path"]:
            sp = resolve_path(root, r["stem_path"])
            if not sp.is_file():
                raise ManifestError(
                    f"{sp}: stem file listed in the manifest ({_row_name(df, i)}) does not exist"
                )
            sdur = audio_duration(sp)
            if abs(sdur - mdur) > DURATION_TOL_S:
                raise ManifestError(
                    f"{sp}: stem lasts {sdur:.3f} s but the mix {resolve_path(root, r['mix_path'])} "
                    f"lasts {mdur:.3f} s (stems of different lengths)"
                )
        else:
            sdur = mdur
        if abs(float(r["duration_s"]) - sdur) > DURATION_TOL_S:
            raise ManifestError(
                f"{_row_name(df, i)}: duration_s={r['duration_s']:.3f} disagrees with the audio "
                f"({sdur:.3f} s)"
            )
        if r["notes_path"]:
            npath = resolve_path(root, r["notes_path"])
            notes = read_notes(npath)
            if len(notes):
                end = float(notes["offset_s"].max())
                if end > sdur + NOTES_END_TOL_S:
                    raise ManifestError(
                        f"{npath}: a note ends at {end:.3f} s, past the end of the audio ({sdur:.3f} s)"
                    )


def read_manifest(path: str | os.PathLike[str], check_files: bool = True) -> pd.DataFrame:
    """Read and validate ``manifest.parquet`` (relative paths resolve against its folder).

    Returns the normalised frame (one row per track, ``MANIFEST_COLUMNS``).
    """
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"{p}: manifest does not exist")
    try:
        df = pd.read_parquet(p)
    except Exception as exc:
        raise ManifestError(f"{p}: cannot read manifest ({exc})") from exc
    try:
        return validate_manifest(df, p.parent, check_files=check_files)
    except ManifestError as exc:
        raise ManifestError(f"{p}: {exc}") from exc


def write_manifest(
    df: pd.DataFrame, path: str | os.PathLike[str], check_files: bool = True
) -> None:
    """Validate ``df`` against the folder of ``path`` and write it atomically as parquet."""
    p = Path(path)
    out = validate_manifest(df, p.parent, check_files=check_files)
    with atomic_path(p) as tmp:
        out.to_parquet(tmp, index=False)


def manifest_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Pieces, tracks, pitched tracks and minutes of mixture audio per split.

    Returns a frame indexed by split (train, val, test) with columns ``pieces``, ``tracks``,
    ``pitched_tracks``, ``minutes``.
    """
    rows = []
    for split in SPLITS:
        g = df[df["split"] == split]
        per_piece = g.groupby("piece_id")["duration_s"].max()
        rows.append(
            {
                "split": split,
                "pieces": int(g["piece_id"].nunique()),
                "tracks": len(g),
                "pitched_tracks": int(g["pitched"].sum()),
                "minutes": float(per_piece.sum() / 60.0),
            }
        )
    return pd.DataFrame(rows).set_index("split")
