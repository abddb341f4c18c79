"""The wide log-CQT front end in plain NumPy/soxr: block-wise, bounded memory, no torch or librosa.

:func:`slotmpe.features.cqt_wide` (librosa's recursive CQT) defines the model input used for
training and evaluation. This module computes the same thing with the same algorithm, so that
``slotmpe transcribe`` needs neither torch nor librosa, and so that long files (and live input) are
processed in blocks:

* **Filters**: per octave, librosa's wavelet filter bank (Hann window, L1 norm, relative bandwidth
  from the neighbouring bins, ``filter_scale = 1``), zero-padded to a power of two ``n_fft``, scaled
  by ``length / n_fft``, Fourier transformed and sparsified (the smallest entries holding 1 % of each
  row's L1 mass set to 0), exactly as ``librosa.core.constantq.__vqt_filter_fft`` (librosa 0.11) does.
  The rows are kept dense (``36 x (n_fft/2 + 1)``, at most 129 columns here).
* **Recursion**: octave 0 (the top 36 bins) is computed at 16 kHz with hop 512; the signal is then
  halved with soxr (``HQ``, scaled by sqrt 2 as librosa's ``resample(scale=True)``) and the hop
  halved, for 10 octaves (the last holds the single lowest bin). Each octave's response is a
  centred STFT (rectangular window, zero padding) times the filter rows.
* **Blocks**: frames ``[f0, f1)`` are computed from the audio segment
  ``[f0 * 512 - context, f1 * 512 + context)`` (clipped to the signal) and only the frames of the
  block are kept. With :data:`CONTEXT_FRAMES` frames of context (~6 s) on both sides the result is
  that of the whole file up to float rounding (measured max abs difference of the log-compressed
  map ~1e-6, ``tests/test_cqt.py``); the longest filter (the 15 Hz bin) spans ~4 s.

Magnitudes are divided by the filter lengths (a sinusoid of amplitude ``A`` reads ``A / 2`` at its
bin) and mapped to ``[0, 1]`` by :func:`log_compress` with the file's maximum as reference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache

import numpy as np
import soxr

from slotmpe.constants import (
    BINS_PER_OCTAVE,
    FMIN,
    HARMONIC_SHIFTS,
    HOP_LENGTH,
    N_BINS,
    SAMPLE_RATE,
)

WIDE_OFFSET: int = BINS_PER_OCTAVE  # 36: wide bin of model bin 0 (one octave below for h = 0.5)
WIDE_FMIN: float = FMIN * 2.0 ** (-WIDE_OFFSET / BINS_PER_OCTAVE)  # ~15.13 Hz
N_WIDE: int = 325  # top bin ~7751 Hz: the highest whose filter fits below 8 kHz (tested)
TOP_DB: float = 80.0  # dynamic range of the log compression
LOG_FLOOR: float = 10.0 ** (-TOP_DB / 20.0)
N_OCTAVES: int = math.ceil(N_WIDE / BINS_PER_OCTAVE)  # 10 (the last holds one bin)
CONTEXT_FRAMES: int = 188  # ~6.0 s of audio on each side of a block (a multiple of the hop)
BLOCK_FRAMES: int = 938  # ~30 s per block in file mode


def wide_frequencies() -> np.ndarray:
    """Centre frequencies in Hz of the ``N_WIDE`` wide-CQT bins, float64 ``(N_WIDE,)``."""
    return WIDE_FMIN * 2.0 ** (np.arange(N_WIDE) / BINS_PER_OCTAVE)


def _relative_bandwidth(freqs: np.ndarray) -> np.ndarray:
    """librosa's ``filters._relative_bandwidth``: ``alpha`` per bin from its neighbours' spacing."""
    bpo = np.empty_like(freqs)
    logf = np.log2(freqs)
    bpo[0] = 1 / (logf[1] - logf[0])
    bpo[-1] = 1 / (logf[-1] - logf[-2])
    bpo[1:-1] = 2 / (logf[2:] - logf[:-2])
    return (2.0 ** (2 / bpo) - 1) / (2.0 ** (2 / bpo) + 1)


def filter_lengths(sr: float = SAMPLE_RATE) -> np.ndarray:
    """Length in samples at ``sr`` of each wide-CQT filter, float64 ``(N_WIDE,)`` (``Q sr / f``)."""
    freqs = wide_frequencies()
    return (1.0 / _relative_bandwidth(freqs)) * sr / freqs


def _hann(n: int) -> np.ndarray:
    """Periodic Hann window of length ``n`` (scipy ``get_window('hann', n)``)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _sparsify_rows(x: np.ndarray, quantile: float = 0.01) -> np.ndarray:
    """librosa's ``util.sparsify_rows`` kept dense: per row, zero the smallest entries whose
    magnitudes sum to less than ``quantile`` of the row's L1 norm."""
    mags = np.abs(x)
    mag_sort = np.sort(mags, axis=1)
    cumulative = np.cumsum(mag_sort / mags.sum(axis=1, keepdims=True), axis=1)
    idx = np.argmin(cumulative < quantile, axis=1)
    keep = mags >= mag_sort[np.arange(len(x)), idx][:, None]
    return np.where(keep, x, 0)


@dataclass(frozen=True)
class _Octave:
    rows: slice  # wide-CQT rows of this octave
    n_fft: int
    hop: int  # hop at this octave's sample rate
    basis: np.ndarray  # complex64 (n_bins, n_fft // 2 + 1)


@cache
def _octaves() -> tuple[_Octave, ...]:
    """Filter bases of the 10 octaves, top octave first (librosa ``vqt``'s loop)."""
    freqs = wide_frequencies()
    alpha = _relative_bandwidth(freqs)
    out = []
    sr, hop = float(SAMPLE_RATE), HOP_LENGTH
    for i in range(N_OCTAVES):
        hi = N_WIDE - BINS_PER_OCTAVE * i
        lo = max(0, hi - BINS_PER_OCTAVE)
        f, a = freqs[lo:hi], alpha[lo:hi]
        lengths = (1.0 / a) * sr / f
        max_len = int(2.0 ** np.ceil(np.log2(lengths.max())))
        filt = np.zeros((len(f), max_len), dtype=np.complex64)
        for j, (ilen, freq) in enumerate(zip(lengths, f, strict=True)):
            sig = np.exp(1j * np.arange(-ilen // 2, ilen // 2, dtype=float) * 2 * np.pi * freq / sr)
            sig = sig * _hann(len(sig))
            sig = sig / np.abs(sig).sum()
            start = (max_len - len(sig)) // 2  # librosa.util.pad_center
            filt[j, start : start + len(sig)] = sig
        filt = filt * (lengths[:, None] / float(max_len))
        basis = np.fft.fft(filt, n=max_len, axis=1)[:, : max_len // 2 + 1]
        basis = _sparsify_rows(basis).astype(np.complex64) * np.sqrt(SAMPLE_RATE / sr)
        out.append(_Octave(slice(lo, hi), max_len, hop, basis.astype(np.complex64)))
        if hop % 2 == 0:
            hop //= 2
            sr /= 2.0
    return tuple(out)


@cache
def _length_scale() -> np.ndarray:
    """``1 / filter length`` at 16 kHz per wide bin, float32 ``(N_WIDE, 1)``."""
    return (1.0 / filter_lengths()).astype(np.float32)[:, None]


def _halve(y: np.ndarray) -> np.ndarray:
    """librosa ``resample(y, orig_sr=2, target_sr=1, res_type='soxr_hq', scale=True)``."""
    n_out = int(np.ceil(len(y) * 0.5))
    out = np.asarray(soxr.resample(y, 2, 1, quality="HQ"), dtype=np.float32)
    if len(out) < n_out:
        out = np.pad(out, (0, n_out - len(out)))
    out = out[:n_out]
    out *= np.float32(math.sqrt(2.0))
    return out


def _stft_response(y: np.ndarray, oc: _Octave, first: int, count: int) -> np.ndarray:
    """``|basis @ STFT|`` for frames ``first .. first + count - 1`` of ``y`` (centred frames,
    rectangular window, zero padding): float32 ``(n_bins, count)``."""
    half = oc.n_fft // 2
    pad_lo = max(0, half - first * oc.hop)
    end_needed = (first + count - 1) * oc.hop + half + 1
    y_start = max(0, first * oc.hop - half)
    seg = y[y_start:end_needed]
    pad_hi = max(0, end_needed - max(len(y), y_start))
    ypad = np.pad(seg, (pad_lo, pad_hi)) if pad_lo or pad_hi else seg
    frames = np.lib.stride_tricks.as_strided(
        ypad, shape=(count, oc.n_fft), strides=(ypad.strides[0] * oc.hop, ypad.strides[0]),
        writeable=False,
    )
    spec = np.fft.rfft(frames, axis=1)  # (count, n_fft/2 + 1) complex128
    return np.abs(spec.astype(np.complex64) @ oc.basis.T).T  # (n_bins, count)


def cqt_magnitude(y: np.ndarray, first: int = 0, count: int | None = None) -> np.ndarray:
    """Calibrated wide-CQT magnitudes of frames ``[first, first + count)`` of 16 kHz mono ``y``.

    ``y`` must start on a frame boundary of the signal it was cut from (frame ``t`` of ``y`` is
    centred on sample ``t * 512``); frames near ``y``'s edges see zeros beyond them. Returns
    float32 ``(N_WIDE, count)`` (``count`` defaults to ``1 + len(y) // 512 - first``).
    """
    y = np.ascontiguousarray(y, dtype=np.float32)
    total = 1 + len(y) // HOP_LENGTH
    if count is None:
        count = total - first
    out = np.empty((N_WIDE, count), dtype=np.float32)
    cur = y
    for oc in _octaves():
        out[oc.rows] = _stft_response(cur, oc, first, count)
        if oc.hop % 2 == 0:
            cur = _halve(cur)
            # the next octave's frame t sits at sample t * hop / 2 of the halved signal
    out *= _length_scale()
    return out


def log_compress(mag: np.ndarray, ref: float | None = None) -> np.ndarray:
    """Map a magnitude CQT ``(F, T)`` to ``[0, 1]``: dB re ``ref`` (default: its maximum), floored
    at -80 dB, /80 + 1. Returns float32 of the same shape; all zeros when ``ref`` is not > 0."""
    mag = np.asarray(mag, dtype=np.float32)
    if ref is None:
        ref = float(mag.max()) if mag.size else 0.0
    if not ref > 0.0 or not math.isfinite(ref):
        return np.zeros(mag.shape, dtype=np.float32)
    out = np.maximum(mag, np.float32(ref * LOG_FLOOR))
    out /= np.float32(ref)
    np.log10(out, out=out)
    out *= np.float32(20.0 / TOP_DB)
    out += np.float32(1.0)
    np.minimum(out, np.float32(1.0), out=out)
    return out


class BlockCQT:
    """Incremental wide-CQT magnitudes of a 16 kHz mono stream fed in arbitrary pieces.

    :meth:`push` appends samples and returns the magnitude frames ``(N_WIDE, n)`` that became
    computable, each from ``context`` frames of audio on both sides (``lookahead`` frames on the
    future side when given: less latency, frames near the block edge then see zeros beyond it);
    :meth:`finish` returns the rest. Memory is bounded by ``block + 2 * context`` frames of audio.

    Args:
        block: frames computed per step once enough audio is there.
        context: frames of past audio kept (and of future audio waited for) per block.
        lookahead: frames of future audio waited for (default ``context``).
    """

    def __init__(self, block: int = BLOCK_FRAMES, context: int = CONTEXT_FRAMES,
                 lookahead: int | None = None) -> None:
        self.block = int(block)
        self.context = int(context)
        self.lookahead = self.context if lookahead is None else int(lookahead)
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # absolute sample index of _buf[0] (a multiple of the hop)
        self._next = 0  # next frame to emit
        self.n_samples = 0

    def _compute(self, f1: int, end_sample: int) -> np.ndarray:
        f0 = self._next
        seg_start = max(0, (f0 - self.context) * HOP_LENGTH)
        lo = seg_start - self._buf_start
        seg = self._buf[lo : max(lo, end_sample - self._buf_start)]
        mag = cqt_magnitude(seg, first=f0 - seg_start // HOP_LENGTH, count=f1 - f0)
        self._next = f1
        keep_from = max(0, (self._next - self.context) * HOP_LENGTH)  # drop audio no longer needed
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start :]
            self._buf_start = keep_from
        return mag

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append samples ``(n,)``; returns the newly computable frames ``(N_WIDE, m)``."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._buf = np.concatenate((self._buf, samples)) if len(self._buf) else samples.copy()
        self.n_samples += len(samples)
        outs = []
        while True:
            f1 = self._next + self.block
            end_sample = (f1 + self.lookahead) * HOP_LENGTH
            if self.n_samples < end_sample:
                break
            outs.append(self._compute(f1, end_sample))
        if not outs:
            return np.zeros((N_WIDE, 0), dtype=np.float32)
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=1)

    def finish(self) -> np.ndarray:
        """The remaining frames (the signal has ``1 + n_samples // 512`` frames in all)."""
        total = 1 + self.n_samples // HOP_LENGTH
        outs = []
        while self._next < total:
            f1 = min(total, self._next + self.block)
            outs.append(self._compute(f1, self.n_samples))
        if not outs:
            return np.zeros((N_WIDE, 0), dtype=np.float32)
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=1)


def cqt_magnitude_blocks(pieces: Iterable[np.ndarray], block: int = BLOCK_FRAMES,
                         context: int = CONTEXT_FRAMES) -> Iterator[np.ndarray]:
    """Magnitude frames ``(N_WIDE, m)`` of a 16 kHz mono stream given as pieces, block by block."""
    acc = BlockCQT(block, context)
    for piece in pieces:
        out = acc.push(piece)
        if out.shape[1]:
            yield out
    out = acc.finish()
    if out.shape[1]:
        yield out


def cqt_wide_np(y: np.ndarray, block: int = BLOCK_FRAMES, context: int = CONTEXT_FRAMES
                ) -> np.ndarray:
    """Log-compressed wide CQT ``(N_WIDE, 1 + len(y) // 512)`` of 16 kHz mono ``y`` (blocks)."""
    mag = np.concatenate(list(cqt_magnitude_blocks([y], block, context)), axis=1)
    return log_compress(mag)


def _hcqt_blocks() -> tuple[tuple[int, int, int, int], ...]:
    """Per harmonic: model-bin range ``[b0, b1)`` and its wide-CQT source rows ``[r0, r1)``."""
    blocks = []
    for shift in HARMONIC_SHIFTS:
        lo = WIDE_OFFSET + shift  # wide row of model bin 0 for this harmonic
        r0, r1 = max(lo, 0), min(lo + N_BINS, N_WIDE)
        blocks.append((r0 - lo, r1 - lo, r0, r1))
    return tuple(blocks)


HCQT_BLOCKS = _hcqt_blocks()


def hcqt_np(cqt: np.ndarray) -> np.ndarray:
    """Fast-HCQT ``(..., 12, 216, T)`` of a wide CQT ``(..., N_WIDE, T)`` (numpy; see
    :func:`slotmpe.features.hcqt_from_cqt`, which this is for numpy input)."""
    arr = np.asarray(cqt)
    if arr.ndim < 2 or arr.shape[-2] != N_WIDE:
        raise ValueError(f"hcqt expects (..., N_WIDE={N_WIDE}, T), got {tuple(arr.shape)}")
    n_h = len(HARMONIC_SHIFTS)
    dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.dtype(np.float32)
    out = np.zeros((*arr.shape[:-2], 2 * n_h, N_BINS, arr.shape[-1]), dtype=dtype)
    for h, (b0, b1, r0, r1) in enumerate(HCQT_BLOCKS):
        out[..., h, b0:b1, :] = arr[..., r0:r1, :]
        out[..., n_h + h, b0:b1, :] = 1.0
    return out
