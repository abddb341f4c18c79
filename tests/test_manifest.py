"""Tests of slotmpe.datasets.manifest: schema, file checks, notes files and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from slotmpe.datasets.manifest import (
    MANIFEST_COLUMNS,
    ManifestError,
    manifest_summary,
    read_manifest,
    read_notes,
    resolve_path,
    validate_manifest,
    write_manifest,
    write_notes,
)

SR = 16_000


def _wav(path: Path, seconds: float, freq: float = 220.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)


def _notes(path: Path, rows: list[tuple[float, float, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["onset_s", "offset_s", "midi"]).to_csv(path, index=False)


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    """Two pieces (two pitched tracks + a drum track in one), files on disk."""
    rows = []
    for k, piece in enumerate(("p1", "p2")):
        split = ("train", "test")[k]
        _wav(tmp_path / piece / "mix.wav", 2.0)
        tracks = [("a", "violin", True), ("b", "flute", True)] + (
            [("d", "drums", False)] if k == 0 else []
        )
        for track, instrument, pitched in tracks:
            _wav(tmp_path / piece / f"{track}.wav", 2.0)
            if pitched:
                _notes(tmp_path / piece / f"{track}.csv", [(0.0, 0.5, 60), (0.5, 1.9, 64)])
            rows.append(
                {
                    "dataset": "toy",
                    "piece_id": piece,
                    "split": split,
                    "track_id": f"{piece}-{track}",
                    "instrument": instrument,
                    "family": {"violin": "strings", "flute": "woodwinds", "drums": "percussion"}[
                        instrument
                    ],
                    "pitched": pitched,
                    "stem_path": f"{piece}/{track}.wav",
                    "mix_path": f"{piece}/mix.wav",
                    "notes_path": f"{piece}/{track}.csv" if pitched else "",
                    "duration_s": 2.0,
                }
            )
    return pd.DataFrame(rows), tmp_path


def test_valid_manifest_roundtrip(tiny: tuple[pd.DataFrame, Path]) -> None:
    df, root = tiny
    out = validate_manifest(df.sample(frac=1.0, random_state=0), root)
    assert tuple(out.columns) == MANIFEST_COLUMNS
    assert out["pitched"].dtype == bool
    write_manifest(df, root / "manifest.parquet")
    back = read_manifest(root / "manifest.parquet")
    pd.testing.assert_frame_equal(back, validate_manifest(df, root))
    summary = manifest_summary(back)
    assert summary.loc["train", "pieces"] == 1 and summary.loc["train", "tracks"] == 3
    assert summary.loc["test", "pitched_tracks"] == 2
    assert summary.loc["val", "pieces"] == 0
    assert summary.loc["train", "minutes"] == pytest.approx(2.0 / 60)


def test_resolve_path(tmp_path: Path) -> None:
    assert resolve_path(tmp_path, "a/b.wav") == tmp_path / "a" / "b.wav"
    assert resolve_path(tmp_path / "m", "../raw/x.wav") == tmp_path / "m" / ".." / "raw" / "x.wav"
    with pytest.raises(ManifestError, match="absolute"):
        resolve_path(tmp_path, "/abs/x.wav")


def _set(df: pd.DataFrame, row: int, **kw: object) -> pd.DataFrame:
    df = df.copy()
    for k, v in kw.items():
        df.loc[row, k] = v
    return df


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.drop(columns=["family"]), "lacks column"),
        (lambda d: _set(d, 0, family="kazoos"), "family 'kazoos' is not one of"),
        (lambda d: _set(d, 0, family="brass"), "does not match instrument"),
        (lambda d: _set(d, 0, split="dev"), "split 'dev'"),
        (lambda d: _set(d, 1, track_id="p1-a"), "duplicate track_id"),
        (lambda d: _set(d, 0, split="val"), "several splits"),
        (lambda d: _set(d, 0, piece_id="bad/id", split="train"), "not safe as a file name"),
        (lambda d: _set(d, 0, notes_path=""), "pitched track has no notes_path"),
        (
            lambda d: _set(d, 2, notes_path="p1/a.csv"),
            "non-pitched track must have an empty notes_path",
        ),
        (lambda d: _set(d, 2, pitched=True, notes_path="p1/a.csv"), "cannot be pitched"),
        (lambda d: _set(d, 0, duration_s=-1.0), "positive number"),
        (lambda d: _set(d, 0, mix_path="p2/mix.wav"), "disagree on mix_path"),
        (lambda d: d.assign(pitched=["maybe"] + [True] * (len(d) - 1)), "must be a boolean"),
        (
            lambda d: d[d["piece_id"] == "p1"].assign(pitched=False, notes_path=""),
            "no pitched track",
        ),
        (lambda d: d.iloc[:0], "no rows"),
    ],
)
def test_schema_errors(tiny: tuple[pd.DataFrame, Path], change, message: str) -> None:
    df, root = tiny
    with pytest.raises(ManifestError, match=message):
        validate_manifest(change(df), root, check_files=False)


def test_open_instrument_vocabulary_and_unicode_ids(tiny: tuple[pd.DataFrame, Path]) -> None:
    """Any instrument name with a valid family; Unicode piece ids; a duplicate id names files."""
    df, root = tiny
    for inst, fam in (("saw_lead", "keyboards"), ("Rhodes", "unknown"), ("violin", "strings")):
        validate_manifest(_set(df, 0, instrument=inst, family=fam), root, check_files=False)
    uni = df.assign(piece_id=df["piece_id"].map({"p1": "ヴァイオリン", "p2": "チェロ"}))
    assert validate_manifest(uni, root, check_files=False)["piece_id"].nunique() == 2
    with pytest.raises(ManifestError, match=r"duplicate track_id 'p1-a' \(rows for \['p1/a.wav'"):
        validate_manifest(_set(df, 1, track_id="p1-a"), root, check_files=False)


def test_file_errors(tiny: tuple[pd.DataFrame, Path]) -> None:
    df, root = tiny
    with pytest.raises(ManifestError, match="does not exist"):
        validate_manifest(_set(df, 0, stem_path="p1/missing.wav"), root)
    with pytest.raises(ManifestError, match="duration_s=3.000 disagrees"):
        validate_manifest(_set(df, 0, duration_s=3.0), root)
    _wav(root / "p1" / "long.wav", 3.0)
    with pytest.raises(ManifestError, match="stems of different lengths"):
        validate_manifest(_set(df, 0, stem_path="p1/long.wav"), root)
    _notes(root / "p1" / "late.csv", [(1.5, 2.8, 60)])
    with pytest.raises(ManifestError, match=r"late\.csv: a note ends at 2\.800 s, past the end"):
        validate_manifest(_set(df, 0, notes_path="p1/late.csv"), root)
    (root / "p1" / "empty.wav").write_bytes(b"")
    with pytest.raises(ManifestError, match="empty.wav: cannot read audio header"):
        validate_manifest(_set(df, 0, stem_path="p1/empty.wav"), root)
    # without file checks the same frame passes
    validate_manifest(_set(df, 0, stem_path="p1/missing.wav"), root, check_files=False)


def test_write_manifest_refuses_invalid_and_keeps_old(tiny: tuple[pd.DataFrame, Path]) -> None:
    df, root = tiny
    path = root / "manifest.parquet"
    write_manifest(df, path)
    before = path.read_bytes()
    with pytest.raises(ManifestError):
        write_manifest(_set(df, 0, family="kazoos"), path)
    assert path.read_bytes() == before
    assert not [p for p in root.iterdir() if p.name.startswith(".manifest")]


def test_read_manifest_names_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest does not exist"):
        read_manifest(tmp_path / "nope.parquet")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(ManifestError, match="bad.parquet: cannot read manifest"):
        read_manifest(tmp_path / "bad.parquet")


def test_read_notes_ok(tmp_path: Path) -> None:
    p = tmp_path / "n.csv"
    p.write_text("onset_s,offset_s,midi\n0.5,1.0,62\n0.0,0.5,60.0\n0.0,0.4,64\n")
    notes = read_notes(p)
    assert list(notes.columns) == ["onset_s", "offset_s", "midi"]
    assert notes["midi"].dtype == np.int64
    assert notes["midi"].tolist() == [60, 64, 62]  # sorted by onset then pitch
    (tmp_path / "h.csv").write_text("onset_s,offset_s,midi\n")
    assert len(read_notes(tmp_path / "h.csv")) == 0
    write_notes(tmp_path / "w.csv", notes)
    pd.testing.assert_frame_equal(read_notes(tmp_path / "w.csv"), notes)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("onset_s,offset_s,midi\n0.0,0.0,60\n", "zero or negative duration"),
        ("onset_s,offset_s,midi\n1.0,0.5,60\n", "zero or negative duration"),
        ("onset_s,offset_s,midi\n-0.1,0.5,60\n", "negative onset"),
        ("onset_s,offset_s,midi\n0.0,0.5,128\n", r"outside 0\.\.127"),
        ("onset_s,offset_s,midi\n0.0,0.5,-1\n", r"outside 0\.\.127"),
        ("onset_s,offset_s,midi\n0.0,0.5,60.5\n", "not an integer"),
        ("onset_s,offset_s,midi\n0.0,abc,60\n", "not a finite number"),
        ("onset_s,offset_s,midi\n0.0,,60\n", "not a finite number"),
        ("onset,offset,pitch\n0.0,0.5,60\n", "lacks column"),
        ("", "notes file is empty"),
    ],
)
def test_read_notes_errors(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "bad_notes.csv"
    p.write_text(text)
    with pytest.raises(ManifestError, match=message) as info:
        read_notes(p)
    assert "bad_notes.csv" in str(info.value)


def test_read_notes_missing(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        read_notes(tmp_path / "none.csv")
