"""Resume checkpoints (``checkpoint_last.pt``) and the training log of a run."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slotmpe.training.config import _IDENTITY_FIELDS, TrainConfig
from slotmpe.utils import atomic_path

CHECKPOINT_NAME = "checkpoint_last.pt"
MODEL_NAME = "model.pt"
LOG_NAME = "train_log.csv"
CHECKS_NAME = "train_checks.csv"
"""Every validation check of a run (``checks_per_epoch`` a training epoch), ``epoch`` fractional."""
_CKPT_VERSION = 2


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "gauss": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):  # different GPU count: keep the current state
            torch.cuda.set_rng_state_all(state["cuda"])


def _identity(exp_name: str, cfg: TrainConfig, precision: str) -> dict[str, Any]:
    """What a resume checkpoint must agree on (``precision`` resolved: auto on another CPU may
    differ)."""
    d = dataclasses.asdict(cfg)
    return {"exp": exp_name, **{k: d[k] for k in _IDENTITY_FIELDS}, "precision": precision}


def _identity_defaults() -> dict[str, Any]:
    """Default of every identity field: a checkpoint written before a field joined the identity
    (e.g. ``activity_match_weight``, issue 29) was trained with that field's default."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)
            if f.name in _IDENTITY_FIELDS and f.default is not dataclasses.MISSING}


def _save_last(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_last(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report any unreadable file the same way
        raise RuntimeError(f"cannot read resume checkpoint {path}: {e}; delete it to start over") from e
    if state.get("version") != _CKPT_VERSION:
        raise RuntimeError(f"{path}: checkpoint version {state.get('version')} != {_CKPT_VERSION}")
    stored = {**_identity_defaults(), **state["identity"]}
    if stored != identity:
        diff = {k: (stored.get(k), v) for k, v in identity.items() if stored.get(k) != v}
        raise RuntimeError(
            f"{path} was written by a different configuration {diff} (checkpoint, now); "
            "delete it to start over"
        )
    return state


def _write_log(path: Path, rows: list[dict[str, float]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})


