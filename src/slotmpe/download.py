"""Downloading the real datasets: resumable, checksummed, atomic; unpacked by :mod:`slotmpe.unpack`.

* :func:`fetch` streams a URL to a file with a progress bar. Bytes go to ``dest.part``; an
  interrupted transfer is resumed with an HTTP ``Range`` request (a server that ignores ``Range``
  and answers ``200`` makes the download restart from byte 0), transient failures (connection
  errors, timeouts, short bodies, HTTP 408/425/429/5xx) are retried with exponential back-off, and
  the file is verified against the configured md5 and/or sha256 before it is renamed onto ``dest``.
  On a checksum mismatch the ``.part`` file is deleted and :class:`ChecksumError` names the file, the
  algorithm, the expected and the actual digest. Without a checksum the sha256 is logged so that it
  can be pinned in ``config.yaml``.
* :func:`ensure_dataset` turns one ``datasets:`` entry of ``config.yaml`` into an unpacked folder:
  an existing ``path`` is used in place, otherwise ``url`` (+ ``md5`` / ``sha256``) is fetched into
  ``{raw_root}/downloads/`` and unpacked into ``{raw_root}/{name}/`` (:func:`slotmpe.unpack.extract`).
  The unpacked folder's marker records what it was made from (url, md5, sha256, archive name and
  size) and the archive's ``.source.json`` the url it came from: a change of any of them
  downloads and unpacks again (see :func:`ensure_dataset`).
* :func:`checksum_hex` reads a configured md5/sha256 however YAML typed it (an all-digit md5
  becomes an integer).

Only the standard library (``urllib``) does network I/O; ``tqdm`` draws the progress bar.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from slotmpe.unpack import (  # re-exported: the download API predates the split
    ARCHIVE_SUFFIXES,
    MARKER_NAME,
    SOURCE_KEYS,
    ExtractError,
    archive_kind,
    extract,
    marker_mismatch,
    read_marker,
    unpack_nested,
)
from slotmpe.utils import atomic_path, get_logger

log = get_logger(__name__)

__all__ = [
    "MARKER_NAME", "ChecksumError", "DatasetSourceError", "DownloadError", "ExtractError",
    "archive_filename", "archive_kind", "checksum_hex", "ensure_dataset", "extract", "fetch",
    "file_digest", "source_json", "source_record", "unpack_nested", "write_ready_marker",
]

USER_AGENT = "slotmpe-downloader/0.1 (+https://github.com/; research code)"
MAX_BACKOFF_S = 60.0
_RETRY_HTTP_CODES = frozenset({408, 425, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
CHECKSUM_HEX_DIGITS: Mapping[str, int] = {"md5": 32, "sha256": 64}
SOURCE_SUFFIX = ".source.json"
"""Beside a downloaded archive: ``{"url", "size"}`` of the download, so a changed url is noticed."""


class DownloadError(RuntimeError):
    """A download failed for good (after the retries, or with a non-retryable HTTP status)."""


class ChecksumError(DownloadError):
    """The downloaded file does not have the configured checksum; nothing was kept."""


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


def checksum_hex(value: Any, algo: str, where: str = "") -> str | None:
    """A configured ``algo`` ("md5" or "sha256") checksum as lower-case hex, however YAML typed it.

    ``None`` or ``""`` give ``None``. A string must be exactly 32 (md5) / 64 (sha256) hex digits
    (surrounding blanks and case ignored). An integer is what YAML made of an all-digit value;
    under YAML 1.1 (PyYAML, used by Snakemake and slotmpe) it is recovered exactly where that is
    unambiguous:

    * with exactly ``n`` decimal digits it was a decimal integer (which never starts with 0): the
      digits are the checksum;
    * with fewer digits the value started with ``0``: YAML 1.1 reads ``0`` + octal digits as an
      octal number, and ``0b`` + binary digits as a binary one (``b`` is a hex digit). A binary
      reading of ``n`` characters is below ``2**(n-2)``, so a larger integer can only be octal and
      is written back in octal, zero-padded to ``n`` digits. A smaller one is ambiguous and raises
      ValueError asking to quote the value in a YAML file (on the command line slotmpe keeps
      checksums as typed: see :func:`slotmpe.config.coerce_scalars`).

    Plain zero-padding of the decimal digits would be wrong here: a leading-zero value is never
    read as decimal. ``where`` names the setting in messages. Raises ValueError (naming the
    setting, the value and its length) for anything else.
    """
    n_hex = CHECKSUM_HEX_DIGITS[algo]
    label = where or algo
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(
            f"{label}: expected {n_hex} hex digits, got the YAML {type(value).__name__} {value!r}; "
            "quote the checksum"
        )
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{label}: expected {n_hex} hex digits, got the number {value}")
        dec = str(value)
        if len(dec) == n_hex:
            return dec
        octal = format(value, "o")
        if len(dec) < n_hex and value >= 2 ** (n_hex - 2) and len(octal) < n_hex:
            return octal.zfill(n_hex)
        raise ValueError(
            f"{label}: YAML read the checksum as the number {value} ({len(dec)} digits), which "
            f"does not give {n_hex} hex digits unambiguously; quote it in the YAML file "
            f"({algo}: '0123...')"
        )
    v = str(value).strip().lower()
    if not re.fullmatch(rf"[0-9a-f]{{{n_hex}}}", v):
        what = "hex digits" if re.fullmatch(r"[0-9a-f]*", v) else "characters (not all hex digits)"
        raise ValueError(f"{label}: expected {n_hex} hex digits, got {len(v)} {what}: {value!r}")
    return v


def _expected_digests(md5: Any, sha256: Any) -> dict[str, str]:
    """Normalised ``{algo: hex}`` of the configured checksums; ValueError for malformed values."""
    out: dict[str, str] = {}
    for algo, value in (("md5", md5), ("sha256", sha256)):
        v = checksum_hex(value, algo)
        if v is not None:
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


# ------------------------------------------------------------------------------------ ensure_dataset
def archive_filename(name: str, url: str) -> str:
    """File name for a downloaded archive: the URL's basename if it looks like an archive, else
    ``{name}-{basename}`` (the format is detected from the content when unpacking)."""
    base = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "download"
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base)
    if base.lower().endswith(ARCHIVE_SUFFIXES):
        return base
    return f"{name}-{base}"


def source_record(dscfg: Mapping[str, Any], name: str = "") -> dict[str, Any]:
    """``{"url", "md5", "sha256"}`` of a ``datasets:`` entry, normalised (``None`` where unset).

    This is what an unpacked folder's marker records and what the workflow's download rule takes
    as a parameter, so that a change of any of them makes Snakemake run the download again and
    rebuild everything downstream. Malformed checksums raise ValueError naming the setting.
    """
    where = f"datasets.{name}." if name else ""
    return {
        "url": str(dscfg["url"]) if dscfg.get("url") else None,
        "md5": checksum_hex(dscfg.get("md5"), "md5", f"{where}md5"),
        "sha256": checksum_hex(dscfg.get("sha256"), "sha256", f"{where}sha256"),
    }


def _source_file(archive: Path) -> Path:
    return archive.with_name(archive.name + SOURCE_SUFFIX)


def _forget_foreign_archive(archive: Path, url: str, expected: Mapping[str, str]) -> None:
    """Delete a downloaded ``archive`` that came from another url (or from an unknown one) when
    no checksum can prove it is the configured file; with a checksum :func:`fetch` verifies it."""
    if not archive.exists() or expected:
        return
    try:
        came_from = json.loads(_source_file(archive).read_text()).get("url")
    except (OSError, ValueError, AttributeError):
        came_from = None
    if came_from != url:
        log.warning(
            "%s was downloaded from %s, not %s, and no checksum is configured: downloading again",
            archive, came_from or "an unrecorded url", url,
        )
        archive.unlink()
        _source_file(archive).unlink(missing_ok=True)


def _check_path_source(name: str, p: Path, want: Mapping[str, Any]) -> None:
    """A configured ``path`` that slotmpe unpacked must come from the configured url/checksums."""
    old = read_marker(p) if p.is_dir() else None
    configured = {k: v for k, v in want.items() if v}
    if old is None:
        if configured:
            log.info(
                "dataset %s: %s is used as it is; the configured %s cannot be checked against it",
                name, p, "/".join(configured),
            )
        return
    if not any(k in old for k in SOURCE_KEYS):
        log.warning("dataset %s: %s was unpacked by an older slotmpe (source not recorded)", name, p)
        return
    bad = {k: (old.get(k), v) for k, v in configured.items() if old.get(k) != v}
    if bad:
        details = "; ".join(f"{k}: unpacked from {o!r}, configured {v!r}" for k, (o, v) in bad.items())
        raise DatasetSourceError(
            f"dataset {name!r}: the folder given as path ({p}) was unpacked from another source "
            f"({details}). Remove datasets.{name}.path to download the configured archive, or make "
            "url/md5/sha256 match the folder."
        )


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
    :func:`unpack_nested`), ``type``. ``name`` (default ``dscfg["name"]`` or ``dscfg["type"]``)
    names the folder ``{raw_root}/{name}/`` the archive is unpacked into; the archive itself is
    kept in ``{raw_root}/downloads/`` with a ``.source.json`` naming its url.
    ``fetch_kwargs`` go to :func:`fetch` (``retries``, ``backoff``, ``timeout``, ``progress``).

    Cache invalidation: the folder is re-used only while its marker records the configured url,
    md5 and sha256 (:func:`source_record`) and, where the archive is still there, its size.
    Otherwise the archive is fetched again (kept only if it verifies against the configured
    checksums, or, without checksums, if it came from the same url) and unpacked again. Only
    pinning a checksum on a folder that had none, or a folder whose marker predates source
    records (the same archive still there and verifying), updates the marker without unpacking. With ``path``, a folder slotmpe unpacked must record the
    configured url/checksums (:class:`DatasetSourceError` otherwise); other folders are used as
    they are. Without a checksum, a download that does not unpack is deleted (it may be truncated).
    Raises :class:`DatasetSourceError` if there is neither an existing ``path`` nor a ``url``.
    """
    name = name or dscfg.get("name") or dscfg.get("type")
    if not name:
        raise DatasetSourceError(f"dataset entry {dict(dscfg)!r} has no name/type")
    want = source_record(dscfg, str(name))
    path = dscfg.get("path")
    if path:
        p = Path(str(path)).expanduser()
        if p.exists():
            _check_path_source(str(name), p, want)
            log.info("dataset %s: using %s in place (no download)", name, p)
            return p
        if not want["url"]:
            raise DatasetSourceError(
                f"dataset {name!r}: configured path {p} does not exist and no url is configured "
                f"(set datasets.{name}.path to an unpacked copy or datasets.{name}.url)"
            )
        log.warning("dataset %s: configured path %s does not exist; downloading instead", name, p)
    url = want["url"]
    if not url:
        raise DatasetSourceError(
            f"dataset {name!r}: neither `path` nor `url` is configured; set datasets.{name}.url "
            f"(and md5/sha256) or datasets.{name}.path, e.g. with --config"
        )
    raw_root = Path(raw_root)
    fname = dscfg.get("filename") or archive_filename(str(name), str(url))
    archive = raw_root / "downloads" / str(fname)
    dest = raw_root / str(name)
    expected = {k: want[k] for k in ("md5", "sha256") if want[k]}
    old = read_marker(dest)
    if old is not None:
        same_source = all(old.get(k) == want[k] for k in SOURCE_KEYS)
        if same_source and old.get("archive") == archive.name and not archive.exists():
            log.info("dataset %s: already unpacked in %s (archive since removed); using it", name, dest)
            return dest
        if same_source and marker_mismatch(dest, archive, want) is None:
            # the archive was verified before it was unpacked: no need to hash gigabytes again
            log.info("dataset %s: %s already downloaded and unpacked in %s", name, archive.name, dest)
            return dest
        log.warning(
            "dataset %s: %s was unpacked from %s (md5 %s, sha256 %s, %s, %s bytes); the config now "
            "says %s (md5 %s, sha256 %s): downloading and unpacking again",
            name, dest, old.get("url"), old.get("md5"), old.get("sha256"), old.get("archive"),
            old.get("size"), url, want["md5"], want["sha256"],
        )
    _forget_foreign_archive(archive, str(url), expected)
    fetch(str(url), archive, md5=want["md5"], sha256=want["sha256"], **fetch_kwargs)
    with atomic_path(_source_file(archive)) as tmp:
        tmp.write_text(json.dumps({"url": url, "size": archive.stat().st_size}, indent=1))
    if (
        old is not None and expected and not old.get("md5") and not old.get("sha256")
        and old.get("url", url) == url and old.get("archive") == archive.name
        and old.get("size") == archive.stat().st_size
    ):
        # a checksum was pinned on a folder unpacked without one (or by a slotmpe that recorded
        # no source), and the very archive it was unpacked from (name, size) verified
        with atomic_path(dest / MARKER_NAME) as tmp:
            tmp.write_text(json.dumps({**old, **want}, indent=1))
        log.info("dataset %s: checksum pinned; the verified archive's unpacked data are kept", name)
        return dest
    try:
        out = extract(archive, dest, source=want)
    except ExtractError as exc:
        if expected:
            raise
        # unverified download (no checksum): a truncated transfer would otherwise be re-used forever
        archive.unlink(missing_ok=True)
        _source_file(archive).unlink(missing_ok=True)
        raise ExtractError(f"{exc} -- the unverified download {archive} was deleted; run again") from exc
    if dscfg.get("nested_archives"):
        unpack_nested(out)
    return out


def source_json(dscfg: Mapping[str, Any], name: str) -> str:
    """:func:`source_record` plus the ``path`` of a ``datasets:`` entry as canonical JSON.

    The workflow's download rule takes it as a parameter, so Snakemake reruns the download (and
    everything downstream) when the url, a checksum or the path changes.
    """
    rec = {**source_record(dscfg, name), "path": str(dscfg["path"]) if dscfg.get("path") else None}
    return json.dumps(rec, sort_keys=True)


def write_ready_marker(marker: Path, folder: Path, source: str) -> Path:
    """Write the workflow's ``{raw_root}/{dataset}.ready`` marker (atomically): the ``source``
    (:func:`source_json`), the unpacked ``folder`` and what its unpack marker records."""
    record = {
        "source": json.loads(source),
        "folder": str(folder),
        "unpacked": read_marker(folder),
    }
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    return marker
