"""Numeric precision of training and inference: ``auto | fp32 | bf16``.

``auto`` means bfloat16 autocast where the hardware computes it natively: on CUDA, and on CPUs
that report AMX (``amx_bf16``) or AVX-512 BF16 (``avx512_bf16``) in ``/proc/cpuinfo``; float32
everywhere else. On a 2-core AMD EPYC without native bf16 the autocast path was ~9x *slower* than
float32 (round 2), while on an Intel Xeon with AMX-BF16 it gave 1.6x on the slot model and 1.9x
on the timbre encoder (issue 21), hence the hardware test. Under autocast the convolutions and
matrix products run in bf16; losses, softmax statistics and the optimiser stay in float32.
"""

from __future__ import annotations

import contextlib

import torch

# the CPU facts live in a torch-free module (slotmpe --version reads them); re-exported here
from slotmpe.cpu import NATIVE_BF16_FLAGS, REPORTED_FLAGS, cpu_info, cpu_summary

PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 natively (CUDA, or a CPU with AMX / AVX-512 BF16)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return True
    if kind != "cpu":
        return False
    return any(f in cpu_info()["flags"] for f in NATIVE_BF16_FLAGS)  # type: ignore[operator]


def resolve_precision(precision: str | None, device: torch.device | str) -> str:
    """``"bf16"`` or ``"fp32"`` for a configured ``precision`` (``None`` = ``"auto"``) on ``device``.

    ``bf16`` asked for explicitly is honoured on any device (slow without native support);
    ``auto`` is bf16 only where :func:`native_bf16` holds.
    """
    p = "auto" if precision is None else str(precision)
    if p not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if p == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return p


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for a *resolved* ``precision`` (``"bf16"``); a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"resolve the precision first (fp32 or bf16); got {precision!r}")
    kind = torch.device(device).type
    return torch.autocast(device_type=kind, dtype=torch.bfloat16)


__all__ = ["NATIVE_BF16_FLAGS", "PRECISIONS", "REPORTED_FLAGS", "autocast", "cpu_info",
           "cpu_summary", "native_bf16", "resolve_precision"]
