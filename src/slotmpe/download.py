"""Downloading and unpacking the real datasets: resumable, checksummed, atomic, traversal-safe.

* :func:`fetch` streams a URL to a file with a progress bar. Bytes go to ``dest.part``; an
  interrupted transfer is resumed with an HTTP ``Range`` request (a server that ignores ``Range``
  and answers ``200`` makes the download restart from byte 0), transient failures (connection
  errors, timeouts, short bodies, HTTP 408/425/429/5xx) are retried with exponential back-off, and
  the file is verified against the configured md5 and/or sha256 before it is renamed onto ``dest``.
  On a checksum mismatch the ``.part`` file is deleted and :class:`ChecksumError` names the file, the
  algorithm, the expected and the actual digest. Without a checksum the sha256 is logged so that it
  can be pinned in ``config.yaml``.
* :func:`extract` unpacks tar (plain, gz, bz2, xz) and zip archives, detected from their content,
  not their name (Dryad serves URMP as ``file_stream/99348``). Every member is checked first:
  absolute paths, ``..`` components, links that point outside the destination, device files and
  FIFOs are refused with :class:`ExtractError`. Members go to a private temporary folder beside
  ``dest`` that is renamed onto ``dest`` only when everything succeeded; a marker file
  (``MARKER_NAME``) records which archive was unpacked so a re-run skips the work.
* :func:`ensure_dataset` turns one ``datasets:`` entry of ``config.yaml`` into an unpacked folder:
  an existing ``path`` is used in place, otherwise ``url`` (+ ``md5`` / ``sha256``) is fetched into
  ``{raw_root}/downloads/`` and unpacked into ``{raw_root}/{name}/``.

Only the standard library (``urllib``) does network I/O; ``tqdm`` draws the progress bar.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from slotmpe.utils import get_logger, ordinary_mode

log = get_logger(__name__)

MARKER_NAME = ".slotmpe_extracted.json"
"""File written inside an extracted folder; it names the archive (name, size) it came from."""

USER_AGENT = "slotmpe-downloader/0.1 (+https://github.com/; research code)"
MAX_BACKOFF_S = 60.0
_RETRY_HTTP_CODES = frozenset({408, 425, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".zip")


class DownloadError(RuntimeError):
    """A download failed for good (after the retries, or with a non-retryable HTTP status)."""


class ChecksumError(DownloadError):
    """The downloaded file does not have the configured checksum; nothing was kept."""


class ExtractError(RuntimeError):
    """An archive is unreadable, of an unknown format, or has an unsafe member."""


class DatasetSourceError(ValueError):
    """A dataset entry of the config has neither an existing ``path`` nor a ``url``."""


class _Retryable(Exception):
    """Internal: a transient failure of one attempt (the caller backs off and retries)."""


# --------------------------------------------------------------------------------------- checksums
def file_digest(path: str | os.PathLike[str], algo: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest (``algo`` in hashlib, e.g. "md5", "sha256") of a file, read in chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while True:
            buf = f.read(chunk)
            if not buf:
                break
            h.update(buf)
    return h.hexdigest()


def _expected_digests(md5: str | None, sha256: str | None) -> dict[str, str]:
    """Normalised ``{algo: hex}`` of the configured checksums; ValueError for malformed values."""
    out: dict[str, str] = {}
    for algo, value, n_hex in (("md5", md5, 32), ("sha256", sha256, 64)):
        if value is None or value == "":
            continue
        v = str(value).strip().lower()
        if not re.fullmatch(rf"[0-9a-f]{{{n_hex}}}", v):
            raise ValueError(f"{algo} checksum must be {n_hex} hex digits, got {value!r}")
        out[algo] = v
    return out


def _mismatches(path: Path, expected: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """``(algo, expected, actual)`` for every configured digest that ``path`` does not have."""
    bad = []
    for algo, exp in expected.items():
        act = file_digest(path, algo)
        if act != exp:
            bad.append((algo, exp, act))
    return bad


# -------------------------------------------------------------------------------------------- fetch
def fetch(
    url: str,
    dest: str | os.PathLike[str],
    md5: str | None = None,
    sha256: str | None = None,
    retries: int = 5,
    chunk: int = 1 << 20,
    *,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool | None = None,
) -> Path:
    """Download ``url`` to ``dest`` (resumable, retried, checksummed, atomic); return ``dest``.

    ``md5`` / ``sha256``: expected hex digests (either, both or none). ``retries``: how many times a
    transient failure is retried (so at most ``retries + 1`` attempts), waiting
    ``backoff * 2**k`` seconds (capped at ``MAX_BACKOFF_S``) before retry ``k``. ``chunk``: bytes
    per read. ``timeout``: socket timeout in seconds. ``progress``: show a tqdm bar (``None``: only
    on a terminal).

    An existing ``dest`` is kept if it has the configured checksums (or none is configured);
    otherwise it is deleted and downloaded again. Bytes stream to ``dest.part``, which survives a
    failed attempt so the next one (or the next run) resumes it with ``Range``. Raises
    :class:`ChecksumError` (``.part`` deleted, ``dest`` not created) on a checksum mismatch and
    :class:`DownloadError` when the retries are exhausted or the server refuses the request.
    """
    dest = Path(dest)
    expected = _expected_digests(md5, sha256)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)

    if dest.exists():
        if not expected:
            log.info("%s exists (no checksum configured); not downloading again", dest)
            return dest
        bad = _mismatches(dest, expected)
        if not bad:
            log.info("%s exists and matches its checksum; not downloading again", dest)
            return dest
        algo, exp, act = bad[0]
        log.warning("%s exists but its %s is %s, not %s: downloading it again", dest, algo, act, exp)
        dest.unlink()

    attempt = 0
    while True:
        try:
            _download_once(url, part, chunk=chunk, timeout=timeout, progress=progress, label=dest.name)
            break
        except _Retryable as exc:
            attempt += 1
            if attempt > retries:
                kept = f"; the partial file {part} is kept for a later resume" if part.exists() else ""
                raise DownloadError(
                    f"{url}: download of {dest.name} failed after {attempt} attempt(s): {exc}{kept}"
                ) from exc
            wait = min(MAX_BACKOFF_S, backoff * 2 ** (attempt - 1))
            log.warning(
                "%s: attempt %d of %d failed (%s); retrying in %.1f s", dest.name, attempt,
                retries + 1, exc, wait,
            )
            time.sleep(wait)

    if expected:
        bad = _mismatches(part, expected)
        if bad:
            size = part.stat().st_size
            part.unlink(missing_ok=True)
            details = "; ".join(f"{a}: expected {e}, got {g}" for a, e, g in bad)
            raise ChecksumError(
                f"{dest}: checksum mismatch for the file downloaded from {url} ({size} bytes): "
                f"{details}. The download was deleted; check the url/checksum in config.yaml or "
                "the mirror, then run again."
            )
    else:
        log.warning(
            "%s: no checksum configured; sha256 %s, md5 %s (pin one in config.yaml)",
            dest.name, file_digest(part, "sha256"), file_digest(part, "md5"),
        )
    os.replace(part, dest)
    log.info("downloaded %s (%d bytes)", dest, dest.stat().st_size)
    return dest


def _download_once(
    url: str, part: Path, *, chunk: int, timeout: float, progress: bool | None, label: str
) -> None:
    """One attempt: resume/append or (re)start ``part``; raise :class:`_Retryable` on transient errors."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (URL comes from config)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            part.unlink(missing_ok=True)
            raise _Retryable(f"HTTP 416 for a resume at byte {offset}; restarting from 0") from exc
        if exc.code in _RETRY_HTTP_CODES:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from exc
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason} (not retried)") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from exc

    with resp:
        status = getattr(resp, "status", 200)
        length_hdr = resp.headers.get("Content-Length")
        body_len = int(length_hdr) if length_hdr and length_hdr.isdigit() else None
        total: int | None
        if offset and status == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                part.unlink(missing_ok=True)
                raise _Retryable(
                    f"server answered the resume at byte {offset} with Content-Range "
                    f"{resp.headers.get('Content-Range')!r}; restarting from 0"
                )
            total = int(m.group(3)) if m.group(3) != "*" else None
            mode = "ab"
        else:
            if offset:
                log.info("%s: server ignored the Range request (HTTP %s); restarting", label, status)
            offset = 0
            total = body_len
            mode = "wb"
        written = 0
        try:
            with open(part, mode) as f, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=label, disable=(None if progress is None else not progress), leave=False,
            ) as bar:
                while True:
                    buf = resp.read(chunk)
                    if not buf:
                        break
                    f.write(buf)
                    written += len(buf)
                    bar.update(len(buf))
        except (http.client.HTTPException, OSError) as exc:
            raise _Retryable(
                f"connection lost after {offset + written} bytes ({type(exc).__name__}: {exc})"
            ) from exc
    if body_len is not None and written < body_len:
        raise _Retryable(f"connection closed after {offset + written} of {offset + body_len} bytes")


# ------------------------------------------------------------------------------------------ extract
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


def _check_link(root: Path, member_rel: PurePosixPath, target: str, archive: Path, name: str) -> None:
    """Refuse a symlink whose target is absolute or resolves outside ``root``."""
    t = target.replace("\\", "/")
    if t.startswith("/") or re.match(r"^[A-Za-z]:", t):
        raise ExtractError(f"{archive}: refusing symlink {name!r} -> {target!r}: absolute target")
    joined = os.path.normpath(os.path.join(str(root), str(member_rel.parent), t))
    if not _inside(root, Path(joined)):
        raise ExtractError(f"{archive}: refusing symlink {name!r} -> {target!r}: escapes the destination")


def _extract_tar(archive: Path, root: Path) -> int:
    """Check and extract every member of a tar archive into ``root``; returns the member count."""
    n = 0
    try:
        with tarfile.open(archive, "r:*") as tf:
            for m in tf:  # streaming: one forward pass, even for .tar.gz
                rel = _safe_relpath(m.name, archive)
                if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
                    raise ExtractError(f"{archive}: refusing member {m.name!r}: device file or FIFO")
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
    except (tarfile.ReadError, EOFError, OSError, zipfile.BadZipFile, zlib.error, lzma.LZMAError) as exc:
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
                    raise ExtractError(f"{archive}: refusing member {zi.filename!r}: device file or FIFO")
            for zi in infos:
                zf.extract(zi, root)
            return len(infos)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ExtractError(f"{archive}: corrupt zip archive ({exc})") from exc


def _marker_payload(archive: Path) -> dict[str, Any]:
    st = archive.stat()
    return {"archive": archive.name, "size": st.st_size}


def _marker_matches(dest: Path, archive: Path) -> bool:
    """Whether ``dest`` holds a marker of an earlier :func:`extract` of this very ``archive``."""
    try:
        old = json.loads((dest / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return False
    if not archive.is_file() or not isinstance(old, dict):
        return False
    return all(old.get(k) == v for k, v in _marker_payload(archive).items())


def extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Unpack ``archive`` (tar/tar.gz/tgz/tar.bz2/tar.xz/zip) into the folder ``dest``; return ``dest``.

    Skips the work if ``dest`` holds a marker for the same archive (name and size). A ``dest`` made
    by an earlier call for another archive is replaced; a ``dest`` that was not made by this
    function is never touched (:class:`ExtractError`). Unsafe members (absolute paths, ``..``,
    links escaping ``dest``, device files) raise :class:`ExtractError` and leave nothing behind.
    """
    archive = Path(archive)
    dest = Path(dest)
    marker = dest / MARKER_NAME
    payload = _marker_payload(archive) if archive.is_file() else None
    if payload is None:
        raise ExtractError(f"{archive}: archive does not exist")
    if marker.is_file():
        if _marker_matches(dest, archive):
            log.info("%s already unpacked into %s; skipping", archive.name, dest)
            return dest
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


# ------------------------------------------------------------------------------------ ensure_dataset
def archive_filename(name: str, url: str) -> str:
    """File name for a downloaded archive: the URL's basename if it looks like an archive, else
    ``{name}-{basename}`` (the format is detected from the content when unpacking)."""
    base = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "download"
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base)
    if base.lower().endswith(_ARCHIVE_SUFFIXES):
        return base
    return f"{name}-{base}"


def ensure_dataset(
    dscfg: Mapping[str, Any],
    raw_root: str | os.PathLike[str],
    name: str | None = None,
    **fetch_kwargs: Any,
) -> Path:
    """Folder holding the unpacked dataset described by one ``datasets:`` entry of the config.

    ``dscfg`` keys: ``path`` (an already unpacked copy, used in place when it exists), ``url``,
    ``md5`` / ``sha256`` (optional checksums of the archive), ``filename`` (optional archive file
    name), ``nested_archives`` (unpack archives found inside the archive, see
    :func:`unpack_nested`), ``type``. Without a checksum, a download that does not unpack is
    deleted (it may be truncated: servers that stream generated archives send no length). ``name`` (default ``dscfg["name"]`` or ``dscfg["type"]``) names the folder
    ``{raw_root}/{name}/`` the archive is unpacked into; the archive itself is kept in
    ``{raw_root}/downloads/`` (so a re-run neither downloads nor unpacks again).
    ``fetch_kwargs`` go to :func:`fetch` (``retries``, ``backoff``, ``timeout``, ``progress``).
    Raises :class:`DatasetSourceError` if there is neither an existing ``path`` nor a ``url``.
    """
    name = name or dscfg.get("name") or dscfg.get("type")
    if not name:
        raise DatasetSourceError(f"dataset entry {dict(dscfg)!r} has no name/type")
    path = dscfg.get("path")
    if path:
        p = Path(str(path)).expanduser()
        if p.exists():
            log.info("dataset %s: using %s in place (no download)", name, p)
            return p
        if not dscfg.get("url"):
            raise DatasetSourceError(
                f"dataset {name!r}: configured path {p} does not exist and no url is configured "
                f"(set datasets.{name}.path to an unpacked copy or datasets.{name}.url)"
            )
        log.warning("dataset %s: configured path %s does not exist; downloading instead", name, p)
    url = dscfg.get("url")
    if not url:
        raise DatasetSourceError(
            f"dataset {name!r}: neither `path` nor `url` is configured; set datasets.{name}.url "
            f"(and md5/sha256) or datasets.{name}.path, e.g. with --config"
        )
    raw_root = Path(raw_root)
    fname = dscfg.get("filename") or archive_filename(str(name), str(url))
    archive = raw_root / "downloads" / str(fname)
    dest = raw_root / str(name)
    marker = dest / MARKER_NAME
    if marker.is_file() and not archive.exists():
        log.info("dataset %s: already unpacked in %s (archive since removed); using it", name, dest)
        return dest
    if _marker_matches(dest, archive):
        # the archive was verified before it was unpacked: no need to hash gigabytes again
        log.info("dataset %s: %s already downloaded and unpacked in %s", name, archive.name, dest)
        return dest
    fetch(str(url), archive, md5=dscfg.get("md5"), sha256=dscfg.get("sha256"), **fetch_kwargs)
    try:
        out = extract(archive, dest)
    except ExtractError as exc:
        if dscfg.get("md5") or dscfg.get("sha256"):
            raise
        # unverified download (no checksum): a truncated transfer would otherwise be re-used forever
        archive.unlink(missing_ok=True)
        raise ExtractError(f"{exc} -- the unverified download {archive} was deleted; run again") from exc
    if dscfg.get("nested_archives"):
        unpack_nested(out)
    return out


def unpack_nested(root: str | os.PathLike[str]) -> list[Path]:
    """Unpack every archive file (by suffix: zip, tar, tar.gz, ...) found inside ``root`` into a
    folder beside it named like the archive without its suffix (e.g. a Zenodo "files-archive" zip
    that holds the dataset's own zip). Each inner unpack is atomic and marked like :func:`extract`.
    Returns the folders unpacked (or found already unpacked)."""
    out = []
    for inner in sorted(Path(root).rglob("*")):
        name = inner.name.lower()
        suffix = next((s for s in _ARCHIVE_SUFFIXES if name.endswith(s)), None)
        if suffix is None or not inner.is_file():
            continue
        out.append(extract(inner, inner.with_name(inner.name[: -len(suffix)] or "unpacked")))
    return out
