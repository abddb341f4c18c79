"""Audio I/O with soundfile and resampling with soxr, with clear errors for bad input.

Every reader in the package goes through :func:`load_audio`, so corrupt, empty, silent or
non-finite audio is reported the same way everywhere: an :class:`AudioError` naming the file.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from slotmpe.constants import SAMPLE_RATE
from slotmpe.utils import atomic_path

SILENCE_PEAK = 1e-6  # a file whose absolute peak is below this is considered silent

_FORMAT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "WAV": (".wav", ".wave"),
    "WAVEX": (".wav",),
    "RF64": (".rf64",),
    "W64": (".w64",),
    "FLAC": (".flac",),
    "OGG": (".ogg", ".oga"),
    "MP3": (".mp3",),
    "AIFF": (".aif", ".aiff", ".aifc"),
    "AU": (".au", ".snd"),
    "CAF": (".caf",),
    "IRCAM": (".sf",),
    "NIST": (".nist", ".sph"),
    "VOC": (".voc",),
}
"""File extensions of the audio container formats of libsndfile (``soundfile`` format keys).
Header-less RAW and the data/sampler formats (MAT, HTK, XI, SDS, ...) are not audio files one
would find in a dataset and are left out."""
OTHER_AUDIO_EXTENSIONS: tuple[str, ...] = (
    ".m4a", ".mp4", ".aac", ".alac", ".wma", ".webm", ".mka", ".ape", ".wv", ".mpc", ".ac3",
    ".amr", ".mp2", ".dsf", ".dff", ".opus",
)
"""Audio formats libsndfile never reads (AAC/ALAC in MP4, WMA, ...); ``.opus`` unless libsndfile
has the Opus codec."""


@functools.cache
def readable_audio_extensions() -> tuple[str, ...]:
    """Lower-case extensions (with the dot) of the audio formats soundfile reads on this install.

    Derived from ``soundfile.available_formats()`` (MP3 needs libsndfile >= 1.1, Opus >= 1.0.29)
    through ``_FORMAT_EXTENSIONS``; the single list every audio-file search of the package uses.
    """
    formats = set(sf.available_formats())
    exts = [e for fmt, es in _FORMAT_EXTENSIONS.items() if fmt in formats for e in es]
    if "OGG" in formats and "OPUS" in sf.available_subtypes("OGG"):
        exts.append(".opus")
    return tuple(sorted(set(exts)))


def unreadable_audio_extensions() -> tuple[str, ...]:
    """Extensions of audio formats that soundfile cannot read on this install (sorted)."""
    known = {e for es in _FORMAT_EXTENSIONS.values() for e in es} | set(OTHER_AUDIO_EXTENSIONS)
    return tuple(sorted(known - set(readable_audio_extensions())))


def is_audio_file(path: str | os.PathLike[str]) -> bool:
    """True for a file whose extension is one of :func:`readable_audio_extensions`."""
    return Path(path).suffix.lower() in readable_audio_extensions()


def audio_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Readable audio files directly in ``folder`` (not hidden ones), sorted by name; [] if absent."""
    d = Path(folder)
    if not d.is_dir():
        return []
    return sorted(
        p for p in d.iterdir() if p.is_file() and not p.name.startswith(".") and is_audio_file(p)
    )


class AudioError(ValueError):
    """Raised for unreadable, empty, silent or non-finite audio; the message names the file."""


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Down-mix ``(n,)`` or ``(n, channels)`` audio to ``(n,)`` by averaging channels."""
    if audio.ndim == 1:
        return audio
    if audio.ndim == 2:
        return audio.mean(axis=1)
    raise ValueError(f"audio must be 1-D or 2-D (samples, channels), got shape {audio.shape}")


def resample(audio: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resample mono ``(n,)`` float audio from ``sr_in`` to ``sr_out`` with soxr (HQ)."""
    if sr_in == sr_out:
        return audio.astype(np.float32, copy=False)
    out = soxr.resample(audio.astype(np.float32, copy=False), sr_in, sr_out, quality="HQ")
    return np.asarray(out, dtype=np.float32)


def check_audio(audio: np.ndarray, name: str, allow_silent: bool = False) -> None:
    """Raise :class:`AudioError` if ``audio`` is empty, has NaN/inf samples or (unless allowed) is silent."""
    if audio.size == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")
    if not np.all(np.isfinite(audio)):
        n_bad = int((~np.isfinite(audio)).sum())
        raise AudioError(f"{name}: audio has {n_bad} NaN/inf samples")
    if not allow_silent and float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise AudioError(f"{name}: audio is silent (peak below {SILENCE_PEAK:g})")


def load_audio(
    path: str | os.PathLike[str],
    sr: int | None = SAMPLE_RATE,
    allow_silent: bool = False,
) -> tuple[np.ndarray, int]:
    """Read any soundfile-readable file as mono float32, resampled to ``sr`` (``None`` keeps it).

    Returns ``(audio, sample_rate)`` with ``audio`` of shape ``(n,)``.
    Raises :class:`AudioError` (naming the file) if it cannot be read, is empty, is silent
    (unless ``allow_silent``) or contains NaN/inf samples.
    """
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: audio file does not exist")
    try:
        data, sr_in = sf.read(str(p), dtype="float32", always_2d=False)
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError subclasses
        raise AudioError(f"{p}: cannot read audio ({exc})") from exc
    audio = to_mono(np.asarray(data, dtype=np.float32))
    check_audio(audio, str(p), allow_silent=allow_silent)
    if sr is not None and sr_in != sr:
        audio = resample(audio, int(sr_in), int(sr))
        sr_in = sr
    return audio, int(sr_in)


def write_audio(path: str | os.PathLike[str], audio: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Atomically write ``(n,)`` or ``(n, channels)`` float audio as 16-bit PCM WAV/FLAC."""
    p = Path(path)
    subtype = "PCM_16"
    with atomic_path(p) as tmp:
        sf.write(str(tmp), np.asarray(audio, dtype=np.float32), sr, subtype=subtype, format=None)
