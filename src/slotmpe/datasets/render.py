"""Rendering note lists to audio: General MIDI programs with tinysoundfont, a numpy chiptune voice,
and GM drum patterns.

Every function renders ONE source into its own mono float32 buffer at ``RENDER_SR`` (44.1 kHz), so
stems are exactly the sources of the mixture. The soundfont is ``TimGM6mb.sf2`` from the pretty_midi
wheel (:func:`soundfont_path`). Note lists are ``(onset_s, offset_s, midi, velocity)`` tuples; a
note sounds from ``onset_s`` (note-on) to ``offset_s`` (note-off) plus the program's release.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from slotmpe.constants import midi_to_hz

RENDER_SR = 44_100

GM_PROGRAMS: dict[str, int] = {
    "violin": 40,
    "viola": 41,
    "cello": 42,
    "double_bass": 43,
    "flute": 73,
    "oboe": 68,
    "clarinet": 71,
    "saxophone": 65,  # alto sax; tenor sax 66 is chosen for low parts (see embedded.py)
    "bassoon": 70,
    "trumpet": 56,
    "horn": 60,
    "trombone": 57,
    "tuba": 58,
    "piano": 0,
}
"""Default GM program (0-based) of each acoustic instrument."""

DRUM_NOTES = {
    "kick": 36,
    "snare": 38,
    "clap": 39,
    "hat": 42,
    "pedal_hat": 44,
    "open_hat": 46,
    "tom_low": 45,
    "tom_mid": 47,
    "tom_high": 50,
    "crash": 49,
    "ride": 51,
}

Note = tuple[float, float, int, int]  # onset_s, offset_s, midi, velocity


def soundfont_path() -> Path:
    """Path of the General MIDI soundfont shipped inside the pretty_midi wheel."""
    import pretty_midi

    p = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: GM soundfont not found in the pretty_midi installation")
    return p


@functools.lru_cache(maxsize=1)
def _soundfont_bytes() -> bytes:
    """The soundfont file's bytes, read once per process."""
    return soundfont_path().read_bytes()


def render_program(
    notes: Sequence[Note], program: int, n_samples: int, drums: bool = False, sr: int = RENDER_SR
) -> np.ndarray:
    """Render ``notes`` with one GM program (or the GM drum kit) into a mono buffer ``(n_samples,)``.

    A fresh synthesizer renders each call, so the buffer holds this source only. Note-offs at a
    time are sent before note-ons at the same time (repeated pitches re-strike cleanly). Notes past
    ``n_samples`` are cut; the output is float32.
    """
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=sr)
    sfid = synth.sfload(_soundfont_bytes())
    chan = 9 if drums else 0
    synth.program_select(
        chan, sfid, 128 if drums else 0, 0 if drums else int(program), is_drums=drums
    )
    events: list[tuple[int, int, int, int]] = []  # sample, order (0 off, 1 on), key, velocity
    for on, off, midi, vel in notes:
        a = int(round(on * sr))
        b = int(round(off * sr))
        if a >= n_samples or b <= a:
            continue
        events.append((a, 1, int(midi), int(vel)))
        events.append((min(b, n_samples), 0, int(midi), 0))
    events.sort()
    out = np.zeros(n_samples, dtype=np.float32)
    pos = 0
    for sample, kind, key, vel in events:
        if sample > pos:
            out[pos:sample] = _generate(synth, sample - pos)
            pos = sample
        if kind == 1:
            synth.noteon(chan, key, max(1, min(127, vel)))
        else:
            synth.noteoff(chan, key)
    if pos < n_samples:
        out[pos:] = _generate(synth, n_samples - pos)
    return out


def _generate(synth: object, n: int) -> np.ndarray:
    """``n`` mono samples from a tinysoundfont synth (stereo output averaged)."""
    buf = synth.generate(n)  # type: ignore[attr-defined]
    stereo = np.frombuffer(buf, dtype=np.float32).reshape(-1, 2)
    return stereo.mean(axis=1)


def render_chiptune(
    notes: Sequence[Note],
    n_samples: int,
    duty: float = 0.25,
    sr: int = RENDER_SR,
    max_hz: float = 7_600.0,
) -> np.ndarray:
    """Band-limited pulse-wave ("chiptune") voice, summed harmonics up to ``max_hz``.

    A pulse of duty cycle ``duty`` has harmonic ``k`` with amplitude ``2 sin(pi k duty) / (pi k)``;
    each note gets a 4 ms attack, a gentle decay to 70 % and a 25 ms release after its offset.
    ``max_hz`` stays below 8 kHz since the stems are resampled to 16 kHz anyway.
    Returns float32 ``(n_samples,)``.
    """
    out = np.zeros(n_samples, dtype=np.float64)
    attack, release = int(0.004 * sr), int(0.025 * sr)
    for on, off, midi, vel in notes:
        a = int(round(on * sr))
        b = min(int(round(off * sr)), n_samples)
        if a >= n_samples or b <= a:
            continue
        end = min(b + release, n_samples)
        t = np.arange(end - a) / sr
        f0 = midi_to_hz(midi)
        n_harm = max(1, int(max_hz // f0))
        k = np.arange(1, n_harm + 1)
        amps = 2.0 * np.sin(np.pi * k * duty) / (np.pi * k)
        keep = np.abs(amps) > 1e-6
        wave = np.cos(2.0 * np.pi * f0 * np.outer(t, k[keep])) @ amps[keep]
        env = np.ones(end - a)
        na = min(attack, len(env))
        env[:na] = np.linspace(0.0, 1.0, na, endpoint=False)
        hold = b - a
        env[:hold] *= 0.7 + 0.3 * np.exp(-t[:hold] / 0.15)
        if end > b:
            env[hold:] = env[hold - 1] * np.linspace(1.0, 0.0, end - b)
        out[a:end] += 0.3 * (vel / 127.0) * env * wave
    return out.astype(np.float32)


def drum_pattern(
    bar_times: Sequence[float],
    beats_per_bar: int,
    end_s: float,
    rng: np.random.Generator,
    style: str | None = None,
) -> list[Note]:
    """A GM drum part (``(onset_s, offset_s, key, velocity)``) following the piece's bars.

    ``bar_times``: start time (s) of every bar (>= 2 entries, the last may be the end). Styles:
    ``rock`` (kick 1+3, snare 2+4, eighth hats), ``four`` (kick on every beat, open hat off-beats,
    clap 2+4), ``half`` (kick 1, snare 3), ``break`` (syncopated kicks on sixteenths); a tom fill
    every fourth bar and a crash on the first beat. Velocities are jittered.
    """
    style = style or str(rng.choice(["rock", "four", "half", "break"]))
    hits: list[Note] = []

    def hit(t: float, name: str, vel: int) -> None:
        if 0.0 <= t < end_s:
            v = int(np.clip(vel + rng.integers(-10, 11), 20, 127))
            hits.append((t, min(t + 0.1, end_s), DRUM_NOTES[name], v))

    beats = max(1, int(beats_per_bar))
    for i in range(len(bar_times) - 1):
        t0, t1 = bar_times[i], bar_times[i + 1]
        beat = (t1 - t0) / beats
        fill = i % 4 == 3
        if i == 0:
            hit(t0, "crash", 100)
        for b in range(beats):
            tb = t0 + b * beat
            if fill and b >= beats - 1:
                for j, tom in enumerate(("tom_high", "tom_mid", "tom_low", "tom_low")):
                    hit(tb + j * beat / 4, tom, 95)
                continue
            if style == "rock":
                if b % 2 == 0:
                    hit(tb, "kick", 110)
                else:
                    hit(tb, "snare", 105)
                hit(tb, "hat", 75)
                hit(tb + beat / 2, "hat", 60)
            elif style == "four":
                hit(tb, "kick", 115)
                if b % 2 == 1:
                    hit(tb, "clap", 100)
                hit(tb + beat / 2, "open_hat", 70)
            elif style == "half":
                if b == 0:
                    hit(tb, "kick", 110)
                if b == beats // 2 and beats > 1:
                    hit(tb, "snare", 105)
                hit(tb, "ride", 70)
                hit(tb + beat / 2, "hat", 55)
            else:  # break
                for s in range(4):
                    ts = tb + s * beat / 4
                    if (s == 0 and b % 2 == 0) or rng.random() < 0.18:
                        hit(ts, "kick", 105)
                    hit(ts, "hat", 70 if s % 2 == 0 else 50)
                if b % 2 == 1:
                    hit(tb, "snare", 110)
    return hits
