"""benchmarks/project_run_time.py: the replay of a run's jobs on P cores."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import project_run_time as prt  # noqa: E402


def _rows(**cpu: float) -> list[dict]:
    return [{"benchmark": k.replace("__", "/"), "s": v * 2, "cpu_s": v} for k, v in cpu.items()]


ROWS = _rows(data__chamber=10, features__chamber=5, timbre__chamber_train=20,
             train__chamber_1a_seed0=100, train__chamber_2b_seed0=200,
             eval__chamber_2b_seed0_thresholds=7, eval__chamber_2b_seed0_metrics=3,
             eval__chamber_3a_seed0_thresholds=7, eval__chamber_3a_seed0_metrics=3,
             export__chamber_2b_seed0=1)


def test_dependencies_follow_the_pipeline() -> None:
    jobs = {j.name: j for j in prt.build_jobs(ROWS)}
    assert jobs["features/chamber"].after == ["data/chamber"]
    assert jobs["train/chamber_1a_seed0"].after == ["features/chamber"]  # no timbre head
    assert jobs["train/chamber_2b_seed0"].after == ["features/chamber", "timbre/chamber_train"]
    assert jobs["eval/chamber_3a_seed0_thresholds"].after == ["train/chamber_2b_seed0"]  # derived
    assert jobs["eval/chamber_3a_seed0_metrics"].after == [
        "train/chamber_2b_seed0", "eval/chamber_3a_seed0_thresholds"]
    assert jobs["train/chamber_2b_seed0"].cpu_s == 200  # CPU seconds, not wall


def test_one_core_sums_and_many_cores_follow_the_critical_path() -> None:
    jobs = prt.build_jobs(ROWS)
    assert prt.simulate(jobs, 1) == pytest.approx(sum(j.cpu_s for j in jobs))
    # data -> features -> timbre -> 2b -> thresholds -> metrics is the longest chain
    assert prt.simulate(jobs, 16) == pytest.approx(10 + 5 + 20 + 200 + 7 + 3)
    two = prt.simulate(jobs, 2)
    assert 245 <= two < sum(j.cpu_s for j in jobs)


def test_seeds_repeat_the_per_model_jobs_only() -> None:
    one, three = prt.build_jobs(ROWS), prt.build_jobs(ROWS, seeds=3)
    shared = [j for j in one if j.name.split("/")[0] in ("data", "features", "timbre")]
    assert len(three) == len(shared) + 3 * (len(one) - len(shared))
    assert prt.simulate(three, 1) == pytest.approx(
        sum(j.cpu_s for j in shared) + 3 * sum(j.cpu_s for j in one if j not in shared))
    with pytest.raises(ValueError, match="cores"):
        prt.simulate(one, 0)
