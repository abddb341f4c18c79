"""The model that ships with the package: what ``slotmpe transcribe`` runs without ``--model``.

The package data of this folder is ``model.onnx`` (an ONNX export, :mod:`slotmpe.transcribe.
onnx_export`, run by onnxruntime without torch; thresholds and instrument prototypes in its
``slotmpe`` metadata) and ``MODEL_CARD.md``. Both are built by the pipeline
(``snakemake --cores 4 results/pretrained/model.onnx``, ``workflow/rules/pretrained.smk``) and
copied here by hand (``docs/pretrained.md``); the build adds a ``slotmpe_release`` metadata entry
(commit, training run, card data digest: :mod:`slotmpe.pretrained.card`).

A checkout or install without ``model.onnx`` ships no model: :func:`default_model_path` then
raises :class:`NoShippedModel` saying how to get one. The environment variable
:data:`MODEL_ENV` names another file to use as the default model (a site-wide model, or a test
model in the test suite).

Nothing here imports torch; reading the identity (:func:`shipped_model_identity`) imports
onnxruntime only when a model file exists.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from slotmpe.transcribe.options import TranscriptionError

MODEL_FILE: str = "model.onnx"
CARD_FILE: str = "MODEL_CARD.md"
MODEL_ENV: str = "SLOTMPE_PRETRAINED_MODEL"
"""Environment variable: path of the model ``slotmpe transcribe`` uses without ``--model``."""
RELEASE_KEY: str = "slotmpe_release"
"""ONNX metadata entry (JSON) that the pretrained build adds: commit, run, card digest."""
PACKAGE_DIR: Path = Path(__file__).resolve().parent

HOW_TO_GET_ONE: str = (
    "pass --model PATH (a model.pt or model.onnx of the pipeline, e.g. "
    "results/chamber/3c/seed0/model.pt), or build the shipped model with "
    "'snakemake --cores 4 results/pretrained/model.onnx' and copy results/pretrained/* into "
    f"{PACKAGE_DIR} (docs/pretrained.md)"
)


class NoShippedModel(TranscriptionError):
    """No default model: none ships with this install and ``--model`` was not given."""


def shipped_model_path() -> Path:
    """Where the default model is looked for: ``$SLOTMPE_PRETRAINED_MODEL`` when set (and not
    empty), else ``model.onnx`` in this package folder. The file need not exist."""
    env = os.environ.get(MODEL_ENV, "").strip()
    return Path(env).expanduser() if env else PACKAGE_DIR / MODEL_FILE


def default_model_path() -> Path:
    """The default model's path; :class:`NoShippedModel` (one line, saying how to get a model)
    when the file does not exist."""
    p = shipped_model_path()
    if p.is_file():
        return p
    if os.environ.get(MODEL_ENV, "").strip():
        raise NoShippedModel(f"{MODEL_ENV}={p}: no such model file; unset it or {HOW_TO_GET_ONE}")
    raise NoShippedModel(f"no model ships with this install ({p} is absent): {HOW_TO_GET_ONE}")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_metadata_map(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ONNX model's ``metadata_props`` as a dict (onnxruntime, no graph optimisation, so it is
    quick); :class:`TranscriptionError` naming the file when onnxruntime cannot load it."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(str(path), sess_options=so,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TranscriptionError(f"{path}: cannot load ONNX model ({first})") from exc
    return dict(sess.get_modelmeta().custom_metadata_map)


def model_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Who a (shipped) ONNX model is: ``path``, ``size``, ``sha256`` and, from its metadata,
    ``exp``, ``dataset``, ``seed``, ``commit`` (None where not recorded), ``release`` (the whole
    :data:`RELEASE_KEY` entry, ``{}`` for a plain export). An unreadable file gives ``error``."""
    p = Path(path)
    out: dict[str, Any] = {"path": str(p), "size": p.stat().st_size, "sha256": file_sha256(p),
                           "exp": None, "dataset": None, "seed": None, "commit": None,
                           "release": {}}
    try:
        meta = read_metadata_map(p)
        info = json.loads(meta.get("slotmpe", "{}"))
        release = json.loads(meta.get(RELEASE_KEY, "{}"))
    except (TranscriptionError, ValueError) as exc:
        return {**out, "error": str(exc)}
    info = info if isinstance(info, dict) else {}
    release = release if isinstance(release, dict) else {}
    source = info.get("source") if isinstance(info.get("source"), dict) else {}
    run = release.get("run") if isinstance(release.get("run"), dict) else {}
    out.update(
        exp=run.get("exp") or info.get("experiment") or source.get("experiment"),
        dataset=run.get("dataset") or source.get("dataset"),
        seed=run.get("seed", source.get("seed")),
        commit=release.get("commit"),
        release=release,
    )
    return out


def shipped_model_identity() -> dict[str, Any] | None:
    """:func:`model_identity` of the default model, or None when none ships."""
    p = shipped_model_path()
    return model_identity(p) if p.is_file() else None


def identity_line(ident: dict[str, Any] | None) -> str:
    """One line for ``--version`` / ``info``, e.g. ``"3c chamber seed 0, commit 7d64979,
    sha256 1a2b3c4d5e6f (6.8 MB) at .../model.onnx"``, or ``"none shipped"``."""
    if ident is None:
        return f"none shipped ({shipped_model_path()} is absent)"
    if "error" in ident:
        return f"unreadable: {ident['error']}"
    run = " ".join(str(x) for x in (ident["exp"], ident["dataset"]) if x) or "unknown run"
    if ident["seed"] is not None:
        run += f" seed {ident['seed']}"
    commit = str(ident["commit"])[:7] if ident["commit"] else "not recorded"
    return (f"{run}, commit {commit}, sha256 {ident['sha256'][:12]} "
            f"({ident['size'] / 1e6:.1f} MB) at {ident['path']}")


__all__ = ["CARD_FILE", "HOW_TO_GET_ONE", "MODEL_ENV", "MODEL_FILE", "NoShippedModel",
           "PACKAGE_DIR", "RELEASE_KEY", "default_model_path", "file_sha256", "identity_line",
           "model_identity", "read_metadata_map", "shipped_model_identity", "shipped_model_path"]
