"""Tests of the folder adapter: a tiny multitrack folder written here (stereo 44.1 kHz, CSV and MIDI
labels), and one test per kind of bad input."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pretty_midi
import pytest
import soundfile as sf

from slotmpe.audio import AudioError, load_audio
from slotmpe.datasets import build_dataset
from slotmpe.datasets.folder import build_folder, canonical_instrument
from slotmpe.datasets.manifest import ManifestError, read_manifest, read_notes, resolve_path

SR = 44_100
DUR = 2.0


def _stereo(path: Path, midi: float | None, seconds: float = DUR, seed: int = 0) -> np.ndarray:
    """Write a stereo 44.1 kHz file: a tone at ``midi`` (or noise bursts for None); returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    if midi is None:
        x = np.random.default_rng(seed).standard_normal(len(t)) * (np.sin(2 * np.pi * 2 * t) > 0.9)
    else:
        x = np.sin(2 * np.pi * 440.0 * 2 ** ((midi - 69) / 12) * t)
    audio = 0.2 * np.stack([x, 0.5 * x], axis=1).astype(np.float32)
    sf.write(path, audio, SR, subtype="PCM_24")
    return audio


def _csv(path: Path, rows: list[tuple[float, float, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["onset_s", "offset_s", "midi"]).to_csv(path, index=False)


def _mid(path: Path, rows: list[tuple[float, float, int]], drums: bool = False) -> None:
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=73, is_drum=drums)
    inst.notes = [pretty_midi.Note(velocity=90, pitch=m, start=a, end=b) for a, b, m in rows]
    pm.instruments.append(inst)
    pm.write(str(path))


FLUTE_NOTES = [(0.0, 0.5, 72), (0.5, 1.5, 74), (1.5, 1.9, 76)]


def make_folder(root: Path) -> Path:
    """Three pieces: summed mix + CSV + MIDI + drums; given mix + notes/ folder; metadata.csv."""
    a = root / "song_a"
    _stereo(a / "stems" / "violin_1.wav", 69)
    _csv(a / "violin_1.csv", [(0.0, 1.0, 69), (1.0, 1.95, 69)])
    _stereo(a / "stems" / "flute.wav", 72)
    _mid(a / "flute.mid", FLUTE_NOTES)
    _stereo(a / "stems" / "drums.wav", None)
    b = root / "song_b"
    s1 = _stereo(b / "stems" / "Cello 2.wav", 48)
    s2 = _stereo(b / "stems" / "vn.wav", 76)
    sf.write(b / "mix.wav", s1 + s2, SR, subtype="FLOAT")
    _csv(b / "notes" / "Cello 2.csv", [(0.1, 1.9, 48)])
    _csv(b / "notes" / "vn.csv", [(0.1, 1.9, 76)])
    c = root / "song_c"
    _stereo(c / "stems" / "lead.wav", 60)
    _mid(c / "stems" / "lead.mid", [(0.0, 1.0, 60)])
    _stereo(c / "stems" / "pad.wav", 64)
    _csv(c / "pad.csv", [(0.0, 1.0, 64)])
    (root / "metadata.csv").write_text(
        "track,instrument,family,pitched\nlead,synth_lead,keyboards,true\npad,synth pad,,\n"
    )
    return root


def test_folder_builds_valid_manifest(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src")
    out = tmp_path / "out"
    manifest = build_dataset("mine", {"type": "folder", "path": str(src)}, out, seed=0)
    df = read_manifest(manifest)
    assert set(df["dataset"]) == {"mine"}
    assert sorted(df["piece_id"].unique()) == ["song_a", "song_b", "song_c"]
    inst = dict(zip(df["track_id"], df["instrument"], strict=True))
    assert inst["song_a--violin_1"] == "violin" and inst["song_a--flute"] == "flute"
    assert inst["song_b--Cello_2"] == "cello" and inst["song_b--vn"] == "violin"
    assert inst["song_c--lead"] == "synth_lead" and inst["song_c--pad"] == "synth_pad"
    drums = df[df["track_id"] == "song_a--drums"].iloc[0]
    assert not drums["pitched"] and drums["notes_path"] == "" and drums["family"] == "percussion"
    assert set(df["split"]) <= {"train", "val", "test"}
    assert {"val", "test"} <= set(df["split"])
    assert df["duration_s"].tolist() == pytest.approx([DUR] * len(df))
    # MIDI labels converted to CSV with the same notes
    flute = read_notes(
        resolve_path(out, df.set_index("track_id").loc["song_a--flute", "notes_path"])
    )
    assert flute["midi"].tolist() == [m for *_, m in FLUTE_NOTES]
    np.testing.assert_allclose(flute["onset_s"], [a for a, _, _ in FLUTE_NOTES], atol=1e-3)
    np.testing.assert_allclose(flute["offset_s"], [b for _, b, _ in FLUTE_NOTES], atol=1e-3)
    # originals are referenced in place; the missing mix is the sum of the (mono) stems
    a = df[df["piece_id"] == "song_a"]
    assert sorted(resolve_path(out, p).resolve() for p in a["stem_path"]) == sorted(
        (src / "song_a" / "stems").resolve().glob("*.wav")
    )
    mix, sr = sf.read(resolve_path(out, a["mix_path"].iloc[0]), dtype="float32")
    assert sr == SR and mix.ndim == 1
    stems = [load_audio(resolve_path(out, p), sr=None)[0] for p in a["stem_path"]]
    np.testing.assert_allclose(mix, np.sum(stems, axis=0), atol=1e-5)
    # the feature step reads anything at 16 kHz mono
    x16, sr16 = load_audio(resolve_path(out, df["stem_path"].iloc[0]))
    assert sr16 == 16_000 and x16.ndim == 1 and len(x16) == int(DUR * 16_000)


def test_split_csv_and_seeded_split(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src")
    auto1 = read_manifest(build_folder(src, tmp_path / "o1", {"seed": 1}))
    auto2 = read_manifest(build_folder(src, tmp_path / "o2", {"seed": 1}))
    pd.testing.assert_series_equal(auto1["split"], auto2["split"])
    (src / "split.csv").write_text("piece,split\nsong_a,test\nsong_b,train\nsong_c,val\n")
    df = read_manifest(build_folder(src, tmp_path / "o3", {}))
    assert df.groupby("piece_id")["split"].first().to_dict() == {
        "song_a": "test",
        "song_b": "train",
        "song_c": "val",
    }


def test_canonical_instrument() -> None:
    assert canonical_instrument("Violin 2") == "violin"
    assert canonical_instrument("tpt") == "trumpet"
    assert canonical_instrument("double-bass") == "double_bass"
    assert canonical_instrument("kazoo") is None


def _rm(path: Path) -> None:
    path.unlink()


def _only_drums(root: Path) -> None:
    for p in (root / "song_b" / "stems").glob("*.wav"):
        p.unlink()
    _stereo(root / "song_b" / "stems" / "drums.wav", None)


def _no_stems(root: Path) -> None:
    for p in (root / "song_c" / "stems").glob("*.wav"):
        p.unlink()


BadCase = tuple[Callable[[Path], None], type[Exception], str]
BAD_INPUT: dict[str, BadCase] = {
    "unknown family in metadata": (
        lambda r: (r / "metadata.csv").write_text(
            "track,instrument,family\nlead,theremin,electronics\npad,synth_pad,\n"
        ),
        ManifestError,
        r"metadata\.csv \(track 'lead'\): family 'electronics' is not one of brass, keyboards",
    ),
    "pitched percussion": (
        lambda r: (r / "metadata.csv").write_text(
            "track,instrument,family,pitched\nlead,timpani,drums,true\npad,synth_pad,,\n"
        ),
        ManifestError,
        r"\(track 'lead'\): instrument 'timpani' of family 'percussion' cannot be pitched",
    ),
    "unreadable stem format": (
        lambda r: (r / "song_a" / "stems" / "oboe.m4a").write_bytes(b"\0\0\0 ftypM4A "),
        ManifestError,
        r"stems/oboe\.m4a: stem audio \(its notes would be missing from every target\) in a "
        r"format soundfile .* cannot read",
    ),
    "two stems of one name": (
        lambda r: _stereo(r / "song_a" / "stems" / "flute.flac", 72),
        ManifestError,
        r"flute\.(wav|flac): two stems named 'flute' \(flute\.(wav|flac) and flute\.(wav|flac)\)",
    ),
    "family contradicts instrument": (
        lambda r: (r / "metadata.csv").write_text(
            "track,instrument,family\nlead,synth_lead,brass\npad,synth_pad,\n"
        ),
        ManifestError,
        "family 'brass' contradicts",
    ),
    "missing notes file": (
        lambda r: _rm(r / "song_a" / "violin_1.csv"),
        ManifestError,
        r"violin_1\.wav: pitched stem has no notes file",
    ),
    "stems of different lengths": (
        lambda r: _stereo(r / "song_a" / "stems" / "flute.wav", 72, seconds=3.0),
        ManifestError,
        r"stems of different lengths in .*song_a",
    ),
    "notes past the end of the audio": (
        lambda r: _csv(r / "song_a" / "violin_1.csv", [(0.0, 1.0, 69), (1.5, 4.0, 69)]),
        ManifestError,
        r"violin_1\.csv: a note ends at 4\.000 s, past the end of the audio",
    ),
    "zero duration": (
        lambda r: _csv(r / "song_a" / "violin_1.csv", [(0.5, 0.5, 69)]),
        ManifestError,
        r"violin_1\.csv: row 2: zero or negative duration",
    ),
    "negative duration": (
        lambda r: _csv(r / "song_b" / "notes" / "vn.csv", [(1.0, 0.5, 76)]),
        ManifestError,
        r"vn\.csv: row 2: zero or negative duration",
    ),
    "MIDI pitch outside 0..127": (
        lambda r: _csv(r / "song_b" / "notes" / "vn.csv", [(0.1, 1.0, 130)]),
        ManifestError,
        r"vn\.csv: row 2: MIDI pitch outside 0\.\.127",
    ),
    "unreadable audio": (
        lambda r: (r / "song_c" / "stems" / "pad.wav").write_bytes(b"RIFF nonsense" * 10),
        AudioError,
        r"pad\.wav: cannot read audio",
    ),
    "empty audio": (
        lambda r: sf.write(r / "song_c" / "stems" / "pad.wav", np.zeros((0, 2), np.float32), SR),
        AudioError,
        r"pad\.wav: audio is empty",
    ),
    "piece with no pitched stem": (
        _only_drums,
        ManifestError,
        r"song_b: piece has no pitched stem",
    ),
    "drum-only MIDI for a pitched stem": (
        lambda r: _mid(r / "song_a" / "flute.mid", FLUTE_NOTES, drums=True),
        ManifestError,
        r"flute\.mid: MIDI file holds only drum notes",
    ),
    "bad split name": (
        lambda r: (r / "split.csv").write_text(
            "piece,split\nsong_a,dev\nsong_b,train\nsong_c,val\n"
        ),
        ManifestError,
        r"split\.csv: row 2: split 'dev'",
    ),
    "piece missing from split.csv": (
        lambda r: (r / "split.csv").write_text("piece,split\nsong_a,test\nsong_b,train\n"),
        ManifestError,
        r"split\.csv: no split given for piece\(s\) \['song_c'\]",
    ),
    "piece folder without stems": (
        _no_stems,
        ManifestError,
        r"song_c/stems: no stem audio files",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_errors(tmp_path: Path, case: str) -> None:
    src = make_folder(tmp_path / "src")
    damage, exc, pattern = BAD_INPUT[case]
    damage(src)
    with pytest.raises(exc, match=pattern):
        build_folder(src, tmp_path / "out", {})
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_too_few_pieces(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src")
    shutil.rmtree(src / "song_c")
    with pytest.raises(ManifestError, match="too few for an automatic"):
        build_folder(src, tmp_path / "out", {})
    (src / "split.csv").write_text("piece,split\nsong_a,train\nsong_b,test\n")
    assert read_manifest(build_folder(src, tmp_path / "out", {}))["piece_id"].nunique() == 2
