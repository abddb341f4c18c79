"""Write ``examples/two_voices.wav``: a short generated two-voice piece to try ``slotmpe transcribe``.

An upper voice (flute-like: a sine with weak 2nd and 3rd harmonics and a slow vibrato) and a lower
voice (string-like: a band-limited sawtooth) play a few bars of two-part counterpoint in C major,
8 s at 16 kHz mono, 16-bit PCM (256 kB). The notes are also written to
``examples/two_voices.notes.csv`` (``voice,onset_s,offset_s,midi``), so a transcription can be
compared with what was played. Only numpy and soundfile are needed; the output is the same on
every machine (no randomness)::

    python examples/make_example.py            # rewrites both files beside this script
    slotmpe transcribe examples/two_voices.wav -o out/
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE: int = 16_000
BEAT_S: float = 0.5  # 120 bpm
# (start beat, length in beats, MIDI pitch) per note of each voice
UPPER: list[tuple[float, float, int]] = [
    (0, 1, 72), (1, 1, 74), (2, 1, 76), (3, 1, 77), (4, 2, 79), (6, 1, 77), (7, 1, 76),
    (8, 1, 74), (9, 1, 76), (10, 1, 72), (11, 1, 74), (12, 3, 72),
]
LOWER: list[tuple[float, float, int]] = [
    (0, 2, 48), (2, 2, 55), (4, 2, 52), (6, 2, 53), (8, 2, 55), (10, 2, 53), (12, 3, 48),
]
DURATION_S: float = 8.0


def _hz(midi: int) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def _envelope(n: int, sr: int, attack_s: float, release_s: float) -> np.ndarray:
    t = np.arange(n) / sr
    return np.minimum(1.0, np.minimum(t / attack_s, (n / sr - t) / release_s)).clip(0.0, 1.0)


def flute(midi: int, seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A flute-like tone ``(n,)``: sine + weak harmonics, 5 Hz vibrato of 0.3 %."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    phase = 2 * np.pi * _hz(midi) * (t + 0.003 / (2 * np.pi * 5) * np.sin(2 * np.pi * 5 * t))
    y = np.sin(phase) + 0.2 * np.sin(2 * phase) + 0.05 * np.sin(3 * phase)
    return (y * _envelope(n, sr, 0.04, 0.06)).astype(np.float32)


def strings(midi: int, seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A string-like tone ``(n,)``: band-limited sawtooth (harmonics up to 4 kHz)."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f = _hz(midi)
    k = np.arange(1, int(4000 // f) + 1)
    y = (np.sin(2 * np.pi * f * np.outer(t, k)) / k).sum(axis=1)
    return (0.6 * y * _envelope(n, sr, 0.08, 0.08)).astype(np.float32)


def render(sr: int = SAMPLE_RATE) -> tuple[np.ndarray, list[tuple[str, float, float, int]]]:
    """``(audio (n,), notes)``: the piece at ``sr`` Hz, peak 0.8, and its notes
    ``(voice, onset_s, offset_s, midi)``."""
    audio = np.zeros(int(DURATION_S * sr), dtype=np.float32)
    notes = []
    for voice, plan, synth, gain in (("flute", UPPER, flute, 0.5), ("strings", LOWER, strings, 0.5)):
        for beat, length, midi in plan:
            on, dur = beat * BEAT_S, length * BEAT_S * 0.95  # 5 % gap between notes
            y = gain * synth(midi, dur, sr)
            i = int(on * sr)
            audio[i : i + len(y)] += y[: len(audio) - i]
            notes.append((voice, round(on, 4), round(on + dur, 4), midi))
    audio *= 0.8 / np.abs(audio).max()
    return audio, sorted(notes, key=lambda n: (n[1], n[0]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("two_voices.wav"))
    args = ap.parse_args()
    audio, notes = render()
    sf.write(args.out, audio, SAMPLE_RATE, subtype="PCM_16")
    with open(args.out.with_suffix(".notes.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["voice", "onset_s", "offset_s", "midi"])
        w.writerows(notes)
    print(f"{args.out}: {len(audio) / SAMPLE_RATE:.1f} s, {len(notes)} notes")


if __name__ == "__main__":
    main()
