"""Benchmark of the feature step: seconds per hour of audio, and the ratio to librosa's plain CQT.

Writes a synthetic multitrack piece (harmonic tones with vibrato plus a little noise, one stem per
instrument, the mix, notes CSVs and a manifest) to a temporary folder and times
:func:`slotmpe.features.build_feature_cache` on it: reading and resampling the audio, the wide CQT
of the mix and of every stem, the targets and writing the cache file. The full-file HCQT
(:func:`slotmpe.features.hcqt_from_cqt`, done on the fly by the datasets) is timed separately and
added to the total. The reference is ``librosa.cqt`` with its defaults over the 216 model bins
only (no stems, no resampling) on the same 16 kHz mixture.

Usage::

    python benchmarks/bench_features.py --minutes 3 --stems 3
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import torch

from slotmpe.audio import load_audio, write_audio
from slotmpe.constants import BINS_PER_OCTAVE, FMIN, HOP_LENGTH, N_BINS, SAMPLE_RATE, midi_to_hz
from slotmpe.data import load_piece
from slotmpe.datasets.manifest import write_manifest
from slotmpe.features import build_feature_cache, hcqt_from_cqt

INSTRUMENTS = (("violin", "strings", 67), ("cello", "strings", 43), ("flute", "woodwinds", 79),
               ("trumpet", "brass", 62), ("piano", "keyboards", 55))


def synth_piece(root: Path, minutes: float, n_stems: int, sr: int, seed: int = 0) -> Path:
    """Write a piece with ``n_stems`` stems of ``minutes`` at ``sr`` Hz; returns the manifest path."""
    rng = np.random.default_rng(seed)
    n = int(minutes * 60 * sr)
    t = np.arange(n) / sr
    mix = np.zeros(n, dtype=np.float32)
    rows = []
    for k in range(n_stems):
        inst, family, centre = INSTRUMENTS[k % len(INSTRUMENTS)]
        y = np.zeros(n, dtype=np.float32)
        notes = []
        on = 0.0
        while on < minutes * 60 - 0.5:
            dur = float(rng.uniform(0.2, 1.2))
            midi = int(centre + rng.integers(-7, 8))
            off = min(on + dur, minutes * 60)
            i0, i1 = int(on * sr), int(off * sr)
            tt = t[i0:i1] - on
            f0 = midi_to_hz(midi) * (1 + 0.003 * np.sin(2 * np.pi * 5 * tt))
            phase = 2 * np.pi * np.cumsum(f0) / sr
            env = np.minimum(1.0, tt / 0.02) * np.exp(-tt)
            y[i0:i1] = 0.1 * env * sum(np.sin(h * phase) / h for h in range(1, 6))
            notes.append((on, off, midi))
            on = off + float(rng.uniform(0.0, 0.3))
        y += 1e-3 * rng.standard_normal(n).astype(np.float32)
        write_audio(root / f"{inst}{k}.wav", y, sr)
        pd.DataFrame(notes, columns=["onset_s", "offset_s", "midi"]).to_csv(
            root / f"{inst}{k}.csv", index=False)
        mix += y
        rows.append(dict(dataset="bench", piece_id="bench", split="train", track_id=f"{inst}{k}",
                         instrument=inst, family=family, pitched=True, stem_path=f"{inst}{k}.wav",
                         mix_path="mix.wav", notes_path=f"{inst}{k}.csv", duration_s=n / sr))
    write_audio(root / "mix.wav", mix / max(1.0, float(np.abs(mix).max())), sr)
    path = root / "manifest.parquet"
    write_manifest(pd.DataFrame(rows), path)
    return path


def main(minutes: float = 3.0, n_stems: int = 3, sr: int = 44_100, repeats: int = 2) -> dict[str, float]:
    """Run the benchmark; prints and returns the figures (seconds per hour of mixture audio)."""
    torch.set_num_threads(1)
    logging.getLogger("slotmpe").setLevel(logging.WARNING)
    hours = minutes / 60.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = synth_piece(root, minutes, n_stems, sr)
        mix16, _ = load_audio(root / "mix.wav")
        # warm-up (filter construction, imports) on a short signal
        librosa.cqt(mix16[: 5 * SAMPLE_RATE], sr=SAMPLE_RATE, hop_length=HOP_LENGTH, fmin=FMIN,
                    n_bins=N_BINS, bins_per_octave=BINS_PER_OCTAVE)
        build_feature_cache(manifest, root / "warm")

        step = min(_timed(lambda: build_feature_cache(manifest, root / "features"))
                   for _ in range(repeats))
        cqt = np.asarray(load_piece(root / "features" / "bench.npz")["cqt"], dtype=np.float32)
        hc = min(_timed(lambda: hcqt_from_cqt(cqt)) for _ in range(repeats))
        plain = min(_timed(lambda: librosa.cqt(mix16, sr=SAMPLE_RATE, hop_length=HOP_LENGTH, fmin=FMIN,
                                                n_bins=N_BINS, bins_per_octave=BINS_PER_OCTAVE))
                    for _ in range(repeats))
    total = step + hc
    res = {
        "feature_step_s_per_h": total / hours,
        "feature_step_s_per_h_per_stream": total / hours / (1 + n_stems),
        "hcqt_s_per_h": hc / hours,
        "librosa_plain_cqt_s_per_h": plain / hours,
        "ratio": total / plain,
        "ratio_per_stream": total / plain / (1 + n_stems),
    }
    print(f"audio: {minutes:g} min synthetic piece at {sr} Hz, mix + {n_stems} stems; "
          f"best of {repeats}; 1 thread")
    print(f"feature step (read+resample, wide CQT of mix and stems, targets, write) + full HCQT: "
          f"{res['feature_step_s_per_h']:.1f} s per hour of mixture "
          f"({res['feature_step_s_per_h_per_stream']:.1f} s per hour of each audio stream; "
          f"HCQT alone {res['hcqt_s_per_h']:.2f} s/h)")
    print(f"librosa.cqt, 216 model bins, mix only: {res['librosa_plain_cqt_s_per_h']:.1f} s per hour "
          f"({3600 / res['librosa_plain_cqt_s_per_h']:.0f}x real time)")
    print(f"ratio feature step / plain CQT: {res['ratio']:.2f} per piece, "
          f"{res['ratio_per_stream']:.2f} per audio stream")
    return res


def _timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0, help="length of the synthetic piece")
    ap.add_argument("--stems", type=int, default=3, help="number of pitched stems")
    ap.add_argument("--sr", type=int, default=44_100, help="sample rate of the written audio")
    ap.add_argument("--repeats", type=int, default=2, help="timed repetitions (best is kept)")
    a = ap.parse_args()
    main(a.minutes, a.stems, a.sr, a.repeats)
