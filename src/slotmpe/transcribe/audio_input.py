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
* an empty (0-byte or 0-sample) or silent file;
* a path that is no file: a dangling symbolic link, a link loop, a device (``/dev/urandom``), a
  named pipe (pass its audio on stdin as ``-``) or a socket, each named as such.

Standard input (``-``): libsndfile decodes WAV, RF64, AIFF and AU sequentially, so these are read
from a pipe block by block as they arrive (live input: ``sox -d -t wav - | slotmpe transcribe -
--stream``). Its FLAC, Ogg and MP3 decoders seek, which a pipe cannot do (FLAC fails with "flac
decoder lost sync", MP3 returns short reads and drops the end), so any other format is first read
to the end of the input into a spooled temporary file (in memory up to
:data:`STDIN_SPOOL_BYTES`, then on disk) and decoded from there. A redirected regular file
(``- < song.flac``) is seekable and read in place. When the decoder stops before the number of
frames the header announces, a warning names the input and both durations.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile as sf
import soxr

from slotmpe.audio import SILENCE_PEAK, AudioError
from slotmpe.constants import SAMPLE_RATE
from slotmpe.utils import get_logger

log = get_logger(__name__)

BLOCK_SECONDS: float = 10.0  # seconds of the file read at a time
# Float audio is nominally in [-1, 1]; a peak above this (60 dB over full scale) is an error.
MAX_ABS_SAMPLE: float = 1000.0
STDIN: str = "-"  # the file name that means standard input
STDIN_NAME: str = "stdin"  # output base name of standard input (``stdin.mid``, ...)
# Headers of the formats libsndfile decodes from a pipe without seeking (RIFF/RF64 WAV, AIFF, AU).
PIPE_SAFE_MAGIC: tuple[bytes, ...] = (b"RIFF", b"RF64", b"FORM", b".snd")
STDIN_SPOOL_BYTES: int = 64 * 2**20  # stdin of other formats: in memory up to this, then on disk


def input_stem(path: str | os.PathLike[str]) -> str:
    """Output base name of an input: the file's stem, :data:`STDIN_NAME` for ``-`` (stdin)."""
    return STDIN_NAME if str(path) == STDIN else Path(path).stem


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
    _closers: list[Any] = field(repr=False, default_factory=list)  # called by :meth:`close`
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
        n_read = 0  # frames decoded, at the input's own rate
        try:
            while True:
                try:
                    data = self._file.read(size, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as exc:
                    raise AudioError(f"{self.name}: cannot decode audio ({_reason(exc)})") from exc
                # only an empty read ends the input: decoders may return short reads before it
                last = len(data) == 0
                n_read += len(data)
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
            self.close()
        if 0 < n_read < self.frames:
            log.warning("%s: decoding stopped after %.2f s of the %.2f s the header announces "
                        "(truncated or corrupt input?)", self.name, n_read / self.sample_rate,
                        self.frames / self.sample_rate)
        if self.n_samples_16k == 0:
            raise AudioError(f"{self.name}: audio is empty (0 samples)")
        if self.peak < SILENCE_PEAK:
            raise AudioError(f"{self.name}: audio is silent (peak below {SILENCE_PEAK:g})")

    def close(self) -> None:
        """Close the decoder and whatever feeds it (a spool or a pipe)."""
        self._file.close()
        for closer in self._closers:
            closer()
        self._closers.clear()

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


def _read_head(fd: int, n: int) -> bytes:
    """Up to ``n`` bytes from ``fd`` (fewer only at the end of the input)."""
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def _pipe_with_head(head: bytes, fd: int) -> tuple[int, threading.Thread]:
    """A new pipe that yields ``head`` and then everything else read from ``fd``.

    A thread copies; it ends at the end of the input or when the reading end is closed.
    Returns ``(read fd, thread)``.
    """
    r, w = os.pipe()

    def copy() -> None:
        try:
            with open(w, "wb", buffering=0) as out:
                out.write(head)
                while chunk := os.read(fd, 1 << 16):
                    out.write(chunk)
        except OSError:  # the reader closed its end (an error or an early stop): nothing to do
            pass

    thread = threading.Thread(target=copy, name="slotmpe-stdin", daemon=True)
    thread.start()
    return r, thread


def _open_stdin(stream: BinaryIO) -> AudioSource:
    """Open standard input (see the module docstring for which formats are read as they arrive)."""
    name = "<stdin>"
    fd = stream.fileno()
    closers: list[Any] = []
    piped = False  # decoded from a pipe: the header's frame count may be a placeholder
    try:
        seekable = os.lseek(fd, 0, os.SEEK_CUR) >= 0 and not os.isatty(fd)
    except OSError:
        seekable = False
    try:
        if seekable:  # a redirected regular file: libsndfile seeks in it as in any file
            f = sf.SoundFile(fd, closefd=False)
        else:
            head = _read_head(fd, 4)
            if not head:
                raise AudioError(f"{name}: audio is empty (0 bytes)")
            if head in PIPE_SAFE_MAGIC:
                r, thread = _pipe_with_head(head, fd)
                closers += [lambda: _close_fd(r), lambda: thread.join(timeout=1.0)]
                piped = True
                f = sf.SoundFile(r, closefd=False)
            else:  # FLAC, Ogg, MP3, ...: decoders that seek; read the input whole first
                spool = tempfile.SpooledTemporaryFile(max_size=STDIN_SPOOL_BYTES)
                closers.append(spool.close)
                spool.write(head)
                with open(fd, "rb", closefd=False) as src:
                    shutil.copyfileobj(src, spool, 1 << 20)
                spool.seek(0)
                with _quiet_c_stderr():
                    f = sf.SoundFile(spool)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        for closer in closers:
            closer()
        raise AudioError(f"{name}: undecodable format ({_reason(exc)})") from exc
    frames = -1 if piped else int(f.frames)
    return AudioSource(name, int(f.samplerate), int(f.channels), frames, f, closers)


def _close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


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


def _missing(p: Path) -> str:
    """Why ``p`` (for which ``exists()`` is False) cannot be opened: absent, a dangling link or a
    link loop."""
    if not p.is_symlink():
        return "audio file does not exist"
    try:
        os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop, not an audio file"
    return f"is a broken symbolic link (its target {os.readlink(p)} does not exist)"


def _special_file(p: Path) -> str:
    """What ``p`` is when it exists but is neither a folder nor a regular file."""
    mode = p.stat().st_mode
    if stat.S_ISFIFO(mode):
        return ("is a pipe, not a regular file; pass a pipe's audio on standard input as '-' "
                "instead")
    kind = ("a character device" if stat.S_ISCHR(mode) else "a block device"
            if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "a special file")
    return f"is {kind}, not an audio file"


def open_audio(path: str | os.PathLike[str], stdin: BinaryIO | None = None) -> AudioSource:
    """Open ``path`` (``"-"``: standard input, any format soundfile reads; see the module
    docstring) for block-wise reading; raises :class:`AudioError` (one line naming the file) when it cannot."""
    name = str(path)
    if name == STDIN:
        return _open_stdin(stdin if stdin is not None else sys.stdin.buffer)
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: {_missing(p)}")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    if not p.is_file():  # st_size is 0 for these: "empty" would name the wrong problem
        raise AudioError(f"{p}: {_special_file(p)}")
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
