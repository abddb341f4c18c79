"""Real-dataset adapters end to end: tiny archives in each dataset's true layout, built here, served
by a loopback HTTP server (127.0.0.1), downloaded, verified, unpacked and turned into manifests."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from snakemake.utils import validate

from slotmpe.config import apply_profile
from slotmpe.datasets.manifest import (
    ManifestError,
    read_manifest,
    read_notes,
    resolve_path,
    validate_manifest,
)
from slotmpe.datasets.mshoxxdb import build_mshoxxdb, label_instrument, normalise
from slotmpe.datasets.musicnet import build_musicnet
from slotmpe.datasets.slakh import build_slakh, gm_program_instrument
from slotmpe.datasets.urmp import (
    URMP_PIECES,
    build_urmp,
    default_split_path,
    f0_to_notes,
    load_split,
    make_split,
    parse_piece,
    piece_codes,
    piece_title,
)
from slotmpe.download import ensure_dataset

try:
    from httpserver import LoopbackServer, make_tar_gz, make_zip, sha256_of
except ImportError:  # pragma: no cover - tests run as a package
    from tests.httpserver import LoopbackServer, make_tar_gz, make_zip, sha256_of

REPO = Path(__file__).resolve().parents[1]
SR = 8000
FAST = {"backoff": 0.01, "timeout": 10.0, "progress": False}


# ------------------------------------------------------------------------------------------ helpers
def tone(midi: float, seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 440.0 * 2 ** ((midi - 69) / 12) * t)).astype(np.float32)


def audio_bytes(x: np.ndarray, fmt: str, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def midi_bytes(notes: list[tuple[float, float, int]], program: int = 0, is_drum: bool = False) -> bytes:
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program, is_drum=is_drum)
    for s, e, p in notes:
        inst.notes.append(pretty_midi.Note(velocity=90, pitch=p, start=s, end=e))
    pm.instruments.append(inst)
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def download_and_build(
    tmp_path: Path, name: str, filename: str, archive: bytes,
    build: Callable[[Path, Path, dict], Path], cfg: dict,
) -> pd.DataFrame:
    """Serve ``archive`` on loopback, ensure_dataset it (sha256-checked), build and read the manifest."""
    with LoopbackServer({f"/records/{filename}": archive}) as srv:
        dscfg = {"type": name, "url": srv.url(f"/records/{filename}"),
                 "sha256": sha256_of(archive), **cfg}
        raw = ensure_dataset(dscfg, tmp_path / "raw", **FAST)
    out = tmp_path / "data" / name
    path = build(raw, out, dscfg)
    assert path == out / "manifest.parquet"
    return read_manifest(path)


def notes_of(df: pd.DataFrame, track_id: str, root: Path) -> pd.DataFrame:
    row = df.set_index("track_id").loc[track_id]
    return read_notes(resolve_path(root, row["notes_path"]))


# --------------------------------------------------------------------------------------------- URMP
def test_committed_urmp_split_is_the_documented_procedure() -> None:
    data = json.loads(default_split_path().read_text())
    assert len(URMP_PIECES) == 44 and sum(len(piece_codes(p)) for p in URMP_PIECES) == 149
    fresh = make_split(URMP_PIECES, seed=data["seed"])
    assert {k: fresh[k] for k in ("train", "val", "test")} == {k: data[k] for k in ("train", "val", "test")}
    split = load_split()
    assert sorted(split) == sorted(URMP_PIECES)
    assert [sum(s == x for s in split.values()) for x in ("train", "val", "test")] == [30, 7, 7]
    for part in ("val", "test"):
        assert sum(len(piece_codes(p)) >= 3 for p in data[part]) >= 2
    titles: dict[str, set[str]] = {}
    for p, s in split.items():
        titles.setdefault(piece_title(p), set()).add(s)
    assert all(len(v) == 1 for v in titles.values()), "pieces sharing a title must share a split"


def test_f0_to_notes_follows_the_f0_track() -> None:
    t = np.arange(100) * 0.01
    f0 = np.zeros(100)
    f0[20:50] = 440.0
    f0[50:60] = 445.0  # still MIDI 69: same note
    f0[60:80] = 493.88  # MIDI 71
    f0[85:90] = 220.0
    notes = f0_to_notes(t, f0)
    assert notes["midi"].tolist() == [69, 71, 57]
    np.testing.assert_allclose(notes["onset_s"], [0.20, 0.60, 0.85])
    np.testing.assert_allclose(notes["offset_s"], [0.60, 0.80, 0.90])


def _urmp_piece(piece: str, file_codes: list[str] | None = None, skip_f0: set[int] = frozenset()) -> dict[str, bytes]:
    """Files of one URMP piece folder in the archive's naming (Dataset/NN_Title_codes/...)."""
    title, codes = parse_piece(piece)
    file_codes = file_codes or codes
    nn_title = f"{piece.split('_')[0]}_{title}"
    dur = 1.0
    members: dict[str, bytes] = {}
    mix = np.zeros(int(dur * SR), dtype=np.float32)
    for k, code in enumerate(file_codes, 1):
        midi = 55 + 2 * k
        x = np.concatenate([np.zeros(int(0.2 * SR), np.float32), tone(midi, 0.6), np.zeros(int(0.2 * SR), np.float32)])
        mix += x
        members[f"Dataset/{piece}/AuSep_{k}_{code}_{nn_title}.wav"] = audio_bytes(x, "WAV")
        t = np.arange(100) * 0.01
        f0 = np.where((t >= 0.195) & (t < 0.795), 440.0 * 2 ** ((midi - 69) / 12), 0.0)
        if k not in skip_f0:
            members[f"Dataset/{piece}/F0s_{k}_{code}_{nn_title}.txt"] = "".join(
                f"{a:.4f}\t{b:.4f}\n" for a, b in zip(t, f0, strict=True)
            ).encode()
        hz = 440.0 * 2 ** ((midi - 69) / 12)
        members[f"Dataset/{piece}/Notes_{k}_{code}_{nn_title}.txt"] = f"0.2000\t{hz:.3f}\t0.3000\n0.5000\t{hz:.3f}\t0.3000\n".encode()
    members[f"Dataset/{piece}/AuMix_{piece}.wav"] = audio_bytes(mix / 3, "WAV")
    return members


def test_urmp_download_to_manifest(tmp_path: Path) -> None:
    members = {
        **_urmp_piece("01_Jupiter_vn_vc"),
        # the archive's own typo: part 3 of 15_Surprise is named "tpt" but the folder says tbn
        **_urmp_piece("15_Surprise_tpt_tpt_tbn", file_codes=["tpt", "tpt", "tpt"]),
        **_urmp_piece("13_Hark_vn_vn_va", skip_f0={2}),
    }
    archive = make_tar_gz(members)
    df = download_and_build(tmp_path, "urmp", "99348", archive, build_urmp, {"allow_missing_pieces": True})
    root = tmp_path / "data" / "urmp"
    assert len(df) == 8 and set(df["piece_id"]) == {"01_Jupiter_vn_vc", "15_Surprise_tpt_tpt_tbn", "13_Hark_vn_vn_va"}
    split = load_split()
    for piece, g in df.groupby("piece_id"):
        assert set(g["split"]) == {split[piece]}
    by_id = df.set_index("track_id")
    assert by_id.loc["15_Surprise_tpt_tpt_tbn_3_tbn", "instrument"] == "trombone"
    assert by_id.loc["15_Surprise_tpt_tpt_tbn_3_tbn", "family"] == "brass"
    assert by_id.loc["13_Hark_vn_vn_va_3_va", "instrument"] == "viola"
    assert by_id["pitched"].all() and (by_id["stem_path"] != "").all()
    # f0 targets: one note from the first voiced frame to the last + one hop
    n = notes_of(df, "01_Jupiter_vn_vc_1_vn", root)
    assert n["midi"].tolist() == [57]
    np.testing.assert_allclose([n["onset_s"].iloc[0], n["offset_s"].iloc[0]], [0.20, 0.80], atol=1e-6)
    # no F0s file for part 2 of Hark: the Notes file is the fallback (two notes)
    n = notes_of(df, "13_Hark_vn_vn_va_2_vn", root)
    assert n["midi"].tolist() == [59, 59]
    np.testing.assert_allclose(n["onset_s"], [0.2, 0.5])
    # targets: notes uses the Notes files everywhere
    out2 = tmp_path / "data" / "urmp_notes"
    build_urmp(tmp_path / "raw" / "urmp", out2, {"allow_missing_pieces": True, "targets": "notes"})
    assert len(notes_of(read_manifest(out2 / "manifest.parquet"), "01_Jupiter_vn_vc_1_vn", out2)) == 2


def test_urmp_partial_archive_is_an_error_by_default(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for name, data in _urmp_piece("01_Jupiter_vn_vc").items():
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        (raw / name).write_bytes(data)
    with pytest.raises(ManifestError, match="allow_missing_pieces"):
        build_urmp(raw, tmp_path / "out", {})
    assert not (tmp_path / "out" / "manifest.parquet").exists()


# ----------------------------------------------------------------------------------------- mshoxxDB
MSHOXX_PIECES = {  # folder name (v1.1 spelling) -> {label: (midi pitch or None for drums)}
    "Beneath_v1": {"bass": 40, "mel1": 64, "choir": 60, "drums": None},
    "Güte_des_Geschicks_v1": {"mel8bit": 72, "bassline1": 36, "drums": None},
    "Uridium_2_v1": {"piano": 62, "organ": 55, "strings": 67},
}


def _mshoxx_members(root: str, v12: bool) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    dur = 1.0
    for folder, tracks in MSHOXX_PIECES.items():
        folder_name = folder.replace("ü", "ue") if v12 else folder  # v1.2 fixed the umlaut
        file_base = folder.replace("ü", "ue")  # the files already say "Guete" (only the folder has ü)
        mix = np.zeros(int(dur * SR), dtype=np.float32)
        for label, pitch in tracks.items():
            x = tone(pitch or 30, dur) if pitch else (np.random.default_rng(0).standard_normal(int(dur * SR)) * 0.1).astype(np.float32)
            mix += x
            members[f"{root}/{folder_name}/{file_base}_{label}.flac"] = audio_bytes(x, "FLAC")
            if pitch is not None:
                members[f"{root}/{folder_name}/{file_base}_{label}.mid"] = midi_bytes([(0.1, 0.5, pitch), (0.5, 1.4, pitch + 2)])
        members[f"{root}/{folder_name}/{file_base}.flac"] = audio_bytes(mix / 4, "FLAC")
    return members


def test_mshoxxdb_v11_download_to_manifest(tmp_path: Path) -> None:
    root = "mshoxxDB_v1.1"
    members = _mshoxx_members(root, v12=False)
    members[f"{root}/splits/ms12.json"] = json.dumps(
        {"train": ["Beneath_v1.flac"], "valid": ["Uridium_2_v1"], "test": ["Guete_des_Geschicks_v1/Guete_des_Geschicks_v1_mel8bit.flac"]}
    ).encode()
    members[f"{root}/splits/ms14_fold1.json"] = json.dumps({"train": [], "test": []}).encode()
    df = download_and_build(tmp_path, "mshoxxdb", "mshoxxDB_v1.1.zip", make_zip(members), build_mshoxxdb, {})
    out = tmp_path / "data" / "mshoxxdb"
    assert len(df) == 10
    splits = df.groupby("piece_id")["split"].first().to_dict()
    assert splits == {"Beneath": "train", "Uridium_2": "val", "Guete_des_Geschicks": "test"}
    by_id = df.set_index("track_id")
    assert by_id.loc["Beneath__bass", "instrument"] == "synth_bass"
    assert by_id.loc["Beneath__choir", "instrument"] == "vocals"
    assert by_id.loc["Guete_des_Geschicks__mel8bit", "instrument"] == "chiptune"
    assert by_id.loc["Uridium_2__strings", "family"] == "strings"
    drums = by_id[by_id["instrument"] == "drums"]
    assert len(drums) == 2 and not drums["pitched"].any() and (drums["notes_path"] == "").all()
    assert (drums["family"] == "percussion").all()
    n = notes_of(df, "Beneath__mel1", out)
    assert n["midi"].tolist() == [64, 66]
    assert n["offset_s"].max() <= 1.0 + 1e-9  # the last note is cut at the end of the audio


def test_mshoxxdb_v12_piece_ids_and_metadata(tmp_path: Path) -> None:
    root = "mshoxxDB_v1.2"
    members = _mshoxx_members(root, v12=True)
    meta = io.StringIO()
    w = csv.writer(meta)
    w.writerow(["piece_id", "title", "artist", "genres", "bpm_min", "bpm_max", "duration_seconds", "time_signature"])
    w.writerow([7, "Beneath", "mshoxx", "Chillout", 84, 84, 1.0, "4/4"])
    w.writerow([11, "Guete des Geschicks", "mshoxx", "Game", 120, 120, 1.0, "4/4"])
    w.writerow([13, "Uridium 2", "mshoxx", "House", 129, 129, 1.0, "4/4"])
    members[f"{root}/metadata.csv"] = meta.getvalue().encode()
    members[f"{root}/ms12.json"] = json.dumps({"train": [7, 11], "validation": [], "test": [13]}).encode()
    # the split's validation part is empty: filled with one seeded train piece (fault 5's fallback)
    df = download_and_build(tmp_path, "mshoxxdb", "mshoxxDB_v1.2.tar.gz", make_tar_gz(members),
                            build_mshoxxdb, {"fill_empty_splits": True})
    splits = df.groupby("piece_id")["split"].first().to_dict()
    assert sorted(splits) == ["Beneath", "Guete_des_Geschicks", "Uridium_2"]
    assert splits["Uridium_2"] == "test"
    assert sorted([splits["Beneath"], splits["Guete_des_Geschicks"]]) == ["train", "val"]


def test_mshoxxdb_label_mapping() -> None:
    here = Path("x/Beneath_v1_kazoo.flac")
    assert label_instrument("bassline2", here, {}) == "synth_bass"
    assert label_instrument("Drums", here, {}) == "drums"
    assert label_instrument("piano", here, {}) == "piano"
    with pytest.raises(ManifestError, match="Beneath_v1_kazoo.flac.*kazoo"):
        label_instrument("kazoo", here, {})
    assert label_instrument("kazoo", here, {"unknown_instrument": "synth"}) == "synth"
    assert label_instrument("kazoo", here, {"instrument_map": {"kazoo": "flute"}}) == "flute"
    assert normalise("Güte_des_Geschicks_v1") == normalise("Guete des Geschicks v1")


# ----------------------------------------------------------------------------------------- MusicNet
def _musicnet_labels(rows: list[tuple[int, int, int, int]]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["start_time", "end_time", "instrument", "note", "start_beat", "end_beat", "note_value"])
    for s, e, inst, note in rows:
        w.writerow([s, e, inst, note, 0.0, 1.0, "Quarter"])
    return out.getvalue().encode()


def test_musicnet_download_to_manifest(tmp_path: Path) -> None:
    sr = 44100
    members: dict[str, bytes] = {}
    for folder, rid, rows in (
        ("train", 1727, [(4410, 22050, 1, 60), (8820, 30000, 41, 76), (22050, 44100, 1, 64)]),  # MuN-10 train
        ("train", 1729, [(0, 20000, 43, 48)]),  # MuN-10 val
        ("test", 1759, [(1000, 50000, 1, 72)]),  # MuN-10 test; ends after the audio: clipped
    ):
        members[f"musicnet/{folder}_data/{rid}.wav"] = audio_bytes(tone(60, 1.0, sr), "WAV", sr)
        members[f"musicnet/{folder}_labels/{rid}.csv"] = _musicnet_labels(rows)
    df = download_and_build(
        tmp_path, "musicnet", "musicnet.tar.gz", make_tar_gz(members), build_musicnet, {"allow_missing_pieces": True}
    )
    out = tmp_path / "data" / "musicnet"
    assert len(df) == 4 and (df["stem_path"] == "").all()
    by_id = df.set_index("track_id")
    assert by_id.loc["1727_Schubert_OP114_PianoQuintet__violin", "split"] == "train"
    assert by_id.loc["1729_Schubert_OP114_PianoQuintet__cello", "split"] == "val"
    assert by_id.loc["1759_Schubert_D958_PianoSonata__piano", "split"] == "test"
    assert df.groupby("piece_id")["mix_path"].nunique().eq(1).all()
    n = notes_of(df, "1727_Schubert_OP114_PianoQuintet__piano", out)
    assert n["midi"].tolist() == [60, 64]
    np.testing.assert_allclose(n["onset_s"], [0.1, 0.5])
    np.testing.assert_allclose(n["offset_s"], [0.5, 1.0])
    assert notes_of(df, "1759_Schubert_D958_PianoSonata__piano", out)["offset_s"].max() <= 1.0 + 1e-9


def test_musicnet_unknown_instrument_code_names_the_file(tmp_path: Path) -> None:
    raw = tmp_path / "musicnet"
    (raw / "train_data").mkdir(parents=True)
    (raw / "train_labels").mkdir()
    sf.write(raw / "train_data" / "1727.wav", tone(60, 0.5, 44100), 44100)
    (raw / "train_labels" / "1727.csv").write_bytes(_musicnet_labels([(0, 1000, 99, 60)]))
    with pytest.raises(ManifestError, match=r"1727\.csv.*code 99"):
        build_musicnet(raw, tmp_path / "out", {"allow_missing_pieces": True})


# ------------------------------------------------------------------------------------------- Slakh
def _slakh_track(root: str, split: str, track: str, ext: str = "flac", baby: bool = False) -> dict[str, bytes]:
    """One Slakh track folder; ``baby``: BabySlakh's metadata (audio_rendered false everywhere)."""
    stems = {
        "S00": {"inst_class": "Piano", "is_drum": False, "program_num": 0, "midi_program_name": "Acoustic Grand Piano", "audio_rendered": True},
        "S01": {"inst_class": "Bass", "is_drum": False, "program_num": 33, "midi_program_name": "Electric Bass (finger)", "audio_rendered": True},
        "S02": {"inst_class": "Drums", "is_drum": True, "program_num": 0, "midi_program_name": "Drums", "audio_rendered": True},
        "S03": {"inst_class": "Strings (continued)", "is_drum": False, "program_num": 48, "midi_program_name": "String Ensemble 1", "audio_rendered": False},
    }
    lines = [f"UUID: {track.lower()}", "audio_dir: stems", "midi_dir: MIDI", "normalized: true", "stems:"]
    for sid, m in stems.items():
        lines.append(f"  {sid}:")
        for k, v in m.items():
            lines.append(f"    {k}: {json.dumps(False if baby and k == 'audio_rendered' else v)}")
    base = f"{root}/{split}/{track}" if split else f"{root}/{track}"
    members = {f"{base}/metadata.yaml": ("\n".join(lines) + "\n").encode()}
    fmt = "FLAC" if ext == "flac" else "WAV"
    mix = np.zeros(SR, dtype=np.float32)
    for sid, pitch, prog, drum in (("S00", 60, 0, False), ("S01", 36, 33, False), ("S02", 38, 0, True)):
        x = tone(pitch, 1.0)
        mix += x
        members[f"{base}/stems/{sid}.{ext}"] = audio_bytes(x, fmt)
        members[f"{base}/MIDI/{sid}.mid"] = midi_bytes([(0.0, 0.5, pitch), (0.5, 1.0, pitch + 5)], prog, drum)
    members[f"{base}/MIDI/S03.mid"] = midi_bytes([(0.0, 1.0, 60)], 48)
    members[f"{base}/mix.{ext}"] = audio_bytes(mix / 3, fmt)
    members[f"{base}/all_src.mid"] = midi_bytes([(0.0, 1.0, 60)])
    return members


def test_slakh_download_to_manifest(tmp_path: Path) -> None:
    root = "slakh2100_flac_redux"
    members: dict[str, bytes] = {}
    for split, track in (("train", "Track00001"), ("train", "Track00002"), ("validation", "Track01501"),
                         ("test", "Track01876"), ("omitted", "Track00003")):
        members.update(_slakh_track(root, split, track, ext="wav" if track == "Track01876" else "flac"))
    df = download_and_build(tmp_path, "slakh", "slakh2100_flac_redux.tar.gz", make_tar_gz(members), build_slakh, {"subset": 1})
    out = tmp_path / "data" / "slakh"
    assert df.groupby("piece_id")["split"].first().to_dict() == {
        "Track00001": "train", "Track01501": "val", "Track01876": "test"}
    by_id = df.set_index("track_id")
    assert len(df) == 9  # 3 tracks x 3 rendered sources (S03 not rendered)
    assert by_id.loc["Track00001_S00", "instrument"] == "piano"
    assert by_id.loc["Track00001_S01", "instrument"] == "electric_bass"
    assert not by_id.loc["Track00001_S02", "pitched"] and by_id.loc["Track00001_S02", "notes_path"] == ""
    assert notes_of(df, "Track00001_S01", out)["midi"].tolist() == [36, 41]
    full = build_slakh(tmp_path / "raw" / "slakh", tmp_path / "data" / "slakh_all", {})
    assert read_manifest(full)["piece_id"].nunique() == 4  # omitted/ is never used


def test_gm_program_mapping() -> None:
    assert [gm_program_instrument(p) for p in (0, 4, 6, 24, 33, 38, 40, 42, 56, 57, 65, 68, 71, 73, 81, 89)] == [
        "piano", "electric_piano", "harpsichord", "guitar", "electric_bass", "synth_bass", "violin",
        "cello", "trumpet", "trombone", "saxophone", "oboe", "clarinet", "flute", "synth_lead", "synth_pad"]
    with pytest.raises(ValueError):
        gm_program_instrument(128)


# ------------------------------------------------------------- issue 15: one test per fault
def test_urmp_titles_with_underscores_and_unused_audio_are_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Fault 1: a title with underscores is parsed from the right; unused audio is named."""
    assert parse_piece("19_Ave_Maria_ob_cl_bn") == ("Ave_Maria", ["ob", "cl", "bn"])
    assert piece_title("19_Ave_Maria_ob_cl_bn") == "Ave_Maria"
    members = {
        **_urmp_piece("19_Ave_Maria_ob_cl_bn"),
        **_urmp_piece("01_Jupiter_vn_vc"),
        **_urmp_piece("02_Sonata_vn_vn"),
        "Dataset/Supplementary/extra_take.wav": audio_bytes(tone(60, 0.2), "WAV"),
        "Dataset/20 Bad Folder Name/AuMix_20_Bad.wav": audio_bytes(tone(62, 0.2), "WAV"),
    }
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps(
        {"train": ["01_Jupiter_vn_vc"], "val": ["19_Ave_Maria_ob_cl_bn"], "test": ["02_Sonata_vn_vn"]}))
    with caplog.at_level(logging.INFO, logger="slotmpe"):
        df = download_and_build(tmp_path, "urmp", "99348", make_tar_gz(members), build_urmp,
                                {"split_file": str(split_file)})
    ave = df[df["piece_id"] == "19_Ave_Maria_ob_cl_bn"]
    assert ave["instrument"].tolist() == ["oboe", "clarinet", "bassoon"]
    assert set(ave["split"]) == {"val"} and len(df) == 7
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "extra_take.wav" in warnings and "20 Bad Folder Name" in warnings
    assert "found 3 piece folders" in caplog.text
    # every adapter logs what it found and names unused audio: Slakh with a stem not in metadata
    members = _slakh_track("slakh2100_flac_redux", "train", "Track00001")
    members |= _slakh_track("slakh2100_flac_redux", "validation", "Track01501")
    members |= _slakh_track("slakh2100_flac_redux", "test", "Track01876")
    members["slakh2100_flac_redux/train/Track00001/stems/S09.flac"] = audio_bytes(tone(50, 1.0), "FLAC")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="slotmpe"):
        download_and_build(tmp_path / "s", "slakh", "slakh.tar.gz", make_tar_gz(members), build_slakh, {})
    assert "found 3 track folders" in caplog.text
    assert "S09.flac" in " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    # MusicNet: a recording file not named by its id
    raw = tmp_path / "mn"
    names = {"train": "1727_A", "val": "1728_B", "test": "1729_C"}
    for split, name in names.items():
        folder = "test" if split == "test" else "train"
        (raw / f"{folder}_data").mkdir(parents=True, exist_ok=True)
        (raw / f"{folder}_labels").mkdir(parents=True, exist_ok=True)
        sf.write(raw / f"{folder}_data" / f"{name[:4]}.wav", tone(60, 0.5, 44100), 44100)
        (raw / f"{folder}_labels" / f"{name[:4]}.csv").write_bytes(_musicnet_labels([(0, 1000, 1, 60)]))
    sf.write(raw / "train_data" / "1727_alternate_take.wav", tone(60, 0.5, 44100), 44100)
    (tmp_path / "mn_split.json").write_text(json.dumps({k: [v] for k, v in names.items()}))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="slotmpe"):
        build_musicnet(raw, tmp_path / "mn_out", {"split_file": str(tmp_path / "mn_split.json")})
    assert "found 3 recordings" in caplog.text and "1727_alternate_take.wav" in caplog.text


def _quick_check_override() -> dict:
    """The BabySlakh quick check's ``datasets=...`` value from the README, as Snakemake parses it."""
    m = re.search(r"datasets='(\{slakh: \{type: slakh, url: [^']*babyslakh_16k[^']*\}\})'",
                  (REPO / "README.md").read_text())
    assert m, "README states the BabySlakh quick check"
    return {"datasets": yaml.load(m.group(1), Loader=yaml.BaseLoader)}


def test_babyslakh_layout_seeded_split_and_rendered_by_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Fault 2: BabySlakh's layout (no split folders, audio_rendered false everywhere) loads."""
    tracks = [f"Track{n:05d}" for n in range(1, 8)]
    members: dict[str, bytes] = {}
    for t in tracks:
        members |= _slakh_track("babyslakh_16k", "", t, ext="wav", baby=True)
    with caplog.at_level(logging.INFO, logger="slotmpe"):
        df = download_and_build(tmp_path, "slakh", "babyslakh_16k.tar.gz", make_tar_gz(members),
                                build_slakh, {})
    # rendered = the stem file exists (S00-S02), whatever the flag says; S03 has no file
    assert len(df) == 3 * len(tracks)
    assert sorted(df[df["piece_id"] == "Track00001"]["track_id"]) == [
        "Track00001_S00", "Track00001_S01", "Track00001_S02"]
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "21 source(s) say audio_rendered: false but have a stem file" in warnings
    assert "Track00001/S00" in warnings
    # a seeded split by track: every split used, the same for the same seed, documented sizes
    split = df.groupby("piece_id")["split"].first().to_dict()
    assert sorted(split) == tracks
    assert sorted(split.values()).count("val") == 1 and sorted(split.values()).count("test") == 1
    raw = tmp_path / "raw" / "slakh"
    again = read_manifest(build_slakh(raw, tmp_path / "again", {}))
    assert again.groupby("piece_id")["split"].first().to_dict() == split
    seeds = {
        tuple(sorted(read_manifest(build_slakh(raw, tmp_path / f"s{k}", {"split_seed": k}))
                     .groupby("piece_id")["split"].first().items()))
        for k in range(4)
    }
    assert len(seeds) > 1  # the seed drives the split
    # the README's one-line quick check is a valid config for the real archive on Zenodo
    override = _quick_check_override()
    cfg = apply_profile(yaml.safe_load((REPO / "config.yaml").read_text()), override)
    validate(cfg, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    entry = cfg["datasets"]["slakh"]
    assert entry["url"].startswith("https://zenodo.org/records/4603870/files/babyslakh_16k.tar.gz")
    assert entry["md5"] == "311096dc2bde7d61c97e930edbfc7f78"


def test_urmp_partial_copy_with_an_empty_validation_split(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Fault 5: an empty split is caught at manifest time (error, or the seeded fallback)."""
    split = load_split()
    train = sorted(p for p, s in split.items() if s == "train")
    train = [train[0], next(p for p in train if piece_title(p) != piece_title(train[0]))]
    test = sorted(p for p, s in split.items() if s == "test")[:1]
    raw = tmp_path / "raw"
    for piece in train + test:
        for name, data in _urmp_piece(piece).items():
            (raw / name).parent.mkdir(parents=True, exist_ok=True)
            (raw / name).write_bytes(data)
    with pytest.raises(ManifestError, match="'val' split.*empty.*fill_empty_splits"):
        build_urmp(raw, tmp_path / "out", {"allow_missing_pieces": True})
    assert not (tmp_path / "out" / "manifest.parquet").exists()
    with caplog.at_level(logging.WARNING, logger="slotmpe"):
        df = read_manifest(build_urmp(raw, tmp_path / "out", {"allow_missing_pieces": True,
                                                              "fill_empty_splits": True}))
    got = df.groupby("piece_id")["split"].first().to_dict()
    assert sorted(got.values()) == ["test", "train", "val"]
    moved = next(p for p, s in got.items() if s == "val")
    assert moved in train and f"moved ['{moved}'] from 'train'" in caplog.text
    again = read_manifest(build_urmp(raw, tmp_path / "again", {"allow_missing_pieces": True,
                                                               "fill_empty_splits": True}))
    assert again.groupby("piece_id")["split"].first().to_dict() == got  # seeded


def test_real_manifests_hold_paths_relative_to_their_folder(tmp_path: Path) -> None:
    """Fault 6: real adapters write paths relative to the manifest's folder; a data tree moves."""
    pieces = {"train": ["01_Jupiter_vn_vc"], "val": ["02_Sonata_vn_vn"], "test": ["03_Dance_fl_cl"]}
    members = {k: v for ps in pieces.values() for p in ps for k, v in _urmp_piece(p).items()}
    (tmp_path / "split.json").write_text(json.dumps(pieces))
    df = download_and_build(tmp_path / "w", "urmp", "99348", make_tar_gz(members), build_urmp,
                            {"split_file": str(tmp_path / "split.json")})
    paths = [p for col in ("stem_path", "mix_path", "notes_path") for p in df[col] if p]
    assert paths and not any(Path(p).is_absolute() for p in paths)
    assert all(p.startswith("../../raw/urmp/") for p in df["mix_path"])
    assert all(p.startswith("notes/") for p in df["notes_path"])
    shutil.move(tmp_path / "w", tmp_path / "moved")  # data/ and raw/ move together
    moved = read_manifest(tmp_path / "moved" / "data" / "urmp" / "manifest.parquet")
    pd.testing.assert_frame_equal(moved, df)
    # an absolute path is refused on write and on read, naming the row and column
    bad = df.copy()
    bad.loc[0, "stem_path"] = str(tmp_path / "x.wav")
    with pytest.raises(ManifestError, match="row 0: column 'stem_path'.*absolute"):
        validate_manifest(bad, tmp_path, check_files=False)
    bad.to_parquet(tmp_path / "old.parquet")
    with pytest.raises(ManifestError, match="old.parquet.*absolute"):
        read_manifest(tmp_path / "old.parquet")
