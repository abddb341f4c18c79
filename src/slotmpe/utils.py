"""Small shared helpers: atomic file output, seeding, device and thread selection, logging."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def get_logger(name: str) -> logging.Logger:
    """A module logger. Handlers are configured by the entry points (``pipeline.log_to`` for the
    workflow's per-job log files, :func:`configure_logging` for scripts), never at import time."""
    return logging.getLogger(name)


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr at ``level`` if nothing configured logging yet (benchmarks, ad-hoc scripts)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)


def _current_umask() -> int:
    """The process umask (read by setting and restoring it; done once, at import)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def ordinary_mode(is_dir: bool) -> int:
    """Permission bits of a file (``0o666``) or folder (``0o777``) created normally: less the umask.

    Temporary files and folders (:mod:`tempfile`) are owner-only; results renamed into place from
    them get these bits instead.
    """
    return (0o777 if is_dir else 0o666) & ~_UMASK


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the destination folder; rename it onto ``path`` on success.

    Nothing is left behind if the block raises: the temporary file is removed and an existing
    ``path`` is untouched. ``suffix`` defaults to the destination's suffix (so writers that infer
    the format from the file name keep working). The result gets the permissions of a file created
    normally (``0o666`` less the umask), not the owner-only mode of :func:`tempfile.mkstemp`.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dest.name}.", suffix=suffix if suffix is not None else dest.suffix, dir=dest.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, ordinary_mode(tmp.is_dir()))
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def resolve_device(device: str | None = None) -> str:
    """``"cuda"`` when available and not overridden, else ``"cpu"``; an explicit value is checked."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available on this machine")
    return device


def clamp_threads(threads: int) -> int:
    """``threads`` limited to ``[1, cpu_count]``: what torch and onnxruntime are given."""
    return max(1, min(int(threads), os.cpu_count() or 1))


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads to ``min(threads, cpu_count)`` (all CPUs when ``threads`` is
    None or < 1); returns the number used."""
    import torch

    n = (os.cpu_count() or 1) if not threads or threads < 1 else clamp_threads(threads)
    torch.set_num_threads(n)
    return n
