"""Per-stem audio effects for the ``electro`` dataset, in numpy/scipy (no GPL runtime dependency).

All functions take and return mono float32 ``(n,)`` audio at sample rate ``sr`` and keep the length
(tails that would run past the end are cut; the builders leave a silent tail for them).
"""

from __future__ import annotations

import numpy as np
from scipy import signal


def feedback_delay(
    x: np.ndarray, sr: int, delay_s: float, feedback: float, wet: float
) -> np.ndarray:
    """Feedback delay (echo): ``y = x + wet * e`` with ``e[n] = x[n - D] + feedback * e[n - D]``.

    ``delay_s`` is the echo period D / sr, ``feedback`` in [0, 1) the level of each further repeat.
    """
    d = max(1, int(round(delay_s * sr)))
    if not 0.0 <= feedback < 1.0:
        raise ValueError(f"feedback must be in [0, 1), got {feedback}")
    x64 = x.astype(np.float64)
    echoes = np.zeros_like(x64)
    # block recursion over echo periods: e[j-th block] = x[(j-1)-th] + feedback * e[(j-1)-th]
    for start in range(d, len(x64), d):
        stop = min(start + d, len(x64))
        n = stop - start
        echoes[start:stop] = (
            x64[start - d : start - d + n] + feedback * echoes[start - d : start - d + n]
        )
    return (x64 + wet * echoes).astype(np.float32)


def reverb(
    x: np.ndarray, sr: int, rt60_s: float, wet: float, rng: np.random.Generator
) -> np.ndarray:
    """Reverb tail: convolution with exponentially decaying, low-passed noise (60 dB decay in ``rt60_s``).

    The impulse response is seeded by ``rng`` and normalised to unit energy; ``wet`` is the level
    of the reverberant part added to the dry signal.
    """
    n_ir = max(1, int(rt60_s * sr))
    t = np.arange(n_ir) / sr
    ir = rng.standard_normal(n_ir) * np.exp(-6.907755 * t / rt60_s)  # ln(1000) = 6.9078
    sos = signal.butter(2, min(6000.0, 0.45 * sr), btype="low", fs=sr, output="sos")
    ir = signal.sosfilt(sos, ir)
    ir[: int(0.01 * sr)] *= np.linspace(0.0, 1.0, int(0.01 * sr))  # 10 ms pre-delay ramp
    ir /= np.sqrt(np.sum(ir**2)) + 1e-12
    tail = signal.fftconvolve(x.astype(np.float64), ir)[: len(x)]
    return (x + wet * tail).astype(np.float32)


def lowpass(x: np.ndarray, sr: int, cutoff_hz: float, order: int = 4) -> np.ndarray:
    """Butterworth low-pass at ``cutoff_hz`` (causal, second-order sections)."""
    sos = signal.butter(order, min(cutoff_hz, 0.45 * sr), btype="low", fs=sr, output="sos")
    return signal.sosfilt(sos, x.astype(np.float64)).astype(np.float32)


def random_chain(
    x: np.ndarray,
    sr: int,
    rng: np.random.Generator,
    p_delay: float = 0.5,
    p_reverb: float = 0.6,
    p_lowpass: float = 0.5,
) -> tuple[np.ndarray, list[str]]:
    """Apply a seeded random subset of low-pass -> feedback delay -> reverb to one stem.

    Returns the processed ``(n,)`` audio and a list describing each effect applied (for provenance).
    """
    applied: list[str] = []
    if rng.random() < p_lowpass:
        fc = float(rng.uniform(1200.0, 5000.0))
        x = lowpass(x, sr, fc)
        applied.append(f"lowpass({fc:.0f}Hz)")
    if rng.random() < p_delay:
        d = float(rng.uniform(0.12, 0.45))
        fb = float(rng.uniform(0.2, 0.55))
        w = float(rng.uniform(0.2, 0.5))
        x = feedback_delay(x, sr, d, fb, w)
        applied.append(f"delay({d:.2f}s,fb={fb:.2f},wet={w:.2f})")
    if rng.random() < p_reverb:
        rt = float(rng.uniform(0.6, 2.2))
        w = float(rng.uniform(0.15, 0.45))
        x = reverb(x, sr, rt, w, rng)
        applied.append(f"reverb(rt60={rt:.2f}s,wet={w:.2f})")
    return x, applied
