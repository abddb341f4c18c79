"""Tests of slotmpe.download against a loopback HTTP server (127.0.0.1 only, stops by itself)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from slotmpe.config import ConfigError, apply_profile
from slotmpe.download import (
    MARKER_NAME,
    ChecksumError,
    DatasetSourceError,
    DownloadError,
    ExtractError,
    archive_filename,
    checksum_hex,
    ensure_dataset,
    extract,
    fetch,
)

try:
    from httpserver import LoopbackServer, make_tar_gz, make_zip, md5_of, sha256_of
except ImportError:  # pragma: no cover - tests run as a package
    from tests.httpserver import LoopbackServer, make_tar_gz, make_zip, md5_of, sha256_of

FAST = {"backoff": 0.01, "timeout": 10.0, "progress": False}
REPO = Path(__file__).resolve().parents[1]

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


# --------------------------------------------------------------- issue 15: stale data, md5 types
def test_ensure_dataset_never_reuses_data_from_another_source(tmp_path: Path) -> None:
    """Fault 3: a changed url or md5 downloads again (or fails); the marker records the source."""
    a = make_tar_gz({"Dataset/v.txt": b"A"})
    b = make_tar_gz({"Dataset/v.txt": b"B" * 100})
    raw = tmp_path / "raw"
    with LoopbackServer({"/a/ds.tar.gz": a, "/b/ds.tar.gz": b}) as srv:
        url_a, url_b = srv.url("/a/ds.tar.gz"), srv.url("/b/ds.tar.gz")
        out = ensure_dataset({"type": "toy", "url": url_a}, raw, **FAST)
        assert (out / "Dataset" / "v.txt").read_bytes() == b"A"
        marker = json.loads((out / MARKER_NAME).read_text())
        assert (marker["url"], marker["md5"], marker["size"]) == (url_a, None, len(a))
        # another url, same archive file name, no checksum: not the old archive, not the old data
        out = ensure_dataset({"type": "toy", "url": url_b}, raw, **FAST)
        assert (out / "Dataset" / "v.txt").read_bytes() == b"B" * 100
        # pinning the (right) md5 verifies the archive and keeps the unpacked data
        (out / "sentinel").write_text("kept")
        n = len(srv.requests)
        out = ensure_dataset({"type": "toy", "url": url_b, "md5": md5_of(b)}, raw, **FAST)
        assert (out / "sentinel").is_file() and len(srv.requests) == n
        assert json.loads((out / MARKER_NAME).read_text())["md5"] == md5_of(b)
        # a wrong md5 is never satisfied by what is on disk
        with pytest.raises(ChecksumError, match="0" * 32):
            ensure_dataset({"type": "toy", "url": url_b, "md5": "0" * 32}, raw, **FAST)
        # back to the right md5 (archive deleted by the failed run): the verified data are used
        out = ensure_dataset({"type": "toy", "url": url_b, "md5": md5_of(b)}, raw, **FAST)
        assert (out / "Dataset" / "v.txt").read_bytes() == b"B" * 100
        # a changed md5 with the archive gone downloads again and unpacks the new archive
        out = ensure_dataset({"type": "toy", "url": url_a, "md5": md5_of(a)}, raw, **FAST)
        assert (out / "Dataset" / "v.txt").read_bytes() == b"A" and not (out / "sentinel").exists()
        # a marker from before source records: the same archive, verified, is adopted as it is
        legacy = {k: v for k, v in json.loads((out / MARKER_NAME).read_text()).items()
                  if k in ("archive", "size", "members")}
        (out / MARKER_NAME).write_text(json.dumps(legacy))
        (out / "sentinel").write_text("kept")
        out = ensure_dataset({"type": "toy", "url": url_a, "md5": md5_of(a)}, raw, **FAST)
        assert (out / "sentinel").is_file()
        assert json.loads((out / MARKER_NAME).read_text())["url"] == url_a
        # `path:` to a folder slotmpe unpacked from another source: a clear error, no download
        n = len(srv.requests)
        with pytest.raises(DatasetSourceError, match=r"path.*unpacked from another source.*md5"):
            ensure_dataset({"type": "toy", "path": str(out), "url": url_a, "md5": md5_of(b)},
                           tmp_path / "other", **FAST)
        assert ensure_dataset({"type": "toy", "path": str(out), "url": url_a, "md5": md5_of(a)},
                              tmp_path / "other", **FAST) == out
        assert len(srv.requests) == n


def test_workflow_reruns_the_download_when_the_source_changes(tmp_path: Path) -> None:
    """Faults 3 and 4 through Snakemake: the source is a param of the download rule, and an
    all-digit md5 on the command line reaches the download as typed (leading zero included)."""
    data = make_tar_gz({"Dataset/readme.txt": b"hello"})
    wd = tmp_path / "wd"
    wd.mkdir()
    shutil.copy(REPO / "config.yaml", wd / "config.yaml")
    digits = "01234567012345670123456701234567"  # all digits, octal-looking, and wrong
    with LoopbackServer({"/ds.tar.gz": data}) as srv:

        def smk(md5: str, *args: str) -> subprocess.CompletedProcess[str]:
            override = f'datasets={{toy: {{type: urmp, url: "{srv.url("/ds.tar.gz")}", md5: {md5}}}}}'
            cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(wd),
                   "--cores", "1", *args, "data/raw/toy.ready", "--config", override]
            return subprocess.run(cmd, cwd=wd, capture_output=True, text=True, timeout=300)

        res = smk(md5_of(data))
        assert res.returncode == 0, res.stdout + res.stderr
        ready = json.loads((wd / "data" / "raw" / "toy.ready").read_text())
        assert ready["source"]["md5"] == md5_of(data) and ready["unpacked"]["size"] == len(data)
        res = smk(md5_of(data), "-n")
        assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr
        res = smk(digits, "-n")
        out = res.stdout + res.stderr
        assert res.returncode == 0, out
        assert "download_dataset" in out and "Params have changed" in out
        res = smk(digits)
        assert res.returncode != 0
        log = (wd / "logs" / "download" / "toy.log").read_text()
        assert f"expected {digits}" in log and "checksum mismatch" in log


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0123456789abcdef0123456789ABCDEF ", "0123456789abcdef0123456789abcdef"),
        (12345678901234567890123456789012, "12345678901234567890123456789012"),  # YAML decimal
        (int("01234567012345670123456701234567", 8), "01234567012345670123456701234567"),  # octal
        (None, None),
        ("", None),
    ],
)
def test_checksum_hex_recovers_what_yaml_made_of_an_md5(value: object, expected: str | None) -> None:
    assert checksum_hex(value, "md5") == expected


def test_all_digit_md5_passes_the_schema_however_typed() -> None:
    """Fault 4: an all-digit md5 (quoted or not, command line or file) validates; bad ones fail."""
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    schema = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
    for digits in ("01234567012345670123456701234567", "12345678901234567890123456789012",
                   "00000000000000000000000000000000", "01234567890123456789012345678901"):
        for typed in (digits, f'"{digits}"', f"'{digits}'"):  # as Snakemake parses --config
            entry = yaml.load(f"{{toy: {{type: urmp, url: u, md5: {typed}}}}}", Loader=yaml.BaseLoader)
            cfg = apply_profile(base, {"datasets": entry})
            validate(cfg, schema)
            assert cfg["datasets"]["toy"]["md5"] == digits
        # unquoted in a YAML file: PyYAML makes a number of it (or keeps a string)
        in_file = {**base, "datasets": {"toy": {"type": "urmp", "md5": yaml.safe_load(f"m: {digits}")["m"]}}}
        if digits != "00000000000000000000000000000000":  # 0: 32 zeros or "0b" + 30? ambiguous
            assert apply_profile(in_file)["datasets"]["toy"]["md5"] == digits
    in_file["datasets"]["toy"]["md5"] = 0
    with pytest.raises(ConfigError, match=r"datasets\.toy\.md5.*number 0.*quote"):
        apply_profile(in_file)
    for bad, needle in (("0123", r"32 hex digits, got 4 hex digits"), ("x" * 32, r"32 hex digits, got 32 characters \(not all hex")):
        with pytest.raises(ConfigError, match=rf"datasets\.toy\.md5: expected {needle}"):
            apply_profile(base, {"datasets": {"toy": {"type": "urmp", "md5": bad}}})
