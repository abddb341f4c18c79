"""Dataset builders: each writes ``data/{dataset}/manifest.parquet`` (see :mod:`.manifest`).

:func:`build_dataset` is the single entry point used by the workflow; it dispatches on the
dataset entry's ``type``:

* ``chamber`` / ``electro``: rendered locally from the music21 corpus (:mod:`.embedded`);
* ``folder``: a user's multitrack folder (:mod:`.folder`), ``dscfg["path"]`` is the folder;
* ``urmp`` / ``mshoxxdb`` / ``musicnet`` / ``slakh``: downloaded datasets, built by
  ``slotmpe.datasets.<type>.build_<type>(raw_dir, out_dir, cfg)`` with ``raw_dir`` from
  ``dscfg["raw_dir"]`` (default ``out_dir / "raw"``).

Builder modules are imported lazily so that one adapter's optional dependencies never break another.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

DATASET_TYPES: tuple[str, ...] = (
    "chamber",
    "electro",
    "folder",
    "urmp",
    "mshoxxdb",
    "musicnet",
    "slakh",
)
_DOWNLOADED = ("urmp", "mshoxxdb", "musicnet", "slakh")


def build_dataset(name: str, dscfg: dict[str, Any], out_dir: Path, seed: int) -> Path:
    """Build dataset ``name`` described by the config entry ``dscfg`` into ``out_dir``.

    ``dscfg["type"]`` selects the builder (``DATASET_TYPES``); the other keys are the builder's
    config. ``name`` is written into the manifest's ``dataset`` column (as ``cfg["name"]``) and
    ``seed`` drives every random choice (work selection, instruments, gains, splits).
    Returns the path of the written ``manifest.parquet``.
    """
    if "type" not in dscfg:
        raise ValueError(
            f"dataset {name!r}: config entry has no 'type' (one of {list(DATASET_TYPES)})"
        )
    kind = str(dscfg["type"])
    out_dir = Path(out_dir)
    cfg = {k: v for k, v in dscfg.items() if k != "type"}
    cfg.setdefault("name", name)
    if kind in ("chamber", "electro"):
        from slotmpe.datasets import embedded

        builder = embedded.build_chamber if kind == "chamber" else embedded.build_electro
        return builder(out_dir, cfg, seed)
    if kind == "folder":
        from slotmpe.datasets.folder import build_folder

        if not cfg.get("path"):
            raise ValueError(f"dataset {name!r} of type 'folder' needs a 'path' to the folder")
        cfg.setdefault("seed", seed)
        return build_folder(Path(cfg["path"]), out_dir, cfg)
    if kind in _DOWNLOADED:
        module = importlib.import_module(f"slotmpe.datasets.{kind}")
        builder = getattr(module, f"build_{kind}")
        raw_dir = Path(cfg.get("raw_dir") or out_dir / "raw")
        cfg.setdefault("seed", seed)
        return builder(raw_dir, out_dir, cfg)
    raise ValueError(
        f"dataset {name!r}: unknown type {kind!r}; expected one of {list(DATASET_TYPES)}"
    )
