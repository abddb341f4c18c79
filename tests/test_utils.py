"""Tests of slotmpe.utils.atomic_path: atomic replacement and ordinary file permissions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slotmpe.utils import atomic_path


def test_atomic_path_writes_with_ordinary_permissions(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "table.csv"
    with atomic_path(dest) as tmp:
        assert tmp.parent == dest.parent and tmp.suffix == ".csv"
        tmp.write_text("a,b\n")
    mask = os.umask(0)
    os.umask(mask)
    assert dest.read_text() == "a,b\n"
    assert dest.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in dest.parent.iterdir()] == ["table.csv"]


def test_atomic_path_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "model.pt"
    dest.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
