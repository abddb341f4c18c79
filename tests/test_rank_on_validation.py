"""benchmarks/rank_on_validation.py: rows ranked by validation slot F1 from thresholds.json only."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import rank_on_validation as rv  # noqa: E402


def _th(root: Path, ds: str, exp: str, seed: int, slots: float, mix: float = 90.0) -> None:
    d = root / ds / exp / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "thresholds.json").write_text(json.dumps({"val_f1_slots": slots, "val_f1_mix": mix}))
    # a test-split file the ranking must never read: a tempting, much higher figure
    (d / "metrics.json").write_text(json.dumps({"slot_f1": 99.0}))


def test_rank_by_the_mean_over_datasets_and_seeds(tmp_path: Path) -> None:
    _th(tmp_path, "chamber", "2b", 0, 50.0)
    _th(tmp_path, "electro", "2b", 0, 40.0)
    _th(tmp_path, "chamber", "4m", 0, 60.0)
    _th(tmp_path, "chamber", "4m", 1, 56.0)
    _th(tmp_path, "electro", "4m", 0, 38.0)
    _th(tmp_path, "electro", "4m", 1, 40.0)
    _th(tmp_path, "chamber", "4h", 0, 70.0)  # electro missing: ranks last despite the figure
    table = rv.main(["--results", str(tmp_path), "--rows", "2b", "4h", "4m", "--seeds", "0", "1",
                     "--out", str(tmp_path / "out" / "screen")])
    assert list(table["exp"]) == ["4m", "2b", "4h"]
    m = table.set_index("exp")
    assert m.loc["4m", "val_slot_f1_chamber"] == 58.0 and m.loc["4m", "mean"] == 48.5
    assert m.loc["2b", "seeds"] == "2/4" and m.loc["2b", "missing"] == "chamber/1 electro/1"
    assert math.isnan(m.loc["4h", "mean"]) and "electro/0" in m.loc["4h", "missing"]
    assert (tmp_path / "out" / "screen.csv").exists()
    assert "| 1 | 4m |" in (tmp_path / "out" / "screen.md").read_text()


def test_a_broken_thresholds_file_is_named(tmp_path: Path) -> None:
    d = tmp_path / "chamber" / "2b" / "seed0"
    d.mkdir(parents=True)
    (d / "thresholds.json").write_text('{"mix": 0.5}')
    with pytest.raises(ValueError, match=r"chamber/2b/seed0/thresholds.json"):
        rv.main(["--results", str(tmp_path), "--rows", "2b"])


def test_nothing_found_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no thresholds.json"):
        rv.main(["--results", str(tmp_path), "--rows", "2b"])
