"""Unpacking downloaded archives safely: atomic, traversal-safe, and marked with their source.

:func:`extract` unpacks tar (plain, gz, bz2, xz) and zip archives, detected from their content, not
their name (Dryad serves URMP as ``file_stream/99348``). Every member is checked first: absolute
paths, ``..`` components, links that point outside the destination, device files and FIFOs are
refused with :class:`ExtractError`. Members go to a private temporary folder beside ``dest`` that is
renamed onto ``dest`` only when everything succeeded. A marker file (``MARKER_NAME``) inside the
folder records what it was made from: the archive's name and size and its source (url, md5,
sha256); a re-run with the same archive and source skips the work, any difference unpacks again.
"""

from __future__ import annotations

import json
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from slotmpe.utils import get_logger, ordinary_mode

log = get_logger(__name__)

MARKER_NAME = ".slotmpe_extracted.json"
"""File written inside an extracted folder; it names the archive (name, size) and its source."""
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".zip")


class ExtractError(RuntimeError):
    """An archive is unreadable, of an unknown format, or has an unsafe member."""


def archive_kind(path: str | os.PathLike[str]) -> str:
    """``"zip"`` or ``"tar"`` (any compression tarfile reads) from the file's content; else ExtractError."""
    p = Path(path)
    if not p.is_file():
        raise ExtractError(f"{p}: archive does not exist")
    if zipfile.is_zipfile(p):
        return "zip"
    try:
        if tarfile.is_tarfile(p):
            return "tar"
    except (OSError, EOFError) as exc:  # truncated compressed stream
        raise ExtractError(f"{p}: unreadable archive ({exc})") from exc
    with open(p, "rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"{")):
        raise ExtractError(
            f"{p}: the server sent a web page / JSON document, not an archive (a login, consent "
            "or landing page?); download the archive by hand and set the dataset's `path:`, or "
            "configure a direct file URL"
        )
    raise ExtractError(f"{p}: not a tar(.gz/.bz2/.xz) or zip archive")


def _safe_relpath(name: str, archive: Path) -> PurePosixPath:
    """The member name as a relative POSIX path; ExtractError for absolute or ``..`` names."""
    n = name.replace("\\", "/")
    if n.startswith("/") or re.match(r"^[A-Za-z]:", n):
        raise ExtractError(f"{archive}: refusing member {name!r}: absolute path")
    parts = [p for p in n.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ExtractError(f"{archive}: refusing member {name!r}: '..' escapes the destination")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path`` (resolved, following existing symlinks) lies inside ``root`` (resolved)."""
    r = os.path.realpath(root)
    p = os.path.realpath(path)
    return p == r or p.startswith(r + os.sep)


def _check_link(
    root: Path, member_rel: PurePosixPath, target: str, archive: Path, name: str
) -> None:
    """Refuse a symlink whose target is absolute or resolves outside ``root``."""
    t = target.replace("\\", "/")
    if t.startswith("/") or re.match(r"^[A-Za-z]:", t):
        raise ExtractError(f"{archive}: refusing symlink {name!r} -> {target!r}: absolute target")
    joined = os.path.normpath(os.path.join(str(root), str(member_rel.parent), t))
    if not _inside(root, Path(joined)):
        raise ExtractError(
            f"{archive}: refusing symlink {name!r} -> {target!r}: escapes the destination"
        )


def _extract_tar(archive: Path, root: Path) -> int:
    """Check and extract every member of a tar archive into ``root``; returns the member count."""
    n = 0
    try:
        with tarfile.open(archive, "r:*") as tf:
            for m in tf:  # streaming: one forward pass, even for .tar.gz
                rel = _safe_relpath(m.name, archive)
                if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
                    raise ExtractError(
                        f"{archive}: refusing member {m.name!r}: device file or FIFO"
                    )
                if m.issym():
                    _check_link(root, rel, m.linkname, archive, m.name)
                elif m.islnk():
                    target = _safe_relpath(m.linkname, archive)
                    if not _inside(root, root / target):
                        raise ExtractError(
                            f"{archive}: refusing hard link {m.name!r} -> {m.linkname!r}: escapes"
                        )
                if not _inside(root, root / rel.parent):
                    raise ExtractError(
                        f"{archive}: refusing member {m.name!r}: its folder resolves outside the "
                        "destination (through a link)"
                    )
                try:
                    tf.extract(m, root, set_attrs=not m.isdir(), filter="data")
                except tarfile.FilterError as exc:  # defence in depth (Python's 'data' filter)
                    raise ExtractError(f"{archive}: refusing member {m.name!r}: {exc}") from exc
                n += 1
            # Drain the (decompressed) stream: a truncated .gz/.bz2/.xz fails here (tarfile itself
            # stops silently at a truncated header); the end-of-archive zero blocks must follow.
            rest = 0
            while True:
                buf = tf.fileobj.read(1 << 20)
                if not buf:
                    break
                rest += len(buf)
            if rest < tarfile.BLOCKSIZE:
                raise ExtractError(f"{archive}: truncated tar archive (no end-of-archive marker)")
    except (
        tarfile.ReadError,
        EOFError,
        OSError,
        zipfile.BadZipFile,
        zlib.error,
        lzma.LZMAError,
    ) as exc:
        raise ExtractError(f"{archive}: corrupt or truncated tar archive ({exc})") from exc
    return n


def _extract_zip(archive: Path, root: Path) -> int:
    """Check every member of a zip archive, then extract them into ``root``; returns the count.

    Zip symlink entries inside the destination are written as small regular files holding the
    link target (what :mod:`zipfile` does); ones pointing outside are refused.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for zi in infos:
                rel = _safe_relpath(zi.filename, archive)
                mode = zi.external_attr >> 16
                if stat.S_ISLNK(mode):
                    target = zf.read(zi).decode("utf-8", "replace")
                    _check_link(root, rel, target, archive, zi.filename)
                elif mode and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)):
                    raise ExtractError(
                        f"{archive}: refusing member {zi.filename!r}: device file or FIFO"
                    )
            for zi in infos:
                zf.extract(zi, root)
            return len(infos)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ExtractError(f"{archive}: corrupt zip archive ({exc})") from exc


SOURCE_KEYS: tuple[str, ...] = ("url", "md5", "sha256")
"""What a marker records about where its archive came from (``None`` where not configured)."""


def read_marker(dest: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The marker of an unpacked folder (``archive``, ``size``, ``url``, ``md5``, ``sha256``,
    ``members``), or ``None`` if ``dest`` has no readable marker."""
    try:
        old = json.loads((Path(dest) / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return old if isinstance(old, dict) else None


def _marker_payload(archive: Path, source: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the marker of ``archive`` unpacked from ``source`` holds (``members`` aside)."""
    src = dict(source or {})
    return {
        "archive": archive.name,
        "size": archive.stat().st_size,
        **{k: (src.get(k) or None) for k in SOURCE_KEYS},
    }


def marker_mismatch(
    dest: str | os.PathLike[str], archive: Path, source: Mapping[str, Any] | None = None
) -> str | None:
    """``None`` if ``dest`` holds a marker of this very ``archive`` (name, size) unpacked from
    ``source`` (url, md5, sha256); otherwise a short reason naming the first difference."""
    old = read_marker(dest)
    if old is None:
        return f"{dest} has no {MARKER_NAME}"
    if not archive.is_file():
        return f"{archive} does not exist"
    for key, value in _marker_payload(archive, source).items():
        if old.get(key) != value:
            return f"{key} was {old.get(key)!r}, now {value!r}"
    return None


def extract(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    source: Mapping[str, Any] | None = None,
) -> Path:
    """Unpack ``archive`` (tar/tar.gz/tgz/tar.bz2/tar.xz/zip) into the folder ``dest``; return ``dest``.

    ``source``: where the archive came from (``url``, ``md5``, ``sha256``; see ``SOURCE_KEYS``),
    recorded in the marker with the archive's name and size. Skips the work if ``dest`` holds a
    marker for the same archive and source; any difference unpacks again. A ``dest`` made
    by an earlier call for another archive is replaced; a ``dest`` that was not made by this
    function is never touched (:class:`ExtractError`). Unsafe members (absolute paths, ``..``,
    links escaping ``dest``, device files) raise :class:`ExtractError` and leave nothing behind.
    """
    archive = Path(archive)
    dest = Path(dest)
    marker = dest / MARKER_NAME
    if not archive.is_file():
        raise ExtractError(f"{archive}: archive does not exist")
    payload = _marker_payload(archive, source)
    if marker.is_file():
        why = marker_mismatch(dest, archive, source)
        if why is None:
            log.info("%s already unpacked into %s; skipping", archive.name, dest)
            return dest
        log.warning("%s was unpacked from another source (%s): unpacking again", dest, why)
    elif dest.exists():
        raise ExtractError(
            f"{dest} exists but was not unpacked by slotmpe (no {MARKER_NAME}); remove it, or set "
            "the dataset's `path:` to it in config.yaml to use it in place"
        )
    kind = archive_kind(archive)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.extract-*"):
        shutil.rmtree(stale, ignore_errors=True)  # debris of a killed earlier run
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    try:
        n = _extract_tar(archive, tmp) if kind == "tar" else _extract_zip(archive, tmp)
        (tmp / MARKER_NAME).write_text(json.dumps({**payload, "members": n}, indent=1))
        if dest.exists():  # made by us for another archive (checked above)
            old_dir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, old_dir / "d")
            shutil.rmtree(old_dir, ignore_errors=True)
        os.chmod(tmp, ordinary_mode(is_dir=True))
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("unpacked %s (%d members) into %s", archive.name, n, dest)
    return dest


def unpack_nested(root: str | os.PathLike[str]) -> list[Path]:
    """Unpack every archive file (by suffix: zip, tar, tar.gz, ...) found inside ``root`` into a
    folder beside it named like the archive without its suffix (e.g. a Zenodo "files-archive" zip
    that holds the dataset's own zip). Each inner unpack is atomic and marked like :func:`extract`.
    Returns the folders unpacked (or found already unpacked)."""
    out = []
    for inner in sorted(Path(root).rglob("*")):
        name = inner.name.lower()
        suffix = next((s for s in ARCHIVE_SUFFIXES if name.endswith(s)), None)
        if suffix is None or not inner.is_file():
            continue
        out.append(extract(inner, inner.with_name(inner.name[: -len(suffix)] or "unpacked")))
    return out
