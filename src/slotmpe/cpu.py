"""What this CPU offers for numeric precision, read without importing torch.

:func:`cpu_info` reads ``/proc/cpuinfo`` once: the model name and which of :data:`REPORTED_FLAGS`
the CPU reports. :mod:`slotmpe.precision` decides bf16 autocast from it, training runs record it
in their checkpoints and logs, and ``slotmpe --version`` / ``slotmpe info`` print it (so that a bug
report says which kernels the machine could use).
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

REPORTED_FLAGS: tuple[str, ...] = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
"""The ``/proc/cpuinfo`` flags that matter to float32 / bfloat16 speed, in this order."""
NATIVE_BF16_FLAGS: tuple[str, ...] = ("amx_bf16", "avx512_bf16")
"""Flags with which a CPU computes bfloat16 natively (AMX, AVX-512 BF16)."""


@functools.cache
def cpu_info() -> dict[str, object]:
    """``{"model": str, "flags": [str, ...]}`` of this CPU (the flags of :data:`REPORTED_FLAGS`
    it has), read from ``/proc/cpuinfo`` (``platform.processor()`` where that file is missing)."""
    model, flags = platform.processor() or platform.machine(), set()
    path = Path("/proc/cpuinfo")
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and value.strip():
                model = value.strip()
            elif key == "flags":
                flags |= set(value.split())
    return {"model": model, "flags": [f for f in REPORTED_FLAGS if f in flags]}


def cpu_summary() -> str:
    """One line, e.g. ``"Intel(R) Xeon(R) Processor [avx2 avx512f amx_bf16]"``."""
    info = cpu_info()
    return f"{info['model']} [{' '.join(info['flags'])}]"  # type: ignore[arg-type]


def cpu_native_bf16(info: dict[str, object] | None = None) -> bool:
    """Whether the CPU (``info``, default :func:`cpu_info`) computes bfloat16 natively."""
    flags = (info or cpu_info())["flags"]
    return any(f in flags for f in NATIVE_BF16_FLAGS)  # type: ignore[operator]


__all__ = ["NATIVE_BF16_FLAGS", "REPORTED_FLAGS", "cpu_info", "cpu_native_bf16", "cpu_summary"]
