"""Audio input of ``slotmpe transcribe``: a file (or stdin) read in blocks as 16 kHz mono float32.

:func:`open_audio` checks the file and returns an :class:`AudioSource` whose :meth:`blocks
<AudioSource.blocks>` yields 16 kHz mono pieces: soundfile reads ``BLOCK_SECONDS`` of the file at a
time, channels are averaged and soxr's streaming resampler (``HQ``, the quality of
:func:`slotmpe.audio.resample`) converts the rate, so memory does not grow with the file.

Every problem is one :class:`~slotmpe.audio.AudioError` line naming the file:

* a file libsndfile cannot decode (e.g. an MP4/AAC file named ``.mp3``, or a text file named
  ``.wav``): ``undecodable format`` with the format the name suggests and libsndfile's reason;
* samples that are NaN/inf, or finite but beyond :data:`MAX_ABS_SAMPLE` (a float file with a peak
  of 3e38 overflows every later sum): ``values out of range`` with the peak;
* an empty (0-byte or 0-sample) or silent file.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile as sf
import soxr

from slotmpe.audio import SILENCE_PEAK, AudioError
from slotmpe.constants import SAMPLE_RATE

BLOCK_SECONDS: float = 10.0  # seconds of the file read at a time
# Float audio is nominally in [-1, 1]; a peak above this (60 dB over full scale) is an error.
MAX_ABS_SAMPLE: float = 1000.0
STDIN: str = "-"  # the file name that means standard input


@dataclass
class AudioSource:
    """An opened audio input (file or stdin); see :meth:`blocks`.

    ``name`` is used in messages; ``sample_rate``/``channels``/``frames`` are the file's own
    (``frames`` is -1 when unknown, e.g. for a pipe).
    """

    name: str
    sample_rate: int
    channels: int
    frames: int
    _file: Any = field(repr=False, default=None)
    n_samples_16k: int = 0  # samples yielded so far
    peak: float = 0.0  # absolute peak of the mono signal read so far

    @property
    def duration_s(self) -> float:
        """Duration in seconds of what was read (the whole input once :meth:`blocks` is done)."""
        return self.n_samples_16k / SAMPLE_RATE

    def blocks(self, seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
        """Yield 16 kHz mono float32 pieces ``(n,)`` of the input, in order; closes the file.

        Raises :class:`AudioError` for out-of-range samples (as soon as they are read), and at the
        end for an empty or silent input.
        """
        size = max(1, int(round(seconds * self.sample_rate)))
        rs = (None if self.sample_rate == SAMPLE_RATE
              else soxr.ResampleStream(self.sample_rate, SAMPLE_RATE, 1, dtype="float32",
                                       quality="HQ"))
        try:
            while True:
                try:
                    data = self._file.read(size, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as exc:
                    raise AudioError(f"{self.name}: cannot decode audio ({_reason(exc)})") from exc
                last = len(data) < size
                mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
                if mono.size:
                    self._check(mono)
                if rs is not None:
                    mono = rs.resample_chunk(np.ascontiguousarray(mono, dtype=np.float32),
                                             last=last)
                if mono.size:
                    self.n_samples_16k += len(mono)
                    yield np.asarray(mono, dtype=np.float32)
                if last:
                    break
        finally:
            self._file.close()
        if self.n_samples_16k == 0:
            raise AudioError(f"{self.name}: audio is empty (0 samples)")
        if self.peak < SILENCE_PEAK:
            raise AudioError(f"{self.name}: audio is silent (peak below {SILENCE_PEAK:g})")

    def read_all(self) -> np.ndarray:
        """The whole input as one 16 kHz mono float32 array ``(n,)``."""
        pieces = list(self.blocks())
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]

    def _check(self, mono: np.ndarray) -> None:
        peak = float(np.max(np.abs(mono)))
        if not np.isfinite(peak):
            n_bad = int((~np.isfinite(mono)).sum())
            raise AudioError(f"{self.name}: values out of range ({n_bad} NaN/inf samples)")
        if peak > MAX_ABS_SAMPLE:
            raise AudioError(
                f"{self.name}: values out of range (peak {peak:.3g}; float audio should lie in "
                f"[-1, 1], at most {MAX_ABS_SAMPLE:g} is accepted)"
            )
        self.peak = max(self.peak, peak)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    for prefix in ("Error opening", "Internal error"):
        if text.startswith(prefix) and ": " in text:
            text = text.split(": ", 1)[1]
    return text or type(exc).__name__


@contextlib.contextmanager
def _quiet_c_stderr() -> Iterator[None]:
    """Silence what C libraries print on file descriptor 2 (libmpg123's "Note: Illegal
    Audio-MPEG-Header ..." lines for a file that is not MP3), so an error stays one line."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (e.g. captured by a test runner)
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def open_audio(path: str | os.PathLike[str], stdin: BinaryIO | None = None) -> AudioSource:
    """Open ``path`` (``"-"``: standard input, any format soundfile reads from a stream) for
    block-wise reading; raises :class:`AudioError` (one line naming the file) when it cannot."""
    name = str(path)
    if name == STDIN:
        fd = (stdin if stdin is not None else sys.stdin.buffer).fileno()
        try:  # a file descriptor: libsndfile reads WAV/AIFF/AU/FLAC from pipes
            f = sf.SoundFile(fd, closefd=False)
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            raise AudioError(f"<stdin>: undecodable format ({_reason(exc)})") from exc
        return AudioSource("<stdin>", int(f.samplerate), int(f.channels), -1, f)
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: audio file does not exist")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: file is empty (0 bytes)")
    try:
        with _quiet_c_stderr():
            f = sf.SoundFile(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        kind = p.suffix.lstrip(".").upper() or "audio"
        reason = _reason(exc)
        if "does not exist" in reason:  # libsndfile's words for data it does not recognise
            reason = "the data is not in a format libsndfile recognises"
        raise AudioError(f"{p}: undecodable format (not a readable {kind} file: {reason})") from exc
    if int(f.samplerate) <= 0:
        f.close()
        raise AudioError(f"{p}: invalid sample rate {f.samplerate}")
    return AudioSource(str(p), int(f.samplerate), int(f.channels), int(f.frames), f)
