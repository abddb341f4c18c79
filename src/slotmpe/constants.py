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
UNKNOWN_FAMILY: Final[str] = "unknown"
"""Family of a user's instrument outside :data:`INSTRUMENT_FAMILY` given without a family (the
``folder`` format's open vocabulary): such sources are in the mixture and source targets but in no
family roll, so family-level experiments (1b, 1c) refuse a dataset that has them."""
MANIFEST_FAMILIES: Final[tuple[str, ...]] = (*FAMILIES, NON_PITCHED_FAMILY, UNKNOWN_FAMILY)
"""Every value the manifest's ``family`` column may take."""
FAMILY_ALIASES: Final[dict[str, str]] = {
    "drums": NON_PITCHED_FAMILY,
    "drum": NON_PITCHED_FAMILY,
    "perc": NON_PITCHED_FAMILY,
    "keyboard": "keyboards",
    "keys": "keyboards",
    "string": "strings",
    "woodwind": "woodwinds",
}
"""Other spellings accepted for a family (``drums`` and ``percussion`` are the same family)."""

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


def canonical_family(name: str) -> str | None:
    """Family named by ``name`` (case-insensitive, through :data:`FAMILY_ALIASES`), or None.

    Accepts the four pitched families and ``percussion``/``drums``; :data:`UNKNOWN_FAMILY` is not a
    name a user gives, so it is refused here.
    """
    n = name.strip().lower()
    n = FAMILY_ALIASES.get(n, n)
    return n if n in (*FAMILIES, NON_PITCHED_FAMILY) else None


def family_problem(instrument: str, family: str) -> str | None:
    """Why ``family`` cannot go with ``instrument`` in a manifest row, or None if it can.

    ``family`` must be one of :data:`MANIFEST_FAMILIES`; a built-in instrument (a key of
    :data:`INSTRUMENT_FAMILY`) must have its own family; any other instrument name may have any
    family (the open vocabulary of users' data).
    """
    if family not in MANIFEST_FAMILIES:
        return f"family {family!r} is not one of {', '.join(MANIFEST_FAMILIES)}"
    known = INSTRUMENT_FAMILY.get(instrument)
    if known is not None and family != known:
        return f"family {family!r} does not match instrument {instrument!r} (family {known!r})"
    return None


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
