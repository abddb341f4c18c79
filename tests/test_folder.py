"""Tests of the folder adapter: a tiny multitrack folder written here (stereo 44.1 kHz, CSV and MIDI
labels), and one test per kind of bad input."""

from __future__ import annotations

import logging
import shutil
import unicodedata
from collections.abc import Callable
from pathlib import Path

import mido
import numpy as np
import pandas as pd
import pretty_midi
import pytest
import soundfile as sf

from slotmpe.audio import (
    AudioError,
    load_audio,
    readable_audio_extensions,
    unreadable_audio_extensions,
)
from slotmpe.constants import UNKNOWN_FAMILY
from slotmpe.data import FeatureCacheError, check_family_labels
from slotmpe.datasets import build_dataset
from slotmpe.datasets.folder import build_folder, canonical_instrument
from slotmpe.datasets.ids import is_safe_id, name_hash, safe_id, unique_ids
from slotmpe.datasets.manifest import (
    ManifestError,
    read_manifest,
    read_notes,
    resolve_path,
    validate_manifest,
)
from slotmpe.features import build_feature_cache
from slotmpe.targets import targets_from_rolls

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


# ------------------------------------------------------------------ issue 16: users' own data
def _mido_file(path: Path, tracks: list[list[tuple[int, mido.Message | mido.MetaMessage]]]) -> None:
    """Type-1 MIDI file (480 ticks per beat) from per-track ``(absolute tick, message)`` lists."""
    mf = mido.MidiFile(type=1, ticks_per_beat=480)
    for events in tracks:
        tr, now = mido.MidiTrack(), 0
        for tick, msg in events:
            tr.append(msg.copy(time=tick - now))
            now = tick
        mf.tracks.append(tr)
    mf.save(str(path))


def _flute_notes(out: Path) -> pd.DataFrame:
    df = read_manifest(out / "manifest.parquet")
    return read_notes(resolve_path(out, df.set_index("track_id").loc["song_a--flute", "notes_path"]))


def test_midi_tempo_on_the_note_track(tmp_path: Path) -> None:
    """Item 1: tempo 60 bpm on the note track (not track 0): ticks 480-960 are 1.0-2.0 s."""
    src = make_folder(tmp_path / "src")
    on = mido.Message("note_on", note=72, velocity=90)
    _mido_file(
        src / "song_a" / "flute.mid",
        [
            [(0, mido.MetaMessage("track_name", name="conductor"))],
            [(0, mido.MetaMessage("set_tempo", tempo=1_000_000)), (480, on), (960, on.copy(velocity=0))],
        ],
    )
    build_folder(src, tmp_path / "out", {})
    notes = _flute_notes(tmp_path / "out")
    assert notes[["onset_s", "offset_s", "midi"]].values.tolist() == [[1.0, 2.0, 72]]


def test_midi_overlapping_same_pitch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Item 2: on 0 s, on 0.5 s, off 1 s, off 2 s -> 0-1 s and 0.5-2 s (FIFO), warning with the
    file and the count."""
    src = make_folder(tmp_path / "src")
    on, off = mido.Message("note_on", note=72, velocity=90), mido.Message("note_off", note=72)
    tempo = mido.MetaMessage("set_tempo", tempo=500_000)
    _mido_file(src / "song_a" / "flute.mid", [[(0, tempo), (0, on), (480, on), (960, off), (1920, off)]])
    with caplog.at_level(logging.WARNING):
        build_folder(src, tmp_path / "out", {})
    notes = _flute_notes(tmp_path / "out")
    assert notes[["onset_s", "offset_s"]].values.tolist() == [[0.0, 1.0], [0.5, 2.0]]
    assert any(
        "flute.mid: 1 note(s) start while a note of the same pitch" in r.getMessage()
        for r in caplog.records
    )


def test_stem_formats_and_unused_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Item 3: a stem in any format soundfile reads here is used (MP3 where libsndfile has it);
    other files of stems/ and notes matching no stem are named in a warning."""
    exts = readable_audio_extensions()
    assert {".wav", ".flac", ".ogg"} <= set(exts) and ".m4a" in unreadable_audio_extensions()
    assert (".mp3" in exts) == ("MP3" in sf.available_formats())
    src = make_folder(tmp_path / "src")
    stems = src / "song_a" / "stems"
    audio = _stereo(tmp_path / "tmp.wav", 77)
    fmt, ext = ("MP3", ".mp3") if ".mp3" in exts else ("OGG", ".ogg")
    sf.write(stems / f"oboe{ext}", audio, SR, format=fmt)
    _csv(stems / "oboe.csv", [(0.1, 1.5, 77)])
    (stems / "readme.txt").write_text("rendered with my DAW")
    (stems / ".DS_Store").write_bytes(b"\0")
    _csv(src / "song_a" / "clarinet.csv", [(0.0, 1.0, 60)])
    with caplog.at_level(logging.WARNING):
        df = read_manifest(build_folder(src, tmp_path / "out", {}))
    oboe = df.set_index("track_id").loc["song_a--oboe"]
    assert oboe["instrument"] == "oboe" and oboe["stem_path"].endswith(f"oboe{ext}")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "stems: 1 file(s) not used (no readable stem audio of that name): readme.txt" in text
    assert "song_a: 1 notes file(s) match no stem in stems/ and are not used: clarinet.csv" in text
    assert ".DS_Store" not in text


def test_open_instrument_vocabulary(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Item 4: any instrument name with a family (or none for the stem task), drums/percussion
    aliases, original spelling kept; family tasks refuse sources without a family, with a message."""
    src = make_folder(tmp_path / "src")
    for name, midi in (("saw_lead", 60), ("Rhodes 2", 64)):
        _stereo(src / "song_c" / "stems" / f"{name}.wav", midi)
        _csv(src / "song_c" / f"{name}.csv", [(0.0, 1.0, midi)])
    (src / "metadata.csv").write_text(
        "track,instrument,family,pitched\n"
        "lead,synth_lead,keyboards,true\npad,warm_pad,,\nsaw_lead,,keyboards,\n"
        "drums,drums,drums,\n"
    )
    with caplog.at_level(logging.WARNING):
        df = read_manifest(build_folder(src, tmp_path / "out", {}))
    got = df.set_index("track_id")[["instrument", "family", "pitched"]].T.to_dict("list")
    assert got["song_c--saw_lead"] == ["saw_lead", "keyboards", True]
    assert got["song_c--pad"] == ["warm_pad", "unknown", True]
    assert got["song_c--Rhodes_2"] == ["Rhodes", "unknown", True]
    assert got["song_a--drums"] == ["drums", "percussion", False]
    assert any(
        "'Rhodes', 'warm_pad' are outside the built-in vocabulary and have no family" in r.getMessage()
        and "family-level experiments (1b, 1c) will refuse" in r.getMessage()
        for r in caplog.records
    )
    # a real contradiction is still an error
    (src / "metadata.csv").write_text("track,instrument,family\nlead,violin,brass\npad,pad,\n")
    with pytest.raises(ManifestError, match="family 'brass' contradicts instrument 'violin'"):
        build_folder(src, tmp_path / "out2", {})


def test_unknown_family_downstream(tmp_path: Path) -> None:
    """Item 4 downstream: a source without a family is in the mixture and source targets, in no
    family roll, and family-level experiments refuse the cache naming the tracks."""
    tg = targets_from_rolls(np.ones((2, 72, 5), dtype=bool), ["strings", UNKNOWN_FAMILY])
    assert tg.family_rolls.sum() == 72 * 5 and tg.source_rolls.sum() == 2 * 72 * 5
    src = make_folder(tmp_path / "src")
    (src / "metadata.csv").write_text(
        "track,instrument,family\nlead,synth_lead,keyboards\npad,warm_pad,\n"
    )
    (src / "split.csv").write_text("piece,split\nsong_a,train\nsong_b,test\nsong_c,val\n")
    manifest = build_folder(src, tmp_path / "out", {})
    feats = tmp_path / "features"
    build_feature_cache(manifest, feats, strict=True)
    check_family_labels(feats, ("train", "test"), "experiment 1b")  # song_a/song_b: all known
    with pytest.raises(FeatureCacheError, match=r"experiment 1c is a family-level task .* 1 source"
                       r"\(s\) of the val split\(s\) have none, e.g. \['song_c--pad'\]"):
        check_family_labels(feats, ("val",), "experiment 1c")


def test_unicode_names(tmp_path: Path) -> None:
    """Item 5: non-Latin piece and track names keep readable, unique ids; colliding names get a
    hash suffix; split.csv and metadata match NFC/NFD spellings."""
    src = tmp_path / "src"
    for piece, tracks in (("弦楽四重奏", ("ヴァイオリン", "チェロ")), ("Café", ("a b", "a_b"))):
        d = src / unicodedata.normalize("NFD", piece)  # as macOS writes file names
        for k, name in enumerate(tracks):
            _stereo(d / "stems" / f"{name}.wav", 60 + k)
            _csv(d / f"{name}.csv", [(0.0, 1.0, 60 + k)])
    (src / "split.csv").write_text("piece,split\n弦楽四重奏,train\nCafé,test\n")
    (src / "metadata.csv").write_text("track,instrument,family\nチェロ,cello,\n")
    df = read_manifest(build_folder(src, tmp_path / "out", {}))
    ids = dict(zip(df["track_id"], df["instrument"], strict=True))
    h = name_hash
    assert ids == {
        "弦楽四重奏--ヴァイオリン": "ヴァイオリン",
        "弦楽四重奏--チェロ": "cello",
        f"Café--a_b-{h('a b')}": "a b",
        f"Café--a_b-{h('a_b')}": "a_b",
    }
    assert df.groupby("piece_id")["split"].first().to_dict() == {"弦楽四重奏": "train", "Café": "test"}
    assert unique_ids(["x", "X", "♪"]) == {"x": f"x-{h('x')}", "X": f"X-{h('X')}", "♪": f"x-{h('♪')}"}
    assert safe_id("../etc/passwd") == "etc_passwd" and is_safe_id("ヴァイオリン")
    assert not is_safe_id("a/b") and not is_safe_id("_a")


def test_duplicate_track_id_names_files(tmp_path: Path) -> None:
    """Item 5: a duplicate track id in a manifest names the files of both rows."""
    src = make_folder(tmp_path / "src")
    df = read_manifest(build_folder(src, tmp_path / "out", {}))
    df.loc[1, "track_id"] = df.loc[0, "track_id"]
    with pytest.raises(ManifestError, match=r"duplicate track_id .*rows for \[.*\.wav', .*\.wav'\]"):
        validate_manifest(df, tmp_path / "out")
