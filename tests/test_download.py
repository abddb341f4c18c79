"""Tests of slotmpe.download against a loopback HTTP server (127.0.0.1 only, stops by itself)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from slotmpe.download import (
    MARKER_NAME,
    ChecksumError,
    DatasetSourceError,
    DownloadError,
    ExtractError,
    archive_filename,
    ensure_dataset,
    extract,
    fetch,
)

try:
    from httpserver import LoopbackServer, make_tar_gz, make_zip, md5_of, sha256_of
except ImportError:  # pragma: no cover - tests run as a package
    from tests.httpserver import LoopbackServer, make_tar_gz, make_zip, md5_of, sha256_of

FAST = {"backoff": 0.01, "timeout": 10.0, "progress": False}

PAYLOAD = bytes(range(256)) * 400  # 100 kB


@pytest.fixture
def payload_server() -> Iterator[LoopbackServer]:
    with LoopbackServer({"/f.bin": PAYLOAD}) as srv:
        yield srv


# -------------------------------------------------------------------------------------------- fetch
def test_fetch_verifies_md5_and_sha256(tmp_path: Path, payload_server: LoopbackServer) -> None:
    dest = tmp_path / "d" / "f.bin"
    out = fetch(payload_server.url("/f.bin"), dest, md5=md5_of(PAYLOAD), sha256=sha256_of(PAYLOAD), chunk=4096, **FAST)
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "d" / "f.bin.part").exists()
    # a second call finds the verified file and does not download again
    n = len(payload_server.requests)
    fetch(payload_server.url("/f.bin"), dest, md5=md5_of(PAYLOAD), **FAST)
    assert len(payload_server.requests) == n


def test_fetch_checksum_mismatch_leaves_nothing(tmp_path: Path, payload_server: LoopbackServer) -> None:
    dest = tmp_path / "f.bin"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as ei:
        fetch(payload_server.url("/f.bin"), dest, sha256=wrong, **FAST)
    msg = str(ei.value)
    assert "f.bin" in msg and wrong in msg and sha256_of(PAYLOAD) in msg and "sha256" in msg
    assert list(tmp_path.iterdir()) == []


def test_fetch_resumes_an_interrupted_download(tmp_path: Path) -> None:
    with LoopbackServer({"/f.bin": PAYLOAD}, drop={"/f.bin": 1}) as srv:
        dest = fetch(srv.url("/f.bin"), tmp_path / "f.bin", md5=md5_of(PAYLOAD), chunk=1000, **FAST)
        assert dest.read_bytes() == PAYLOAD
        assert len(srv.requests) == 2
        assert srv.requests[0][1] is None
        assert srv.requests[1][1] == f"bytes={len(PAYLOAD) // 2}-"


def test_fetch_restarts_when_the_server_ignores_range(tmp_path: Path) -> None:
    with LoopbackServer({"/f.bin": PAYLOAD}, ignore_range=True, drop={"/f.bin": 1}) as srv:
        dest = fetch(srv.url("/f.bin"), tmp_path / "f.bin", sha256=sha256_of(PAYLOAD), chunk=1000, **FAST)
        assert dest.read_bytes() == PAYLOAD  # not the first half twice
        assert len(srv.requests) == 2 and srv.requests[1][1] is not None


def test_fetch_retries_transient_errors_but_not_404(tmp_path: Path) -> None:
    with LoopbackServer({"/f.bin": PAYLOAD}, fail={"/f.bin": [503, 500]}) as srv:
        fetch(srv.url("/f.bin"), tmp_path / "f.bin", md5=md5_of(PAYLOAD), **FAST)
        assert len(srv.requests) == 3
        with pytest.raises(DownloadError, match="404"):
            fetch(srv.url("/missing.bin"), tmp_path / "m.bin", **FAST)
        assert sum(p == "/missing.bin" for p, _ in srv.requests) == 1


def test_fetch_gives_up_and_keeps_the_partial_file(tmp_path: Path) -> None:
    with LoopbackServer({"/f.bin": PAYLOAD}, drop={"/f.bin": 100}) as srv:
        with pytest.raises(DownloadError, match="3 attempt"):
            fetch(srv.url("/f.bin"), tmp_path / "f.bin", retries=2, **FAST)
        part = tmp_path / "f.bin.part"
        assert part.is_file() and 0 < part.stat().st_size < len(PAYLOAD)
        assert not (tmp_path / "f.bin").exists()
        # a later run resumes from the partial file
        have = part.stat().st_size
        srv.drop.clear()
        fetch(srv.url("/f.bin"), tmp_path / "f.bin", md5=md5_of(PAYLOAD), **FAST)
        assert srv.requests[-1][1] == f"bytes={have}-"
        assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
        assert not part.exists()


def test_fetch_replaces_an_existing_file_with_a_wrong_checksum(tmp_path: Path, payload_server: LoopbackServer) -> None:
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"stale")
    fetch(payload_server.url("/f.bin"), dest, md5=md5_of(PAYLOAD), **FAST)
    assert dest.read_bytes() == PAYLOAD


def test_fetch_rejects_malformed_checksums(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="md5"):
        fetch("http://127.0.0.1:9/x", tmp_path / "x", md5="xyz", **FAST)


# ------------------------------------------------------------------------------------------ extract
@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_extract_unpacks_atomically_and_skips_reruns(tmp_path: Path, kind: str) -> None:
    members = {"top/a.txt": b"alpha", "top/sub/b.txt": b"beta"}
    archive = tmp_path / f"x.{kind}"
    archive.write_bytes(make_tar_gz(members) if kind == "tar.gz" else make_zip(members))
    dest = extract(archive, tmp_path / "out")
    assert (dest / "top" / "a.txt").read_bytes() == b"alpha"
    assert (dest / "top" / "sub" / "b.txt").read_bytes() == b"beta"
    assert (dest / MARKER_NAME).is_file()
    (dest / "top" / "a.txt").write_bytes(b"changed")
    extract(archive, dest)  # marker matches: nothing is unpacked again
    assert (dest / "top" / "a.txt").read_bytes() == b"changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", f"x.{kind}"]


def test_extract_detects_the_format_from_the_content(tmp_path: Path) -> None:
    archive = tmp_path / "file_stream-99348"  # no extension, as Dryad serves URMP
    archive.write_bytes(make_tar_gz({"Dataset/x.txt": b"x"}))
    assert (extract(archive, tmp_path / "o") / "Dataset" / "x.txt").read_bytes() == b"x"
    bad = tmp_path / "junk.tar.gz"
    bad.write_bytes(b"this is not an archive" * 10)
    with pytest.raises(ExtractError, match="junk.tar.gz"):
        extract(bad, tmp_path / "o2")
    assert not (tmp_path / "o2").exists()


def test_extract_explains_a_web_page_instead_of_an_archive(tmp_path: Path) -> None:
    page = tmp_path / "urmp-99348"
    page.write_text("<!DOCTYPE html><html><body>Please log in</body></html>")
    with pytest.raises(ExtractError, match="web page"):
        extract(page, tmp_path / "o")


@pytest.mark.parametrize("cut", [0.5, 0.97])
def test_extract_refuses_a_truncated_tar(tmp_path: Path, cut: float) -> None:
    data = make_tar_gz({f"f{i}.bin": bytes(range(256)) * 40 + bytes([i]) for i in range(4)})
    archive = tmp_path / "t.tar.gz"
    archive.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ExtractError, match="truncated"):
        extract(archive, tmp_path / "o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.tar.gz"]
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as tf:
        ti = tarfile.TarInfo("a.txt")
        ti.size = 3
        tf.addfile(ti, io.BytesIO(b"abc"))
    archive.write_bytes(plain.getvalue()[:1024])  # header + data block, end marker cut off
    with pytest.raises(ExtractError, match="truncated"):
        extract(archive, tmp_path / "o")


def test_extract_never_touches_a_foreign_folder(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(make_tar_gz({"x.txt": b"x"}))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("user data")
    with pytest.raises(ExtractError, match="not unpacked by slotmpe"):
        extract(archive, tmp_path / "mine")
    assert (tmp_path / "mine" / "keep.txt").read_text() == "user data"


def _tar_with(entries: list[tarfile.TarInfo]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        ok = tarfile.TarInfo("ok/first.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        for ti in entries:
            tf.addfile(ti, io.BytesIO(b"evil"[: ti.size]) if ti.isfile() else None)
    return buf.getvalue()


def _file(name: str) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = 4
    return ti


def _link(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    ti.linkname = target
    return ti


MALICIOUS_TARS = {
    "dotdot": [_file("../evil.txt")],
    "nested-dotdot": [_file("ok/../../evil.txt")],
    "absolute": [_file("/tmp/slotmpe-evil.txt")],
    "symlink-escape": [_link("ok/link", "../../")],
    "symlink-absolute": [_link("ok/link", "/etc")],
    "symlink-then-write": [_link("ok/up", ".."), _file("ok/up/../evil.txt")],
    "hardlink-escape": [_link("ok/hard", "../outside.txt", hard=True)],
}


@pytest.mark.parametrize("case", sorted(MALICIOUS_TARS))
def test_extract_refuses_malicious_tar_members(tmp_path: Path, case: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = work / "evil.tar.gz"
    archive.write_bytes(_tar_with(MALICIOUS_TARS[case]))
    with pytest.raises(ExtractError, match="refusing"):
        extract(archive, work / "out")
    assert sorted(p.name for p in work.iterdir()) == ["evil.tar.gz"]  # no dest, no temp folder
    assert not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/slotmpe-evil.txt").exists()


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"])
def test_extract_refuses_malicious_zip_members(tmp_path: Path, name: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("fine.txt", b"fine")
        zf.writestr(zipfile.ZipInfo(name), b"evil")
    archive = work / "evil.zip"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(ExtractError, match="refusing"):
        extract(archive, work / "out")
    assert sorted(p.name for p in work.iterdir()) == ["evil.zip"]
    assert not (tmp_path / "evil.txt").exists()


def test_extract_refuses_an_escaping_zip_symlink(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zi = zipfile.ZipInfo("link")
        zi.external_attr = (0o120777 << 16)
        zf.writestr(zi, "../../etc")
    archive = tmp_path / "l.zip"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(ExtractError, match="symlink"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------- ensure_dataset
def test_ensure_dataset_downloads_verifies_and_unpacks(tmp_path: Path) -> None:
    data = make_tar_gz({"Dataset/readme.txt": b"hello"})
    with LoopbackServer({"/files/ds.tar.gz": data}) as srv:
        cfg = {"type": "toy", "url": srv.url("/files/ds.tar.gz"), "md5": md5_of(data)}
        out = ensure_dataset(cfg, tmp_path / "raw", **FAST)
        assert out == tmp_path / "raw" / "toy"
        assert (out / "Dataset" / "readme.txt").read_bytes() == b"hello"
        assert (tmp_path / "raw" / "downloads" / "ds.tar.gz").is_file()
        n = len(srv.requests)
        assert ensure_dataset(cfg, tmp_path / "raw", **FAST) == out  # re-run: no download
        assert len(srv.requests) == n


def test_ensure_dataset_corrupted_archive_fails_and_leaves_nothing(tmp_path: Path) -> None:
    good = make_tar_gz({"Dataset/readme.txt": b"hello" * 100})
    corrupted = bytearray(good)
    corrupted[len(corrupted) // 2] ^= 0xFF
    with LoopbackServer({"/ds.tar.gz": bytes(corrupted)}) as srv:
        cfg = {"type": "toy", "url": srv.url("/ds.tar.gz"), "md5": md5_of(good)}
        with pytest.raises(ChecksumError, match=md5_of(good)):
            ensure_dataset(cfg, tmp_path / "raw", **FAST)
    assert not (tmp_path / "raw" / "toy").exists()
    assert list((tmp_path / "raw" / "downloads").iterdir()) == []


def test_ensure_dataset_unpacks_nested_archives(tmp_path: Path) -> None:
    inner = make_zip({"mshoxxDB/Beneath_v1/Beneath_v1.flac": b"fLaC"})
    outer = make_zip({"mshoxxDB_v1.1.zip": inner, "README.md": b"readme"})
    with LoopbackServer({"/api/records/15881577/files-archive": outer}) as srv:
        cfg = {"type": "mshoxxdb", "url": srv.url("/api/records/15881577/files-archive"),
               "md5": md5_of(outer), "nested_archives": True}
        out = ensure_dataset(cfg, tmp_path / "raw", **FAST)
    assert (out / "mshoxxDB_v1.1" / "mshoxxDB" / "Beneath_v1" / "Beneath_v1.flac").read_bytes() == b"fLaC"
    assert (tmp_path / "raw" / "downloads" / "mshoxxdb-files-archive").is_file()


def test_ensure_dataset_deletes_an_unverified_download_that_does_not_unpack(tmp_path: Path) -> None:
    full = make_tar_gz({"a.txt": bytes(range(256)) * 40})
    truncated = full[: len(full) // 2]
    with LoopbackServer({"/d.tar.gz": truncated}) as srv:
        with pytest.raises(ExtractError, match="deleted"):
            ensure_dataset({"type": "toy", "url": srv.url("/d.tar.gz")}, tmp_path / "raw", **FAST)
    assert list((tmp_path / "raw" / "downloads").iterdir()) == []
    assert not (tmp_path / "raw" / "toy").exists()


def test_ensure_dataset_uses_an_existing_path_in_place(tmp_path: Path, payload_server: LoopbackServer) -> None:
    there = tmp_path / "already"
    there.mkdir()
    cfg = {"type": "toy", "path": str(there), "url": payload_server.url("/f.bin")}
    assert ensure_dataset(cfg, tmp_path / "raw", **FAST) == there
    assert payload_server.requests == []


def test_ensure_dataset_needs_a_url_or_a_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetSourceError, match="datasets.toy"):
        ensure_dataset({"type": "toy", "url": None, "path": None}, tmp_path)
    with pytest.raises(DatasetSourceError, match="does not exist"):
        ensure_dataset({"type": "toy", "path": str(tmp_path / "nope")}, tmp_path)


def test_archive_filename() -> None:
    assert archive_filename("musicnet", "https://zenodo.org/records/5120004/files/musicnet.tar.gz") == "musicnet.tar.gz"
    assert archive_filename("urmp", "https://datadryad.org/stash/downloads/file_stream/99348") == "urmp-99348"
