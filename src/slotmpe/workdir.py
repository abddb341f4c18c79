"""The work dir of ``slotmpe evaluate``: where it goes, what it may not touch, one folder per model.

Layout::

    WORK_DIR/
      CACHEDIR.TAG              marks the folder as a cache (https://bford.info/cachedir/): backup
                                tools and the ``folder`` dataset scan skip it
      .slotmpe-evaluate.lock    held while a run uses the folder (:func:`work_dir_lock`)
      manifest.parquet, folder/, features/     shared by every model scored on the same data
      <exp>_<sha256 of the model file, 12 hex>/ one folder per model (:func:`model_run_dir`):
        metrics.json, per_file.csv, thresholds.json (--tune), embeddings.parquet

Rules:

* The default work dir is ``./slotmpe_eval/<data name>``; where that would lie inside the data
  folder (a run from inside it), it is ``<user cache dir>/slotmpe/eval/<data name>-<hash of the
  data folder's path>`` instead (:func:`default_work_dir`).
* A work dir inside a dataset folder, or the folder that holds a ``manifest.parquet`` given as
  data (whose manifest the run would overwrite), is refused before anything is written
  (:func:`check_work_dir`): the cache would mix with the user's files and be scanned as a piece.
* Two runs on one work dir at once: the second stops at once with an error naming the lock
  (:class:`WorkDirError`); runs one after another, with different models, keep every model's
  outputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from slotmpe.utils import atomic_path

DEFAULT_ROOT = "slotmpe_eval"
"""Default parent of the work dirs, relative to the current folder."""
CACHE_TAG_NAME = "CACHEDIR.TAG"
CACHE_TAG_SIGNATURE = "Signature: 8a477f597d28d172789f06886806bc55"
"""First line of a cache directory tag (Cache Directory Tagging Specification 1.0)."""
LOCK_NAME = ".slotmpe-evaluate.lock"


class WorkDirError(RuntimeError):
    """A work dir that cannot be used: inside the data, or in use by another run."""


def is_cache_dir(path: Path) -> bool:
    """Whether ``path`` is a folder tagged as a cache (holds a ``CACHEDIR.TAG`` with the
    specification's signature) or the default work dir root ``slotmpe_eval``."""
    path = Path(path)
    return path.name == DEFAULT_ROOT or _has_tag(path)


def _has_tag(path: Path) -> bool:
    try:
        with open(path / CACHE_TAG_NAME, "rb") as fh:
            return fh.read(len(CACHE_TAG_SIGNATURE)) == CACHE_TAG_SIGNATURE.encode()
    except OSError:
        return False


def mark_cache_dir(path: Path) -> None:
    """Write ``CACHEDIR.TAG`` into ``path`` (created if needed) unless it is there."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if not _has_tag(path):
        with atomic_path(path / CACHE_TAG_NAME) as tmp:
            tmp.write_text(f"{CACHE_TAG_SIGNATURE}\n# This folder is a slotmpe evaluate work dir "
                           "(feature cache and outputs); it can be deleted.\n")


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (both resolved, symlinks followed)."""
    return path.resolve() == folder.resolve() or folder.resolve() in path.resolve().parents


def user_cache_root() -> Path:
    """``<user cache dir>/slotmpe/eval`` (``$XDG_CACHE_HOME``, ``~/.cache`` ... by platform)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("slotmpe")) / "eval"


def default_work_dir(data: Path, cwd: Path | None = None) -> Path:
    """``cwd/slotmpe_eval/<data name>``, or a folder of the user's cache dir where that would
    lie inside the data folder (``data`` a folder, or a manifest's folder)."""
    data = Path(data).resolve()
    folder = data if data.is_dir() else data.parent
    name = folder.name or "data"
    cwd = Path.cwd() if cwd is None else Path(cwd)
    here = cwd / DEFAULT_ROOT / name
    if not _inside(here, folder):
        return here
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:8]
    return user_cache_root() / f"{name}-{digest}"


def check_work_dir(work_dir: Path, data: Path) -> None:
    """Refuse a work dir that lies inside the dataset folder ``data`` (its cache would be read
    as a piece, and its files would mix with the data), or the folder of a manifest given as
    ``data`` (the run writes ``manifest.parquet`` there). Raises :class:`WorkDirError`."""
    data, work_dir = Path(data), Path(work_dir)
    if data.is_dir() and _inside(work_dir, data):
        raise WorkDirError(
            f"--work-dir {work_dir} lies inside the dataset folder {data}: the feature cache "
            "would be written among your files and read as a piece; choose a folder outside it "
            f"(the default is ./{DEFAULT_ROOT}/<data name>)")
    if data.is_file() and work_dir.resolve() == data.parent.resolve():
        raise WorkDirError(
            f"--work-dir {work_dir} is the folder of the manifest {data}: the run writes its own "
            "manifest.parquet there; choose another folder")


def model_run_dir(work_dir: Path, model_path: Path, exp: str) -> Path:
    """``work_dir/<exp>_<first 12 hex of the model file's sha256>``: one folder per model, so
    that runs of different models on the same data never share an output."""
    with open(model_path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()[:12]
    return Path(work_dir) / f"{exp}_{digest}"


@contextlib.contextmanager
def work_dir_lock(work_dir: Path) -> Iterator[Path]:
    """Hold ``work_dir/.slotmpe-evaluate.lock`` for the block (an OS file lock: released when the
    process ends, however it ends). Raises :class:`WorkDirError` at once when another run holds
    it. Yields the lock file's path."""
    import filelock

    path = Path(work_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(os.fspath(path), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise WorkDirError(
            f"the work dir {work_dir} is in use by another slotmpe evaluate (lock {path}); wait "
            "for it to finish, or pass another --work-dir") from None
    try:
        yield path
    finally:
        lock.release()
