"""Tests of slotmpe.features: wide CQT, fast-HCQT, log compression and the feature cache."""

from __future__ import annotations

import logging
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import torch

from slotmpe.audio import AudioError, write_audio
from slotmpe.constants import (
    BINS_PER_OCTAVE,
    FAMILIES,
    HARMONIC_SHIFTS,
    N_BINS,
    SAMPLE_RATE,
    midi_to_hz,
    n_frames_for,
)
from slotmpe.data import load_piece
from slotmpe.datasets.manifest import write_manifest
from slotmpe.features import (
    N_WIDE,
    PIECE_KEYS,
    WIDE_FMIN,
    WIDE_OFFSET,
    FeatureError,
    build_feature_cache,
    cqt_wide,
    hcqt,
    hcqt_from_cqt,
)
from slotmpe.targets import notes_to_roll

torch.set_num_threads(1)


def tone(midi: float, seconds: float, sr: int = SAMPLE_RATE, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * midi_to_hz(midi) * t)).astype(np.float32)


# ------------------------------------------------------------------------------------ wide CQT


def test_wide_range_constants() -> None:
    assert WIDE_OFFSET == 36 and N_WIDE == 325
    assert WIDE_FMIN == pytest.approx(midi_to_hz(23) * 2 ** (-1 / 36) / 2)
    # N_WIDE is the largest range librosa allows below Nyquist at 16 kHz
    y = tone(60, 0.8)
    with pytest.raises(librosa.util.exceptions.ParameterError, match="Nyquist"):
        librosa.cqt(y, sr=SAMPLE_RATE, hop_length=512, fmin=WIDE_FMIN, n_bins=N_WIDE + 1,
                    bins_per_octave=BINS_PER_OCTAVE)


@pytest.mark.parametrize("n", [11264, 11263 + 512 * 3, 16000 * 2 + 7])
def test_cqt_frames_match_targets(n: int) -> None:
    y = tone(60, n / SAMPLE_RATE + 0.01)[:n]
    assert len(y) == n
    c = cqt_wide(y, SAMPLE_RATE)
    assert c.shape == (N_WIDE, n_frames_for(n)) and c.dtype == np.float32
    assert c.min() >= 0.0 and c.max() == pytest.approx(1.0)


def test_resampling_and_frame_count() -> None:
    y = tone(69, 1.5, sr=44100)
    c = cqt_wide(y, 44100)
    assert c.shape == (N_WIDE, n_frames_for(24000))
    x = hcqt(y, 44100)
    assert x.shape == (12, N_BINS, c.shape[1]) and x.dtype == np.float32


def test_bad_audio_raises() -> None:
    y = tone(60, 1.0)
    y[100] = np.nan
    with pytest.raises(AudioError, match="clip.wav.*NaN"):
        cqt_wide(y, SAMPLE_RATE, name="clip.wav")
    with pytest.raises(AudioError, match="empty"):
        cqt_wide(np.zeros(0, np.float32), SAMPLE_RATE)
    assert not cqt_wide(np.zeros(16000, np.float32)).any()  # silence -> all zeros, no error


@pytest.mark.parametrize("midi", [23, 45, 69, 94])
def test_pure_tone_peaks_at_its_bin_and_roll(midi: int) -> None:
    x = hcqt(tone(midi, 2.0), SAMPLE_RATE)
    spectrum = x[1, :, 10:-10].mean(axis=1)  # h = 1 channel, steady-state frames
    assert int(spectrum.argmax()) == 3 * (midi - 23) + 1
    n = x.shape[-1]
    roll = notes_to_roll(pd.DataFrame({"onset_s": [0.0], "offset_s": [2.0], "midi": [midi]}), n)
    assert np.flatnonzero(roll.any(axis=1)).tolist() == [midi - 23]


def test_log_compression_is_db_relative_to_file_max() -> None:
    # two partials 20 dB apart: 20/80 = 0.25 apart on the [0, 1] scale; level invariant
    y = tone(57, 2.0, amp=0.4) + tone(81, 2.0, amp=0.04)
    c = cqt_wide(y)
    b57, b81 = WIDE_OFFSET + 3 * (57 - 23) + 1, WIDE_OFFSET + 3 * (81 - 23) + 1
    mid = c[:, 10:-10].mean(axis=1)
    assert mid[b57] == pytest.approx(1.0, abs=0.01)
    assert mid[b57] - mid[b81] == pytest.approx(0.25, abs=0.01)
    np.testing.assert_allclose(cqt_wide(0.1 * y), c, atol=1e-4)


# ------------------------------------------------------------------------------------ HCQT


def expected_hcqt(c: np.ndarray) -> np.ndarray:
    """Brute-force reference: loops over harmonics and bins."""
    out = np.zeros((12, N_BINS, c.shape[-1]), dtype=c.dtype)
    for h, shift in enumerate(HARMONIC_SHIFTS):
        for b in range(N_BINS):
            src = WIDE_OFFSET + b + shift
            if 0 <= src < N_WIDE:
                out[h, b] = c[src]
                out[6 + h, b] = 1.0
    return out


def test_hcqt_channels_and_masks() -> None:
    rng = np.random.default_rng(1)
    c = rng.random((N_WIDE, 9)).astype(np.float32)
    x = hcqt_from_cqt(c)
    assert x.shape == (12, N_BINS, 9) and x.dtype == np.float32
    np.testing.assert_array_equal(x, expected_hcqt(c))
    # h = 1 is the plain CQT over the model bins
    np.testing.assert_array_equal(x[1], c[WIDE_OFFSET : WIDE_OFFSET + N_BINS])
    # h = 2 at bin b is the CQT at b + 36 (model-bin numbering) wherever valid
    b = np.arange(N_BINS)
    np.testing.assert_array_equal(x[2], c[WIDE_OFFSET + b + 36])
    masks = x[6:]
    assert set(np.unique(masks).tolist()) <= {0.0, 1.0}
    for h, shift in enumerate(HARMONIC_SHIFTS):
        missing = (WIDE_OFFSET + b + shift < 0) | (WIDE_OFFSET + b + shift >= N_WIDE)
        np.testing.assert_array_equal(masks[h, :, 0] == 0, missing)
        assert not x[h][missing].any()
    assert masks[5, :, 0].sum() == 205  # only the 5th harmonic of the top 11 bins is missing
    assert masks[:5].all()


def test_hcqt_torch_and_batch_agree_with_numpy() -> None:
    rng = np.random.default_rng(2)
    c = rng.random((3, N_WIDE, 5)).astype(np.float32)
    xb = hcqt_from_cqt(c)
    assert xb.shape == (3, 12, N_BINS, 5)
    for i in range(3):
        np.testing.assert_array_equal(xb[i], hcqt_from_cqt(c[i]))
    xt = hcqt_from_cqt(torch.from_numpy(c))
    assert isinstance(xt, torch.Tensor) and xt.dtype == torch.float32
    np.testing.assert_array_equal(xt.numpy(), xb)
    assert hcqt_from_cqt(torch.from_numpy(c[0])).shape == (12, N_BINS, 5)
    assert hcqt_from_cqt(c.astype(np.float16)).dtype == np.float16
    x4 = hcqt_from_cqt(torch.from_numpy(c).reshape(1, 3, N_WIDE, 5))
    np.testing.assert_array_equal(x4[0].numpy(), xb)
    with pytest.raises(ValueError, match="N_WIDE"):
        hcqt_from_cqt(c[:, :216])


# ------------------------------------------------------------------------------ feature cache


def write_piece(
    root: Path,
    piece_id: str,
    split: str,
    parts: list[tuple[str, str, list[tuple[float, float, int]]]],
    seconds: float,
    sr: int = SAMPLE_RATE,
    silent_mix: bool = False,
) -> list[dict[str, object]]:
    """Sine stems (one per part: track_id, instrument, notes), their sum as the mix, notes CSVs.

    Instrument "drums" makes a non-pitched noise-burst track without notes. Returns manifest rows.
    """
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    rows: list[dict[str, object]] = []
    mix = np.zeros(n, dtype=np.float32)
    rng = np.random.default_rng(len(piece_id))
    for track_id, instrument, notes in parts:
        y = np.zeros(n, dtype=np.float32)
        pitched = instrument != "drums"
        if pitched:
            for on, off, midi in notes:
                seg = (t >= on) & (t < off)
                y[seg] += 0.2 * np.sin(2 * np.pi * midi_to_hz(midi) * t[seg])
        else:
            y[(t % 0.5) < 0.05] = 0.1 * rng.standard_normal(int(((t % 0.5) < 0.05).sum()))
        stem = f"{piece_id}/{track_id}.wav"
        write_audio(root / stem, y, sr)
        notes_path = ""
        if pitched:
            notes_path = f"{piece_id}/{track_id}.csv"
            pd.DataFrame(notes, columns=["onset_s", "offset_s", "midi"]).to_csv(
                root / notes_path, index=False
            )
        mix += y
        family = {"drums": "percussion"}.get(instrument) or {
            "violin": "strings", "cello": "strings", "flute": "woodwinds", "trumpet": "brass",
            "piano": "keyboards",
        }[instrument]
        rows.append(dict(
            dataset="toy", piece_id=piece_id, split=split, track_id=track_id,
            instrument=instrument, family=family, pitched=pitched, stem_path=stem,
            mix_path=f"{piece_id}/mix.wav", notes_path=notes_path, duration_s=n / sr,
        ))
    write_audio(root / f"{piece_id}/mix.wav", 0 * mix if silent_mix else mix, sr)
    return rows


@pytest.fixture(scope="module")
def toy_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    rows = []
    rows += write_piece(root, "p1", "train", [
        ("p1_vn", "violin", [(0.0, 1.0, 76), (1.0, 2.0, 79)]),
        ("p1_vc", "cello", [(0.5, 2.5, 48)]),
        ("p1_dr", "drums", []),
    ], 3.0)
    rows += write_piece(root, "p2", "val", [
        ("p2_fl", "flute", [(0.2, 1.5, 84)]),
        ("p2_tp", "trumpet", [(1.0, 2.0, 67)]),
    ], 2.5, sr=22050)
    rows += write_piece(root, "short", "train", [("s_pn", "piano", [(0.0, 0.5, 60)])], 0.6)
    rows += write_piece(root, "offrange", "test", [("o_pn", "piano", [(0.0, 1.0, 100)])], 1.5)
    rows += write_piece(root, "silent", "test", [("q_pn", "piano", [(0.0, 1.0, 60)])], 1.5,
                        silent_mix=True)
    path = root / "manifest.parquet"
    write_manifest(pd.DataFrame(rows), path)
    return path


@pytest.fixture(scope="module")
def toy_cache(toy_manifest: Path) -> Path:
    return build_feature_cache(toy_manifest, toy_manifest.parent / "features")


def test_cache_index_and_skips(toy_cache: Path) -> None:
    feat = toy_cache.parent
    assert toy_cache.name == "index.csv"
    index = pd.read_csv(toy_cache)
    assert list(index.columns) == ["piece_id", "split", "n_frames", "n_sources"]
    assert index["piece_id"].tolist() == ["p1", "p2"]
    assert index["split"].tolist() == ["train", "val"]
    assert index["n_frames"].tolist() == [n_frames_for(48000), n_frames_for(40000)]
    assert index["n_sources"].tolist() == [2, 2]
    skipped = pd.read_csv(feat / "skipped.csv").set_index("piece_id")["reason"]
    assert set(skipped.index) == {"short", "offrange", "silent"}
    assert "shorter than one 23-frame window" in skipped["short"] and "mix.wav" in skipped["short"]
    assert "do not overlap" in skipped["offrange"]
    assert "silent" in skipped["silent"] and "mix.wav" in skipped["silent"]
    assert not (feat / "short.npz").exists()
    assert not [p for p in feat.iterdir() if p.name.startswith(".")]  # no temp files left


def test_cache_piece_contents(toy_cache: Path, toy_manifest: Path) -> None:
    p = load_piece(toy_cache.parent / "p1.npz", mmap=False)
    assert tuple(p) == PIECE_KEYS
    t = n_frames_for(48000)
    assert p["cqt"].dtype == np.float16 and p["cqt"].shape == (N_WIDE, t)
    assert p["stem_cqt"].dtype == np.float16 and p["stem_cqt"].shape == (2, N_WIDE, t)
    assert p["source_rolls"].dtype == bool and p["source_rolls"].shape == (2, 72, t)
    assert p["family_rolls"].shape == (4, 72, t) and p["mix_roll"].shape == (72, t)
    assert p["poly"].dtype == np.uint8 and p["poly"].shape == (t,)
    assert p["source_poly"].dtype == np.uint8 and p["source_poly"].shape == (2, t)
    assert p["track_ids"].tolist() == ["p1_vn", "p1_vc"]  # pitched tracks, manifest order
    assert p["instruments"].tolist() == ["violin", "cello"]
    assert p["families"].tolist() == ["strings", "strings"]
    assert bool(p["has_stems"]) and int(p["n_frames"]) == t
    np.testing.assert_array_equal(p["mix_roll"], p["source_rolls"].any(axis=0))
    np.testing.assert_array_equal(p["family_rolls"][FAMILIES.index("strings")], p["mix_roll"])
    np.testing.assert_array_equal(p["poly"], p["mix_roll"].sum(0))
    # violin: 76 over 0..1 s -> frames 0..31; cello 48 over 0.5..2.5 s -> frames 16..78
    assert np.flatnonzero(p["source_rolls"][0, 76 - 23]).tolist() == list(range(32))
    assert np.flatnonzero(p["source_rolls"][1, 48 - 23]).tolist() == list(range(16, 79))
    # the mixture CQT is the cached-once wide CQT of the mix file
    import soundfile as sf

    mix, _ = sf.read(toy_manifest.parent / "p1/mix.wav", dtype="float32")
    np.testing.assert_allclose(p["cqt"].astype(np.float32), cqt_wide(mix), atol=1e-3)
    stem, _ = sf.read(toy_manifest.parent / "p1/p1_vc.wav", dtype="float32")
    np.testing.assert_allclose(p["stem_cqt"][1].astype(np.float32), cqt_wide(stem), atol=1e-3)
    # the cello stem peaks at MIDI 48, the violin's at 76/79
    mid = p["stem_cqt"][1, :, 40:70].astype(np.float32).mean(1)
    assert int(mid.argmax()) == WIDE_OFFSET + 3 * (48 - 23) + 1


def test_cache_strict_and_parallel(toy_manifest: Path, tmp_path: Path,
                                   caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises((FeatureError, AudioError), match="short/mix.wav"):
        build_feature_cache(toy_manifest, tmp_path / "strict", strict=True)
    with caplog.at_level(logging.WARNING):
        idx = build_feature_cache(toy_manifest, tmp_path / "par", threads=2)
    a = load_piece(idx.parent / "p2.npz")
    b = load_piece(toy_manifest.parent / "features" / "p2.npz")
    for k in PIECE_KEYS:
        np.testing.assert_array_equal(a[k], b[k])


def test_musicnet_like_piece_without_stems(tmp_path: Path) -> None:
    rows = write_piece(tmp_path, "mn", "test", [("mn_pn", "piano", [(0.1, 1.0, 60)])], 1.5)
    df = pd.DataFrame(rows)
    df["stem_path"] = ""
    write_manifest(df, tmp_path / "manifest.parquet")
    idx = build_feature_cache(tmp_path / "manifest.parquet", tmp_path / "features")
    p = load_piece(idx.parent / "mn.npz")
    t = int(p["n_frames"])
    assert p["stem_cqt"].shape == (0, N_WIDE, t) and not bool(p["has_stems"])
    assert p["source_rolls"].shape == (1, 72, t)
