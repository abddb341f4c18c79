"""Tests of the embedded datasets (chamber, electro): labels vs audio, mix = sum of stems, splits.

The two tiny datasets are built once per test session (module-scoped fixture); parsed scores are
cached in a shared folder so the determinism test only re-renders.
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from slotmpe.constants import FAMILIES, SAMPLE_RATE
from slotmpe.datasets import build_dataset
from slotmpe.datasets.embedded import build_chamber, work_of_piece
from slotmpe.datasets.manifest import read_manifest, read_notes, resolve_path
from slotmpe.datasets.scores import TempoMap, _merge_notes, work_of
from slotmpe.datasets.splits import PieceInfo, assign_splits

TINY = {
    "minutes": 1.0,
    "excerpt_seconds": 8.0,
    "max_pieces_per_work": 1,
    "max_score_kb": 40,
}
TINY_ELECTRO = {**TINY, "categories": {"chorale": 0.6, "madrigal": 0.4}}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("embedded")
    cache = base / "cache"
    chamber = build_chamber(base / "chamber", {**TINY, "cache_dir": str(cache)}, seed=0)
    electro = build_dataset(
        "electro", {"type": "electro", **TINY_ELECTRO, "cache_dir": str(cache)}, base / "electro", 0
    )
    return {"chamber": chamber, "electro": electro, "cache": cache, "base": base}


def _pitch_agreement(
    audio: np.ndarray, notes: pd.DataFrame, shift: int = 0, hop: int = 256
) -> tuple[int, int]:
    """(frames within a semitone of the label, voiced frames judged) on single-note stretches.

    A note is judged if no other note of the stem overlaps it and it lasts >= 0.2 s; its frames from
    50 ms after the onset to 40 ms before the offset are compared with librosa's yin estimate.
    """
    f0 = librosa.yin(audio, fmin=32, fmax=2100, sr=SAMPLE_RATE, frame_length=1024, hop_length=hop)
    rms = librosa.feature.rms(y=audio, frame_length=1024, hop_length=hop)[0]
    on, off, midi = (notes[c].to_numpy() for c in ("onset_s", "offset_s", "midi"))
    good = total = 0
    for i in range(len(notes)):
        if off[i] - on[i] < 0.2:
            continue
        others = np.arange(len(notes)) != i
        if np.any(others & (on < off[i]) & (off > on[i])):
            continue
        a = int(np.ceil((on[i] + 0.05) * SAMPLE_RATE / hop))
        b = min(int(np.floor((off[i] - 0.04) * SAMPLE_RATE / hop)), len(f0) - 1)
        frames = [t for t in range(a, b + 1) if rms[t] > 1e-4]
        est = 69 + 12 * np.log2(f0[frames] / 440.0)
        good += int(np.sum(np.abs(est - (midi[i] + shift)) <= 1.0))
        total += len(frames)
    return good, total


@pytest.mark.parametrize(("name", "min_agree"), [("chamber", 0.9), ("electro", 0.75)])
def test_labels_align_with_audio(built: dict[str, Path], name: str, min_agree: float) -> None:
    root = built[name].parent
    df = read_manifest(built[name])
    good = total = wrong = 0
    per_instrument: dict[str, int] = {}
    for _, r in df[df["pitched"]].iterrows():
        audio, sr = sf.read(resolve_path(root, r["stem_path"]), dtype="float32")
        assert sr == SAMPLE_RATE and audio.ndim == 1
        notes = read_notes(resolve_path(root, r["notes_path"]))
        g, t = _pitch_agreement(audio, notes)
        w, _ = _pitch_agreement(audio, notes, shift=2)  # the same estimate vs wrong labels
        good, total, wrong = good + g, total + t, wrong + w
        per_instrument[r["instrument"]] = per_instrument.get(r["instrument"], 0) + t
    assert total > 500, f"too few judged frames ({total})"
    assert good / total >= min_agree, f"{name}: only {good / total:.1%} of voiced frames agree"
    assert wrong / total < 0.1  # the check can tell labels two semitones off
    assert len([k for k, v in per_instrument.items() if v > 0]) >= 3


@pytest.mark.parametrize("name", ["chamber", "electro"])
def test_mix_is_sum_of_stems(built: dict[str, Path], name: str) -> None:
    root = built[name].parent
    df = read_manifest(built[name])
    for piece, g in df.groupby("piece_id"):
        mix, sr = sf.read(resolve_path(root, g["mix_path"].iloc[0]), dtype="float32")
        info = sf.info(str(resolve_path(root, g["mix_path"].iloc[0])))
        assert sr == SAMPLE_RATE and info.subtype == "FLOAT" and info.channels == 1
        stems = [sf.read(resolve_path(root, p), dtype="float32")[0] for p in g["stem_path"]]
        assert all(len(s) == len(mix) for s in stems), piece
        np.testing.assert_allclose(np.sum(stems, axis=0), mix, atol=2e-6)
        peak = max(np.abs(mix).max(), max(np.abs(s).max() for s in stems))
        assert 0.85 < peak <= 0.9 + 1e-6  # one factor, no clipping
        assert g["duration_s"].nunique() == 1
        assert g["duration_s"].iloc[0] == pytest.approx(len(mix) / SAMPLE_RATE)


@pytest.mark.parametrize("name", ["chamber", "electro"])
def test_splits_disjoint_by_work(built: dict[str, Path], name: str) -> None:
    df = read_manifest(built[name])
    pieces = pd.read_csv(built[name].parent / "pieces.csv")
    assert set(pieces["piece_id"]) == set(df["piece_id"])
    assert (pieces["work"] == pieces["piece_id"].map(work_of_piece)).all()
    per_piece = df.groupby("piece_id").agg(split=("split", "first"), n=("pitched", "sum"))
    per_piece["work"] = per_piece.index.map(work_of_piece)
    assert (per_piece.groupby("work")["split"].nunique() == 1).all()
    for split in ("val", "test"):
        assert ((per_piece["split"] == split) & (per_piece["n"] >= 3)).sum() >= 2
    assert (per_piece["split"] == "train").sum() >= 2
    assert 6 <= len(per_piece) <= 12
    assert 0.8 <= pieces["duration_s"].sum() / 60 <= 2.0


def test_chamber_instruments(built: dict[str, Path]) -> None:
    df = read_manifest(built["chamber"])
    assert df["pitched"].all()
    assert set(df["family"]) == set(FAMILIES)  # brass, keyboards, strings, woodwinds all occur
    pieces = pd.read_csv(built["chamber"].parent / "pieces.csv")
    strings = pieces[pieces["category"] == "strings"]
    for instruments in strings["instruments"]:
        assert set(instruments.split("|")) <= {"violin", "viola", "cello", "double_bass"}


def test_electro_drums_and_synths(built: dict[str, Path]) -> None:
    df = read_manifest(built["electro"])
    drums = df[~df["pitched"]]
    assert len(drums) >= 1
    assert (drums["instrument"] == "drums").all() and (drums["notes_path"] == "").all()
    assert (drums["family"] == "percussion").all()
    assert set(df.loc[df["pitched"], "instrument"]) <= {
        "synth_lead",
        "synth_pad",
        "synth_bass",
        "chiptune",
    }
    pieces = pd.read_csv(built["electro"].parent / "pieces.csv")
    assert pieces["effects"].fillna("").str.contains("reverb|delay|lowpass").any()
    chamber_works = set(pd.read_csv(built["chamber"].parent / "pieces.csv")["work"])
    assert not chamber_works & set(pieces["work"])  # no score in both datasets


def test_build_is_deterministic(built: dict[str, Path], tmp_path: Path) -> None:
    again = build_chamber(tmp_path / "chamber", {**TINY, "cache_dir": str(built["cache"])}, seed=0)
    a, b = read_manifest(built["chamber"]), read_manifest(again)
    pd.testing.assert_frame_equal(a, b)
    first = a.iloc[0]
    x = sf.read(resolve_path(built["chamber"].parent, first["stem_path"]))[0]
    y = sf.read(resolve_path(again.parent, first["stem_path"]))[0]
    np.testing.assert_array_equal(x, y)


def test_unknown_config_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown embedded-dataset config key"):
        build_chamber(tmp_path, {"minuts": 3}, seed=0)
    with pytest.raises(ValueError, match="unknown type"):
        build_dataset("x", {"type": "nope"}, tmp_path, 0)


def test_tempo_map_and_ties() -> None:
    tm = TempoMap(((0.0, 60.0), (4.0, 120.0)))
    assert tm.seconds(4.0) == pytest.approx(4.0)
    assert tm.seconds(6.0) == pytest.approx(5.0)
    assert tm.offset(5.0) == pytest.approx(6.0)
    raw = [
        (0.0, 1.0, 60, "start"),
        (1.0, 2.0, 60, "stop"),  # tied: one note 0..2
        (0.0, 1.0, 64, None),
        (1.0, 2.0, 64, None),  # repeated: two notes
        (0.5, 1.5, 67, None),
        (1.0, 3.0, 67, None),  # overlapping unison in one part: merged
    ]
    assert _merge_notes(raw) == [[0.0, 1.0, 64], [0.0, 2.0, 60], [0.5, 3.0, 67], [1.0, 2.0, 64]]


def test_work_keys_and_splits() -> None:
    assert work_of("haydn/opus74no1/movement2.mxl") == "haydn/opus74no1"
    assert work_of("bach/bwv248.12-2.mxl") == work_of("bach/bwv248.64-6.mxl") == "bach/bwv248"
    assert work_of("monteverdi/madrigal.3.1.mxl") == "monteverdi/madrigal.3.1"
    pieces = [PieceInfo(f"w{i // 2}--m{i % 2}", f"w{i // 2}", 2 + i % 3) for i in range(20)]
    split = assign_splits(pieces, seed=3)
    assert split == assign_splits(pieces, seed=3)
    by_work: dict[str, set[str]] = {}
    for p in pieces:
        by_work.setdefault(p.work, set()).add(split[p.piece_id])
    assert all(len(s) == 1 for s in by_work.values())
    for s in ("val", "test"):
        assert sum(1 for p in pieces if split[p.piece_id] == s and p.n_pitched >= 3) >= 2
    with pytest.raises(ValueError, match="pitched sources"):
        assign_splits([PieceInfo(f"p{i}", f"p{i}", 2) for i in range(10)], seed=0)
