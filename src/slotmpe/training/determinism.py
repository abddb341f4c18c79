"""Reproducible numerics for a training run (CPU and CUDA)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

CUBLAS_WORKSPACE = ":4096:8"


@contextlib.contextmanager
def deterministic_mode(device: torch.device | str, enabled: bool = True) -> Iterator[None]:
    """Reproducible numerics for the duration of a run; everything is restored afterwards.

    ``enabled``: ``torch.use_deterministic_algorithms(True, warn_only=True)`` (ops without a
    deterministic implementation warn) without its NaN fill of uninitialised memory; on CUDA also ``CUBLAS_WORKSPACE_CONFIG`` (set to
    ``:4096:8`` unless already set; cuBLAS reads it when it first initialises, so set it in the
    environment to be sure), TF32 off for matmuls and cuDNN, cuDNN deterministic and not
    benchmarking. Not ``enabled`` on CUDA: TF32 and cuDNN benchmarking on (fast, not reproducible).
    On the CPU, disabled means torch's defaults.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    prev_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    prev_env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    prev_fill = torch.utils.deterministic.fill_uninitialized_memory
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Deterministic mode would also fill every torch.empty with NaN (a debugging aid against
        # reading uninitialised memory); no op of ours reads it, so skipping the fill gives the
        # same parameters bit for bit, 1.07x faster (issue 21; tests/test_training.py).
        torch.utils.deterministic.fill_uninitialized_memory = False
    if cuda:
        if enabled and prev_env is None:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not enabled
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = enabled, not enabled
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
        torch.utils.deterministic.fill_uninitialized_memory = prev_fill
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev_tf32
        if cuda and enabled and prev_env is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


