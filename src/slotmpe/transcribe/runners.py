"""Model runners: a checkpoint (``.pt``, torch) or an export (``.onnx``, onnxruntime) behind one
interface, :class:`Runner`: ``predict(cqt, max_frames) -> probabilities`` from a wide CQT.

Only the torch runner imports torch; transcribing with an ``.onnx`` model never does.

Fast path by default: :func:`load_model_fast` runs ``model.onnx`` instead of ``model.pt`` when the
ONNX file beside the checkpoint is up to date (not older than the ``.pt``, and its metadata records
the ``.pt``'s identity: :func:`checkpoint_identity`, file name, size and SHA-256) and onnxruntime
is installed; the pipeline writes that file for every model (``workflow/rules/export.smk``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from slotmpe.notes import activity_is_trained
from slotmpe.transcribe.errors import TranscriptionError
from slotmpe.transcribe.notes import experiment_of


class Runner(Protocol):
    """What transcription needs from a model."""

    experiment: Any  # slotmpe.experiments.Experiment or None
    uses_slots: bool
    activity_trained: bool

    def predict(self, cqt: np.ndarray, max_frames: int | None) -> dict[str, np.ndarray]:
        """Probabilities (``mix`` ``(72, T)``, ``slots`` ``(K, 72, T)``, ``activity`` ``(K,)``,
        ...) of a log-compressed wide CQT ``(N_WIDE, T)``."""
        ...


def _check_model_file(p: Path, kind: str) -> None:
    if not p.exists():
        raise TranscriptionError(f"{p}: model file does not exist")
    if p.is_dir():
        raise TranscriptionError(f"{p}: is a directory, expected a {kind} file")
    if p.stat().st_size == 0:
        raise TranscriptionError(f"{p}: model file is empty")


def load_torch_model(path: str | os.PathLike[str], device: str = "cpu"
                     ) -> tuple[Any, dict[str, Any]]:
    """Load a pipeline checkpoint (``results/{dataset}/{exp}/seed{seed}/model.pt``) in eval mode.

    Raises :class:`TranscriptionError` with one clear line for a missing, empty or unreadable file.
    """
    p = Path(path)
    _check_model_file(p, "model.pt")
    from slotmpe.models import SlotMPE, load_checkpoint

    try:  # expected=SlotMPE: a timbre encoder.pt fails here, naming its kind, not at the audio
        model, meta = load_checkpoint(p, map_location="cpu", expected=SlotMPE)
    except Exception as exc:  # torch raises many types for corrupt/foreign files
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TranscriptionError(f"{p}: cannot load model ({msg})") from exc
    model.eval()
    model.to(device)
    return model, dict(meta or {})


class TorchRunner:
    """A torch model run by :func:`slotmpe.inference.predict` on the fast-HCQT of the CQT."""

    def __init__(self, model: Any, meta: Mapping[str, Any], device: str = "cpu") -> None:
        self.model = model
        self.device = device
        self.experiment = experiment_of(model, meta)
        self.uses_slots = bool(getattr(self.experiment, "uses_slots", True))
        self.activity_trained = activity_is_trained(self.experiment)

    def predict(self, cqt: np.ndarray, max_frames: int | None) -> dict[str, np.ndarray]:
        from slotmpe.cqt import hcqt_np
        from slotmpe.inference import predict

        probs = predict(self.model, hcqt_np(cqt), device=self.device, max_frames=max_frames)
        return {k: np.asarray(v) for k, v in probs.items()}


class OnnxRunner:
    """An exported model (:class:`slotmpe.transcribe.onnx_runner.OnnxModel`) as a :class:`Runner`."""

    def __init__(self, model: Any) -> None:
        from slotmpe.experiments import get_experiment

        self.model = model
        name = model.experiment
        try:
            self.experiment = get_experiment(name) if isinstance(name, str) else None
        except KeyError:
            self.experiment = None
        self.uses_slots = model.uses_slots
        self.activity_trained = bool(model.info.get("activity_trained", True))

    def predict(self, cqt: np.ndarray, max_frames: int | None) -> dict[str, np.ndarray]:
        return self.model.predict(cqt, max_frames)


def load_model(path: str | os.PathLike[str], device: str = "cpu", threads: int | None = None
               ) -> tuple[Any, dict[str, Any]]:
    """``(model, meta)`` for a ``.pt`` checkpoint (a torch module) or an ``.onnx`` export (an
    :class:`~slotmpe.transcribe.onnx_runner.OnnxModel`, CPU only; ``meta`` is its metadata).

    Raises :class:`TranscriptionError` with one line for a missing, empty or unreadable file.
    """
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        _check_model_file(p, ".onnx")
        if device not in ("cpu", "auto"):
            raise TranscriptionError(f"{p}: ONNX models run on the CPU only (got device {device})")
        from slotmpe.transcribe.onnx_runner import OnnxModel

        model = OnnxModel(p, threads=threads)
        return model, {"experiment": model.experiment, **model.info}
    return load_torch_model(p, device)


def checkpoint_identity(path: str | os.PathLike[str]) -> dict[str, object]:
    """``{"name", "size", "sha256"}`` of a checkpoint file: what an ONNX export records of its
    source so that a sibling ``.onnx`` is used only for the checkpoint it was made from."""
    p = Path(path)
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"name": p.name, "size": p.stat().st_size, "sha256": h.hexdigest()}


def sibling_onnx(pt_path: str | os.PathLike[str]) -> tuple[Path | None, str]:
    """``(path, reason)``: the ``.onnx`` beside a ``.pt`` checkpoint when it exists, is not older
    than the checkpoint and onnxruntime is installed (``reason`` empty), else ``(None, why not)``.
    The identity recorded inside it is checked by :func:`load_model_fast` when it is loaded."""
    import importlib.util

    pt = Path(pt_path)
    onnx_path = pt.with_suffix(".onnx")
    if pt.suffix.lower() != ".pt" or not onnx_path.is_file():
        return None, ""
    if importlib.util.find_spec("onnxruntime") is None:
        return None, f"{onnx_path.name} not used: onnxruntime is not installed"
    if onnx_path.stat().st_mtime < pt.stat().st_mtime:
        return None, f"{onnx_path} is older than {pt.name}; rerun 'slotmpe export' to use it"
    return onnx_path, ""


def load_model_fast(path: str | os.PathLike[str], device: str = "cpu",
                    threads: int | None = None, prefer_onnx: bool = True
                    ) -> tuple[Any, dict[str, Any], Path, str]:
    """``(model, meta, path run, message)``: :func:`load_model` of ``path``, except that a ``.pt``
    checkpoint run on the CPU is replaced by its up-to-date sibling ``.onnx``
    (:func:`sibling_onnx`) whose recorded identity matches the checkpoint. A sibling that is
    stale, from another checkpoint or unreadable (truncated, empty, not an ONNX file) is skipped
    and the checkpoint runs. ``message`` says which file runs and why (empty when ``path`` runs as
    given without a sibling to mention)."""
    p = Path(path)
    onnx_path, why = (sibling_onnx(p) if prefer_onnx and device == "cpu" else (None, ""))
    if onnx_path is not None:
        try:
            model, meta = load_model(onnx_path, "cpu", threads)
        except TranscriptionError as exc:  # truncated, empty, random bytes, not an export
            # the user named the checkpoint: the damaged export is skipped like a stale one
            reason = str(exc).removeprefix(f"{onnx_path}: ")
            why = (f"{onnx_path} (picked automatically beside {p.name}) is unreadable "
                   f"({reason}); rerun 'slotmpe export {p}' to rebuild it, or pass --no-onnx")
            model, meta = load_model(p, device, threads)
            return model, meta, p, f"{why}; running {p} with torch"
        recorded = (meta.get("source") or {}).get("identity") or {}
        ident = checkpoint_identity(p)
        if recorded.get("sha256") == ident["sha256"] and recorded.get("size") == ident["size"]:
            return model, meta, onnx_path, (f"running {onnx_path} (the up-to-date ONNX export of "
                                            f"{p.name}) with onnxruntime")
        why = f"{onnx_path} was exported from another checkpoint; rerun 'slotmpe export' to use it"
        del model
    model, meta = load_model(p, device, threads)
    return model, meta, p, (f"{why}; running {p} with torch" if why else "")


def as_runner(model: Any, meta: Mapping[str, Any], device: str = "cpu") -> Runner:
    """The :class:`Runner` of what :func:`load_model` returned (runners pass through)."""
    if hasattr(model, "activity_trained") and hasattr(model, "predict"):
        return model  # type: ignore[no-any-return]
    from slotmpe.transcribe.onnx_runner import OnnxModel

    if isinstance(model, OnnxModel):
        return OnnxRunner(model)
    return TorchRunner(model, meta, device)
