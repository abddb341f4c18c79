"""Self-describing model checkpoints (written atomically).

A checkpoint is a ``torch.save``-d dict::

    {"format": "slotmpe-checkpoint", "format_version": 1,
     "class": "slotmpe.models.slotmpe.SlotMPE",        # import path of the model class
     "kwargs": {"exp": "3c", ...},                      # constructor keyword arguments
     "experiment": "3c" | None,                         # kwargs["exp"] when present
     "state_dict": {...},
     "versions": {"slotmpe": ..., "torch": ..., "python": ...},
     "extra": {...}}                                    # caller's data (epoch, metrics, ...)

The constructor kwargs come from the model's ``config`` attribute (a dict; ``SlotMPE`` and
``TimbreEncoder`` both provide it) unless given explicitly. :func:`load_checkpoint` imports the
stored class and calls it with the stored kwargs, so any class stored this way can be reloaded.
Files are read with ``weights_only=True``: ``extra`` may hold plain Python containers, numbers,
strings and tensors (e.g. an optimizer ``state_dict``); NumPy values and paths are converted on
save, anything else is refused with a ``TypeError`` at save time.
"""

from __future__ import annotations

import importlib
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import slotmpe
from slotmpe.utils import atomic_path

CHECKPOINT_FORMAT = "slotmpe-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or not a slotmpe checkpoint."""


def _class_path(model: nn.Module) -> str:
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def _import_class(path: str) -> type:
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise CheckpointError(f"invalid class path {path!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise CheckpointError(
            f"cannot import module {module_name!r} for class {path!r}: {e}"
        ) from e
    try:
        return getattr(obj, name)
    except AttributeError:
        raise CheckpointError(f"module {module_name!r} has no class {name!r}") from None


def _plain(obj: Any, where: str) -> Any:
    """``obj`` made loadable with ``torch.load(weights_only=True)``.

    Containers are converted recursively, NumPy scalars to Python numbers, NumPy arrays to tensors
    and paths to strings; any other type raises ``TypeError`` naming where it was found.
    """
    if obj is None or isinstance(obj, bool | int | float | str | torch.Tensor):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, dict):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    raise TypeError(
        f"checkpoint {where} holds a {type(obj).__name__}; only Python containers, numbers, "
        "strings, paths, NumPy values and tensors can be stored"
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    extra: dict[str, Any] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> None:
    """Write a self-describing checkpoint of ``model`` to ``path`` atomically.

    Args:
        path: destination file (parent folders are created).
        model: the module; its constructor kwargs are taken from ``model.config`` (a dict)
            unless ``kwargs`` is given.
        extra: additional picklable-with-``weights_only`` data stored under ``"extra"``.
        kwargs: explicit constructor kwargs (overrides ``model.config``).

    Raises:
        TypeError: when no constructor kwargs are available.
    """
    if kwargs is None:
        cfg = getattr(model, "config", None)
        if not isinstance(cfg, dict):
            raise TypeError(
                f"{_class_path(model)} has no dict attribute 'config' with its constructor kwargs; "
                "pass kwargs= to save_checkpoint"
            )
        kwargs = dict(cfg)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "class": _class_path(model),
        "kwargs": _plain(kwargs, "kwargs"),
        "experiment": kwargs.get("exp"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "versions": {
            "slotmpe": slotmpe.__version__,
            "torch": str(torch.__version__),
            "python": platform.python_version(),
        },
        "extra": _plain(dict(extra or {}), "extra"),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """The raw checkpoint dict of ``path`` (validated); raises :class:`CheckpointError`."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt / truncated / not a torch file
        raise CheckpointError(f"checkpoint {p} cannot be read ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p} is not a slotmpe checkpoint (missing format marker)")
    for key in ("class", "kwargs", "state_dict"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {p} lacks the {key!r} entry")
    return ckpt


# What each model class of the package is, for messages about a file of the wrong kind.
MODEL_KINDS: dict[str, str] = {
    "slotmpe.models.slotmpe.SlotMPE": "slot model (results/{dataset}/{exp}/seed{seed}/model.pt)",
    "slotmpe.models.timbre_encoder.TimbreEncoder": (
        "timbre encoder (results/{dataset}/timbre/encoder.pt)"),
}


def checkpoint_kind(class_path: str) -> str:
    """Words for the kind of model a checkpoint's ``class`` entry names (for messages)."""
    return MODEL_KINDS.get(class_path, f"{class_path} model")


def check_kind(path: str | os.PathLike[str], class_path: str, expected: type) -> None:
    """Raise :class:`CheckpointError` naming ``path`` and its kind unless the stored class
    ``class_path`` is ``expected`` or a subclass of it (checked without building the model)."""
    cls = _import_class(class_path)
    if not (isinstance(cls, type) and issubclass(cls, expected)):
        want = checkpoint_kind(f"{expected.__module__}.{expected.__qualname__}")
        raise CheckpointError(
            f"{path}: this is a {checkpoint_kind(class_path)} checkpoint, not a {want}"
        )


def require_kind(path: str | os.PathLike[str], expected: type) -> None:
    """Check that the checkpoint at ``path`` holds an ``expected`` model, reading only its header
    entries (the weights are memory-mapped, not read); raises :class:`CheckpointError`."""
    p = Path(path)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint, or unreadable: read_checkpoint says which
        ckpt = read_checkpoint(p)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "class" not in ckpt:
        raise CheckpointError(f"{p} is not a slotmpe checkpoint (missing format marker)")
    check_kind(p, str(ckpt["class"]), expected)


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
    expected: type | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the stored model and load its weights.

    ``expected``: the model class the caller needs (e.g. ``SlotMPE``); a checkpoint of another
    kind (a timbre ``encoder.pt`` given as a slot model) raises :class:`CheckpointError` naming
    the file and its kind before the model is built.

    Returns:
        ``(model, meta)`` with the model in eval mode on ``map_location`` and ``meta`` the
        checkpoint dict without ``state_dict`` (``class``, ``kwargs``, ``experiment``,
        ``versions``, ``extra``, ...).

    Raises:
        CheckpointError: missing/corrupt file, unknown class, or weights that do not fit.
    """
    ckpt = read_checkpoint(path, map_location)
    if expected is not None:
        check_kind(path, str(ckpt["class"]), expected)
    cls = _import_class(str(ckpt["class"]))
    try:
        model = cls(**ckpt["kwargs"])
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {path}: cannot construct {ckpt['class']} from its kwargs: {e}"
        ) from e
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {path}: weights do not match {ckpt['class']}: {e}"
        ) from e
    model.to(map_location)
    model.eval()
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model, meta
