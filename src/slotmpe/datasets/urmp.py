"""URMP adapter: the unpacked Dryad archive -> ``manifest.parquet`` + notes CSVs.

Layout of the archive (Li et al., "Creating a multitrack classical music performance dataset for
multimodal music analysis", IEEE TMM 2019; Dryad doi:10.5061/dryad.ng3r749), 44 piece folders
(149 tracks) inside ``Dataset/``::

    NN_Title_c1_c2[_c3...]/              e.g. 12_Spring_vn_vn_vc; c_k = instrument code of part k
        AuMix_NN_Title_c1_c2.wav         mixture
        AuSep_k_ck_NN_Title.wav          isolated stem of part k (k = 1..n)
        F0s_k_ck_NN_Title.txt            f0 track: "time_s f0_hz" per line, 0 Hz = unvoiced
        Notes_k_ck_NN_Title.txt          notes: "onset_s f0_hz duration_s" per line

Targets follow the f0 track (``cfg["targets"] = "f0"``, the default): each contiguous run of voiced
frames with the same rounded MIDI pitch becomes one note from the first frame's time to the last
frame's time plus one f0 hop, so frame-level pitch targets follow the annotated f0 (glides and wide
vibrato switch pitch where the f0 crosses a semitone boundary). A track without an F0s file, or
``cfg["targets"] = "notes"``, uses ``Notes_*.txt`` (pitch = rounded mean f0 of the note).

Folder names are parsed from the right: the trailing tokens are the instrument codes (as many as
the folder has ``AuSep`` stems; without stems, the trailing run of known codes), everything
between the number and the codes is the title, which may hold underscores
(``19_Ave_Maria_ob_cl_bn``: title ``Ave_Maria``). Audio files below the archive that the manifest
does not use are named in a warning. Instrument codes come from the *folder* name (part k = k-th
code), mapped by
``constants.URMP_CODES`` (Table II of the paper). The file names are only used to find files: the
archive has at least one file-name typo (the third part of ``15_Surprise_tpt_tpt_tbn`` is named
``..._3_tpt_...`` although it is the trombone); a disagreement is logged, the folder wins.

Split: the custom 30/7/7 split committed in ``slotmpe/data/urmp_split.json`` (or
``cfg["split_file"]``), made once by :func:`make_split` (see its docstring; regenerate with
``python -m slotmpe.datasets.urmp --write-split``). By default every piece of the split file must
be in the archive (``cfg["allow_missing_pieces"]: true`` relaxes this, e.g. for a partial copy).
A partial copy that leaves train, val or test empty is an error naming the split, unless
``cfg["fill_empty_splits"]: true`` (then :func:`slotmpe.datasets.splits.fill_empty_splits` moves
one seeded title group into it, with a warning).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slotmpe.constants import URMP_CODES, family_of, hz_to_midi
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
from slotmpe.utils import atomic_path, get_logger

log = get_logger(__name__)

DATASET = "urmp"

# The 44 piece folders of URMP (NN_Title_codes). Source: public code that hard-codes the
# archive's folder list (cross-checked between independent GitHub projects; the real archive could
# not be listed from here); it reproduces the published counts, 44 pieces and 149 tracks
# (11 duets, 12 trios, 14 quartets, 7 quintets). build_urmp checks every folder it finds against
# the split file, so a differing name in the real archive is reported, not silently dropped.
URMP_PIECES: tuple[str, ...] = (
    "01_Jupiter_vn_vc",
    "02_Sonata_vn_vn",
    "03_Dance_fl_cl",
    "04_Allegro_fl_fl",
    "05_Entertainer_tpt_tpt",
    "06_Entertainer_sax_sax",
    "07_GString_tpt_tbn",
    "08_Spring_fl_vn",
    "09_Jesus_tpt_vn",
    "10_March_tpt_sax",
    "11_Maria_ob_vc",
    "12_Spring_vn_vn_vc",
    "13_Hark_vn_vn_va",
    "14_Waltz_fl_fl_cl",
    "15_Surprise_tpt_tpt_tbn",
    "16_Surprise_tpt_tpt_sax",
    "17_Nocturne_vn_fl_cl",
    "18_Nocturne_vn_fl_tpt",
    "19_Pavane_cl_vn_vc",
    "20_Pavane_tpt_vn_vc",
    "21_Rejouissance_cl_tbn_tba",
    "22_Rejouissance_sax_tbn_tba",
    "23_Rejouissance_cl_sax_tba",
    "24_Pirates_vn_vn_va_vc",
    "25_Pirates_vn_vn_va_sax",
    "26_King_vn_vn_va_vc",
    "27_King_vn_vn_va_sax",
    "28_Fugue_fl_ob_cl_bn",
    "29_Fugue_fl_fl_ob_cl",
    "30_Fugue_fl_fl_ob_sax",
    "31_Slavonic_tpt_tpt_hn_tbn",
    "32_Fugue_vn_vn_va_vc",
    "33_Elise_tpt_tpt_hn_tbn",
    "34_Fugue_tpt_tpt_hn_tbn",
    "35_Rondeau_vn_vn_va_db",
    "36_Rondeau_vn_vn_va_vc",
    "37_Rondeau_fl_vn_va_cl",
    "38_Jerusalem_vn_vn_va_vc_db",
    "39_Jerusalem_vn_vn_va_sax_db",
    "40_Miserere_fl_fl_ob_cl_bn",
    "41_Miserere_fl_fl_ob_sax_bn",
    "42_Arioso_tpt_tpt_hn_tbn_tba",
    "43_Chorale_tpt_tpt_hn_tbn_tba",
    "44_K515_vn_vn_va_va_vc",
)

SPLIT_SEED = 20260531
"""Seed of the committed split (the paper's arXiv date); see :func:`make_split`."""
SPLIT_SIZES: Mapping[str, int] = {"train": 30, "val": 7, "test": 7}
MIN_LARGE_PIECES = 2  # val and test each hold at least this many pieces with 3+ instruments

_PIECE_RE = re.compile(
    r"^(\d+)_(.+)_([a-z]+)$"
)  # NN_Title[_More]_code: codes parsed from the right
_SEP_RE = re.compile(r"^AuSep_(\d+)_([a-z]+)_(.+)\.wav$", re.IGNORECASE)
_TXT_RE = re.compile(r"^(F0s|Notes)_(\d+)_([a-z]+)_(.+)\.txt$", re.IGNORECASE)


# ------------------------------------------------------------------------------------------- split
def parse_piece(piece: str, n_parts: int | None = None) -> tuple[str, list[str]]:
    """``(title, codes)`` of a piece folder name, parsed from the right.

    The last ``n_parts`` tokens are the codes (the number of ``AuSep`` stems of the folder); with
    ``n_parts=None`` the trailing run of known codes (``constants.URMP_CODES``). The title is
    what lies between the leading number and the codes and may hold underscores
    (``"19_Ave_Maria_ob_cl_bn"`` -> ``("Ave_Maria", ["ob", "cl", "bn"])``). ValueError if the
    name is not ``NN_Title_code...`` or leaves no title.
    """
    m = _PIECE_RE.match(piece)
    if not m:
        raise ValueError(f"{piece!r} is not a URMP piece folder name (NN_Title_code_code...)")
    tokens = piece.split("_")[1:]
    if n_parts is None:
        k = 0
        while k < len(tokens) - 1 and tokens[-1 - k] in URMP_CODES:
            k += 1
    else:
        k = int(n_parts)
    if not 0 < k < len(tokens) or not all(re.fullmatch(r"[a-z]+", t) for t in tokens[-k:]):
        raise ValueError(
            f"{piece!r}: cannot split the name into a title and {n_parts or 'known'} instrument "
            "code(s) (NN_Title_code_code...)"
        )
    return "_".join(tokens[:-k]), tokens[-k:]


def piece_codes(piece: str) -> list[str]:
    """Instrument codes of a piece folder name, in part order (``"12_Spring_vn_vn_vc"`` -> vn, vn, vc)."""
    return parse_piece(piece)[1]


def piece_title(piece: str) -> str:
    """Title of a piece folder name (``"19_Ave_Maria_ob_cl_bn"`` -> ``"Ave_Maria"``)."""
    return parse_piece(piece)[0]


def make_split(
    pieces: Sequence[str] = URMP_PIECES,
    seed: int = SPLIT_SEED,
    sizes: Mapping[str, int] = SPLIT_SIZES,
    max_attempts: int = 100_000,
) -> dict[str, Any]:
    """The custom URMP train/val/test split, drawn once by a seeded, documented procedure.

    1. Pieces are grouped by title: URMP records some arrangements twice with one part swapped and
       re-uses the common parts' takes (e.g. 17/18 Nocturne, 24/25 Pirates, 35-37 Rondeau), so
       pieces with the same title always share a split (no audio or score leaks across splits).
    2. Attempt ``a = 0, 1, ...``: ``random.Random(seed)`` (one generator for all attempts) shuffles
       the groups; test, then val take whole groups in that order while they fit their size
       (7 each), the rest is train.
    3. The first attempt is accepted where test and val have exactly their size, each holds at
       least two pieces with 3+ instruments (the paper's constraint), and every instrument code of
       val and test also occurs in train.

    Returns ``{"train": [...], "val": [...], "test": [...]}`` (sorted piece names) plus the
    procedure's parameters (``seed``, ``attempt``, ``procedure``). Raises RuntimeError if no
    attempt satisfies the constraints.
    """
    groups: dict[str, list[str]] = {}
    for p in sorted(pieces):
        groups.setdefault(piece_title(p), []).append(p)
    group_list = [groups[t] for t in sorted(groups)]
    rng = random.Random(seed)
    for attempt in range(max_attempts):
        order = list(group_list)
        rng.shuffle(order)
        out: dict[str, list[str]] = {"test": [], "val": [], "train": []}
        rest = order
        for split in ("test", "val"):
            left = []
            for g in rest:
                if len(out[split]) + len(g) <= sizes[split]:
                    out[split].extend(g)
                else:
                    left.append(g)
            rest = left
        out["train"] = [p for g in rest for p in g]
        if any(len(out[s]) != sizes[s] for s in ("test", "val")):
            continue
        if any(
            sum(len(piece_codes(p)) >= 3 for p in out[s]) < MIN_LARGE_PIECES
            for s in ("val", "test")
        ):
            continue
        train_codes = {c for p in out["train"] for c in piece_codes(p)}
        if any(
            c not in train_codes for s in ("val", "test") for p in out[s] for c in piece_codes(p)
        ):
            continue
        return {
            "source": "slotmpe custom URMP split (paper Sec. IV-A1: 30/7/7, val and test each with "
            ">= 2 pieces of 3+ instruments)",
            "procedure": "slotmpe.datasets.urmp.make_split: pieces grouped by title; seeded shuffle "
            "of the groups; test then val filled greedily with whole groups; first attempt with "
            "exact sizes, >= 2 pieces of 3+ instruments in val and test, and every val/test "
            "instrument present in train",
            "seed": seed,
            "attempt": attempt,
            "counts": {s: len(out[s]) for s in ("train", "val", "test")},
            "train": sorted(out["train"]),
            "val": sorted(out["val"]),
            "test": sorted(out["test"]),
        }
    raise RuntimeError(f"no URMP split satisfies the constraints after {max_attempts} attempts")


def default_split_path() -> Path:
    """Path of the committed split file inside the package."""
    return Path(str(resources.files("slotmpe") / "data" / "urmp_split.json"))


def write_split(path: str | os.PathLike[str] | None = None, seed: int = SPLIT_SEED) -> Path:
    """(Re)generate the split file (default: the committed ``slotmpe/data/urmp_split.json``)."""
    p = Path(path) if path is not None else default_split_path()
    split = make_split(URMP_PIECES, seed=seed)
    with atomic_path(p) as tmp:
        tmp.write_text(json.dumps(split, indent=1) + "\n")
    return p


def load_split(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """``{piece: split}`` from a split JSON (default: the committed one); ValueError if malformed."""
    p = Path(path) if path is not None else default_split_path()
    try:
        data = json.loads(Path(p).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{p}: cannot read URMP split file ({exc})") from exc
    out: dict[str, str] = {}
    for split in ("train", "val", "test"):
        names = data.get(split)
        if not isinstance(names, list):
            raise ValueError(f"{p}: URMP split file lacks a list {split!r}")
        for n in names:
            if n in out:
                raise ValueError(f"{p}: piece {n!r} is in both {out[n]!r} and {split!r}")
            out[str(n)] = split
    return out


# ------------------------------------------------------------------------------------ annotations
def read_table(path: Path, n_cols: int) -> np.ndarray:
    """Whitespace/comma-separated numeric table with at least ``n_cols`` columns -> ``(rows, n_cols)``."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            fields = re.split(r"[\s,;]+", s)
            try:
                vals = [float(x) for x in fields[:n_cols]]
            except ValueError:
                if not rows and lineno == 1:  # a header line
                    continue
                raise ManifestError(f"{path}: line {lineno}: not numeric: {s[:80]!r}") from None
            if len(vals) < n_cols or not all(math.isfinite(v) for v in vals):
                raise ManifestError(
                    f"{path}: line {lineno}: expected {n_cols} finite numbers: {s[:80]!r}"
                )
            rows.append(vals)
    return np.asarray(rows, dtype=np.float64).reshape(-1, n_cols)


def f0_to_notes(times: np.ndarray, f0: np.ndarray, hop: float | None = None) -> pd.DataFrame:
    """Note segments of an f0 track: runs of voiced frames with the same rounded MIDI pitch.

    ``times`` ``(n,)`` increasing frame times (s), ``f0`` ``(n,)`` Hz with ``<= 0`` = unvoiced.
    Each run ``[i, j]`` gives a note ``(times[i], times[j] + hop, midi)``; ``hop`` defaults to the
    median frame step. Returns a frame with columns ``onset_s, offset_s, midi``.
    """
    times = np.asarray(times, dtype=np.float64)
    f0 = np.asarray(f0, dtype=np.float64)
    if times.shape != f0.shape or times.ndim != 1:
        raise ValueError(
            f"times and f0 must be 1-D of the same length, got {times.shape}, {f0.shape}"
        )
    if len(times) > 1 and np.any(np.diff(times) <= 0):
        raise ValueError("f0 frame times must be strictly increasing")
    if hop is None:
        hop = float(np.median(np.diff(times))) if len(times) > 1 else 0.01
    voiced = f0 > 0
    midi = np.full(len(f0), -1, dtype=np.int64)
    midi[voiced] = np.round(69.0 + 12.0 * np.log2(f0[voiced] / 440.0)).astype(np.int64)
    midi[(midi < 0) | (midi > 127)] = -1
    onsets, offsets, pitches = [], [], []
    i, n = 0, len(midi)
    while i < n:
        if midi[i] < 0:
            i += 1
            continue
        j = i
        while j + 1 < n and midi[j + 1] == midi[i]:
            j += 1
        onsets.append(times[i])
        offsets.append(times[j] + hop)
        pitches.append(int(midi[i]))
        i = j + 1
    return pd.DataFrame({"onset_s": onsets, "offset_s": offsets, "midi": pitches}).astype(
        {"onset_s": np.float64, "offset_s": np.float64, "midi": np.int64}
    )


def read_f0_notes(path: Path) -> pd.DataFrame:
    """Notes from a URMP ``F0s_*.txt`` file (``time_s f0_hz`` per line) via :func:`f0_to_notes`."""
    tab = read_table(path, 2)
    if len(tab) == 0:
        raise ManifestError(f"{path}: f0 file has no frames")
    if np.any(tab[:, 1] < 0):
        raise ManifestError(f"{path}: negative f0 values")
    try:
        return f0_to_notes(tab[:, 0], tab[:, 1])
    except ValueError as exc:
        raise ManifestError(f"{path}: {exc}") from exc


def read_urmp_notes(path: Path) -> pd.DataFrame:
    """Notes from a URMP ``Notes_*.txt`` file (``onset_s f0_hz duration_s``); pitch = rounded MIDI."""
    tab = read_table(path, 3)
    keep = (tab[:, 1] > 0) & (tab[:, 2] > 0)
    tab = tab[keep]
    midi = np.array([round(hz_to_midi(h)) for h in tab[:, 1]], dtype=np.int64)
    ok = (midi >= 0) & (midi <= 127)
    return pd.DataFrame(
        {"onset_s": tab[ok, 0], "offset_s": tab[ok, 0] + tab[ok, 2], "midi": midi[ok]}
    )


# -------------------------------------------------------------------------------------- discovery
def find_piece_dirs(raw_dir: Path, max_depth: int = 4) -> dict[str, Path]:
    """``{piece name: folder}`` of every URMP piece folder (with an ``AuMix_*.wav``) under ``raw_dir``."""
    found: dict[str, Path] = {}
    raw_dir = Path(raw_dir)
    base_depth = len(raw_dir.parts)
    for dirpath, dirnames, filenames in os.walk(raw_dir):
        d = Path(dirpath)
        if len(d.parts) - base_depth >= max_depth:
            dirnames[:] = []
        dirnames.sort()
        if _PIECE_RE.match(d.name) and any(
            f.startswith("AuMix_") and f.endswith(".wav") for f in filenames
        ):
            if d.name in found:
                raise ManifestError(f"URMP piece {d.name} found twice: {found[d.name]} and {d}")
            found[d.name] = d
    return found


def _by_part(
    folder: Path, pattern: re.Pattern[str], kind: str | None
) -> dict[int, tuple[Path, str]]:
    """``{part k: (file, code in the file name)}`` for the files of ``folder`` matching ``pattern``."""
    out: dict[int, tuple[Path, str]] = {}
    for f in sorted(folder.iterdir()):
        m = pattern.match(f.name)
        if not m:
            continue
        if kind is not None:
            if m.group(1).lower() != kind.lower():
                continue
            k, code = int(m.group(2)), m.group(3).lower()
        else:
            k, code = int(m.group(1)), m.group(2).lower()
        if k in out:
            raise ManifestError(f"{folder}: two files for part {k}: {out[k][0].name} and {f.name}")
        out[k] = (f, code)
    return out


# ------------------------------------------------------------------------------------------ build
def build_urmp(raw_dir: Path, out_dir: Path, cfg: Mapping[str, Any]) -> Path:
    """Write ``out_dir/manifest.parquet`` (+ ``out_dir/notes/*.csv``) for an unpacked URMP archive.

    ``raw_dir``: the folder the archive was unpacked into (piece folders are searched below it).
    ``cfg`` keys (all optional): ``targets`` ("f0" default, or "notes"), ``split_file`` (default:
    the committed split), ``allow_missing_pieces`` (default False). Returns the manifest path.
    Raises :class:`ManifestError` naming the file for missing/malformed files, unknown
    instrument codes or pieces absent from the split file.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    targets = str(cfg.get("targets", "f0"))
    if targets not in ("f0", "notes"):
        raise ValueError(f"urmp: cfg['targets'] must be 'f0' or 'notes', got {targets!r}")
    split_of = load_split(cfg.get("split_file"))
    pieces = find_piece_dirs(raw_dir)
    if not pieces:
        raise ManifestError(
            f"{raw_dir}: no URMP piece folders (NN_Title_codes with AuMix_*.wav) found"
        )
    log.info("urmp: found %d piece folders below %s", len(pieces), raw_dir)
    check_split_coverage(pieces, split_of, raw_dir, "URMP piece folder", cfg, log)
    split_of = fill_empty_splits(
        {p: split_of[p] for p in pieces},
        str(raw_dir),
        bool(cfg.get("fill_empty_splits", False)),
        int(cfg.get("seed", 0)),
        log,
        work_of=piece_title,
    )

    notes_dir = out_dir / "notes"
    rows = []
    used: list[Path] = []
    for piece in sorted(pieces):
        folder = pieces[piece]
        seps = _by_part(folder, _SEP_RE, None)
        try:
            codes = piece_codes(piece)
        except ValueError:
            codes = []  # no known code at the end: an unknown one, named below
        try:
            if len(seps) > len(codes):  # more stems than known codes: take that many tokens
                codes = parse_piece(piece, n_parts=len(seps))[1]
            elif not codes:
                codes = piece_codes(piece)
        except ValueError as exc:
            raise ManifestError(f"{folder}: {exc}") from exc
        for c in codes:
            if c not in URMP_CODES:
                raise ManifestError(
                    f"{folder}: unknown URMP instrument code {c!r} (known: {sorted(URMP_CODES)})"
                )
        mixes = sorted(folder.glob("AuMix_*.wav"))
        if len(mixes) != 1:
            raise ManifestError(
                f"{folder}: expected one AuMix_*.wav, found {[m.name for m in mixes]}"
            )
        f0s = _by_part(folder, _TXT_RE, "F0s")
        nts = _by_part(folder, _TXT_RE, "Notes")
        if sorted(seps) != list(range(1, len(codes) + 1)):
            raise ManifestError(
                f"{folder}: expected stems AuSep_1..{len(codes)} for parts {codes}, found parts {sorted(seps)}"
            )
        for k, code in enumerate(codes, 1):
            stem, file_code = seps[k]
            if file_code != code:
                log.warning(
                    "%s: file code %r differs from the folder's part %d code %r; using the folder's",
                    stem,
                    file_code,
                    k,
                    code,
                )
            duration = audio_duration(stem)
            if targets == "f0" and k in f0s:
                notes = read_f0_notes(f0s[k][0])
            elif k in nts:
                if targets == "f0":
                    log.warning("%s: no F0s file for part %d; using %s", folder, k, nts[k][0].name)
                notes = read_urmp_notes(nts[k][0])
            elif k in f0s:
                log.warning("%s: no Notes file for part %d; using %s", folder, k, f0s[k][0].name)
                notes = read_f0_notes(f0s[k][0])
            else:
                raise ManifestError(
                    f"{folder}: no F0s_{k}_*.txt or Notes_{k}_*.txt for part {k} ({code})"
                )
            notes = clip_notes(notes, duration)
            used.extend((stem, mixes[0]))
            track_id = f"{piece}_{k}_{code}"
            npath = notes_dir / f"{track_id}.csv"
            write_notes(npath, notes)
            instrument = URMP_CODES[code]
            rows.append(
                {
                    "dataset": str(cfg.get("name") or DATASET),
                    "piece_id": piece,
                    "split": split_of[piece],
                    "track_id": track_id,
                    "instrument": instrument,
                    "family": family_of(instrument),
                    "pitched": True,
                    "stem_path": relative_path(out_dir, stem),
                    "mix_path": relative_path(out_dir, mixes[0]),
                    "notes_path": relative_path(out_dir, npath),
                    "duration_s": duration,
                }
            )
    report_unused_audio(raw_dir, used, log, "urmp")
    path = out_dir / "manifest.parquet"
    write_manifest(pd.DataFrame(rows), path)
    log.info("urmp: %d pieces, %d tracks -> %s", len(pieces), len(rows), path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m slotmpe.datasets.urmp --write-split [PATH]``: regenerate the committed split."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--write-split", nargs="?", const="", default=None, metavar="PATH")
    ap.add_argument("--seed", type=int, default=SPLIT_SEED)
    args = ap.parse_args(argv)
    if args.write_split is None:
        ap.print_help()
        return 2
    p = write_split(args.write_split or None, seed=args.seed)
    print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
