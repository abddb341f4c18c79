"""Audio, pitch and instrument constants: the single place every other module reads them from.

Signal conventions (DESIGN.md):

* 16 kHz mono audio, hop 512 samples -> 31.25 frames/s; frame ``t`` is centred at ``t * 512 / 16000`` s.
* CQT with 36 bins per octave. The 216 *model bins* cover MIDI 23..94 (72 pitches); the centre bin of
  pitch index ``p`` (0-based, MIDI ``23 + p``) is model bin ``3 p + 1``, i.e. the first model bin sits
  one third of a semitone below MIDI 23: ``FMIN = hz(23) * 2 ** (-1 / 36)``.
* Fast-HCQT harmonics ``(0.5, 1, 2, 3, 4, 5)``; harmonic ``h`` is the CQT shifted by
  ``round(36 * log2 h)`` bins. Input tensor: 6 shifted maps + 6 validity masks = ``12 x 216 x T``.
* Families (fixed order used by every family roll and by experiment 1b's slot order):
  brass, keyboards, strings, woodwinds.
"""

from __future__ import annotations

import math
from typing import Final

SAMPLE_RATE: Final[int] = 16_000
HOP_LENGTH: Final[int] = 512
FRAME_RATE: Final[float] = SAMPLE_RATE / HOP_LENGTH  # 31.25 frames per second

BINS_PER_OCTAVE: Final[int] = 36
BINS_PER_SEMITONE: Final[int] = BINS_PER_OCTAVE // 12  # 3
MIDI_MIN: Final[int] = 23
N_PITCHES: Final[int] = 72
MIDI_MAX: Final[int] = MIDI_MIN + N_PITCHES - 1  # 94 (inclusive)
N_BINS: Final[int] = N_PITCHES * BINS_PER_SEMITONE  # 216 model bins


def midi_to_hz(midi: float) -> float:
    """Frequency in Hz of a (possibly fractional) MIDI pitch, A4 = MIDI 69 = 440 Hz."""
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def hz_to_midi(hz: float) -> float:
    """Fractional MIDI pitch of a frequency in Hz (``hz`` > 0)."""
    return 69.0 + 12.0 * math.log2(hz / 440.0)


# First model bin: one bin (a third of a semitone) below MIDI 23, so pitch p is centred on bin 3p+1.
FMIN: Final[float] = midi_to_hz(MIDI_MIN) * 2.0 ** (-1.0 / BINS_PER_OCTAVE)

HARMONICS: Final[tuple[float, ...]] = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0)
HARMONIC_SHIFTS: Final[tuple[int, ...]] = tuple(
    int(round(BINS_PER_OCTAVE * math.log2(h))) for h in HARMONICS
)  # (-36, 0, 36, 57, 72, 84)
N_HARMONICS: Final[int] = len(HARMONICS)
N_INPUT_CHANNELS: Final[int] = 2 * N_HARMONICS  # 12: six shifted maps, then six masks

WINDOW_FRAMES: Final[int] = 23  # training window of the slot model (736 ms)
TIMBRE_WINDOW_FRAMES: Final[int] = 46  # timbre-encoder window (~1.47 s)
TIMBRE_VIEWS: Final[int] = 4
EMBED_DIM: Final[int] = 128  # timbre embedding size
SLOT_DIM: Final[int] = 192  # slot dimension d
MAX_SLOTS: Final[int] = 8  # stem experiments use 8 slots; also the padding size of source targets
N_POLY_CLASSES: Final[int] = 8  # polyphony classes 0..7 (counts above 7 clipped to 7)

FAMILIES: Final[tuple[str, ...]] = ("brass", "keyboards", "strings", "woodwinds")
FAMILY_INDEX: Final[dict[str, int]] = {f: i for i, f in enumerate(FAMILIES)}
NON_PITCHED_FAMILY: Final[str] = "percussion"

# Canonical instrument names -> family. URMP's Table II plus keyboards; electronic sources are
# assigned to "keyboards" (synthesizers are keyboard-played electronic instruments; the family task
# is only run on acoustic data in the paper). Drums are non-pitched ("percussion").
INSTRUMENT_FAMILY: Final[dict[str, str]] = {
    # strings
    "violin": "strings",
    "viola": "strings",
    "cello": "strings",
    "double_bass": "strings",
    "guitar": "strings",
    "electric_bass": "strings",
    "harp": "strings",
    "string_ensemble": "strings",
    # woodwinds
    "flute": "woodwinds",
    "piccolo": "woodwinds",
    "oboe": "woodwinds",
    "english_horn": "woodwinds",
    "clarinet": "woodwinds",
    "bass_clarinet": "woodwinds",
    "saxophone": "woodwinds",
    "bassoon": "woodwinds",
    # brass
    "trumpet": "brass",
    "horn": "brass",
    "trombone": "brass",
    "tuba": "brass",
    # keyboards (incl. electronic/synth sources)
    "piano": "keyboards",
    "electric_piano": "keyboards",
    "harpsichord": "keyboards",
    "organ": "keyboards",
    "synth_lead": "keyboards",
    "synth_pad": "keyboards",
    "synth_bass": "keyboards",
    "chiptune": "keyboards",
    "synth": "keyboards",
    "vocals": "keyboards",
    # non-pitched
    "drums": "percussion",
}

# URMP instrument codes (file names such as AuSep_1_vn_01_Jupiter.wav) -> canonical names (Table II).
URMP_CODES: Final[dict[str, str]] = {
    "vn": "violin",
    "va": "viola",
    "vc": "cello",
    "db": "double_bass",
    "fl": "flute",
    "ob": "oboe",
    "cl": "clarinet",
    "sax": "saxophone",
    "bn": "bassoon",
    "tpt": "trumpet",
    "hn": "horn",
    "tbn": "trombone",
    "tba": "tuba",
}

SPLITS: Final[tuple[str, ...]] = ("train", "val", "test")


def family_of(instrument: str) -> str:
    """Family of a canonical instrument name; raises ``KeyError`` with the known names otherwise."""
    try:
        return INSTRUMENT_FAMILY[instrument]
    except KeyError:
        known = ", ".join(sorted(INSTRUMENT_FAMILY))
        raise KeyError(f"unknown instrument {instrument!r}; known instruments: {known}") from None


def frame_times(n_frames: int) -> list[float]:
    """Centre time in seconds of each of ``n_frames`` frames (frame t at t * HOP / SR)."""
    return [t * HOP_LENGTH / SAMPLE_RATE for t in range(n_frames)]


def n_frames_for(n_samples: int) -> int:
    """Number of frames for ``n_samples`` samples at 16 kHz (centred frames: 1 + n // hop)."""
    return 1 + n_samples // HOP_LENGTH
