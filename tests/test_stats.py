"""Tests of slotmpe.results.stats: paired bootstrap effects on synthetic per-file counts, seed aggregation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slotmpe.per_file import PER_FILE_COLUMNS
from slotmpe.results.stats import (
    CI_FILES_ONLY,
    CI_NONE,
    CI_SEEDS_ONLY,
    CI_TWO_LEVEL,
    StatsError,
    aggregate_seeds,
    mean_std,
    paired_effect,
    read_per_file,
    read_per_file_runs,
)


def _per_file(
    recall: float, rng: np.random.Generator, seeds: tuple[int, ...] = (0, 1, 2), n_files: int = 40,
    file_difficulty: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per-file counts with expected recall ``recall`` (x a per-file difficulty) and no false
    positives, so the expected F1 of a file is ``2 r / (1 + r)``."""
    rows = []
    for s in seeds:
        for f in range(n_files):
            pos = int(rng.integers(800, 1200))
            r = recall * (1.0 if file_difficulty is None else file_difficulty[f])
            tp = int(rng.binomial(pos, r))
            rows.append({"seed": s, "file": f"f{f:02d}", "output": "slot", "tp": tp, "fp": 0,
                         "fn": pos - tp, "n_frames": 100, "threshold": 0.5})
            rows.append({"seed": s, "file": f"f{f:02d}", "output": "mix", "tp": pos, "fp": 10,
                         "fn": 0, "n_frames": 100, "threshold": 0.5})
    return pd.DataFrame(rows)


def test_known_effect_is_recovered_and_covered() -> None:
    rng = np.random.default_rng(0)
    a, b = _per_file(0.8, rng), _per_file(0.5, rng)
    expected = 100 * (2 * 0.8 / 1.8 - 2 * 0.5 / 1.5)  # 22.2 points
    res = paired_effect(a, b, output="slot", n_resamples=1000, seed=1)
    assert res.n_seeds == 3 and res.n_files == 40
    assert res.effect == pytest.approx(expected, abs=0.5)
    assert res.ci_low < expected < res.ci_high
    assert 0 < res.ci_high - res.ci_low < 2.0
    # reversed sides negate the effect
    rev = paired_effect(b, a, output="slot", n_resamples=1000, seed=1)
    assert rev.effect == pytest.approx(-res.effect)
    # the same seed gives the same interval
    assert paired_effect(a, b, output="slot", n_resamples=1000, seed=1) == res


def test_zero_effect_ci_covers_zero() -> None:
    rng = np.random.default_rng(2)
    diff = rng.uniform(0.5, 1.0, size=40)  # files differ a lot, the two sides do not
    a = _per_file(0.7, rng, file_difficulty=diff)
    b = _per_file(0.7, rng, file_difficulty=diff)
    res = paired_effect(a, b, output="slot", n_resamples=1000)
    assert res.ci_low < 0.0 < res.ci_high
    assert abs(res.effect) < 2.0


def test_pairing_uses_common_files_and_seeds_only() -> None:
    rng = np.random.default_rng(3)
    a = _per_file(0.8, rng, seeds=(0, 1, 2))
    b = _per_file(0.5, rng, seeds=(1, 2, 3))
    b = b[b["file"] != "f00"]
    res = paired_effect(a, b, output="mix", n_resamples=200)
    assert (res.n_seeds, res.n_files) == (2, 39)
    same = paired_effect(a, a, output="slot", n_resamples=200)  # constant statistic
    assert same.effect == same.ci_low == same.ci_high == 0.0
    one = paired_effect(a[a["file"] == "f05"], b, output="slot", n_resamples=50)
    assert one.n_files == 1 and one.ci_method == CI_SEEDS_ONLY and one.ci_low <= one.ci_high
    none = paired_effect(a[(a["file"] == "f05") & (a["seed"] == 1)], b, n_resamples=50)
    assert none.ci_method == CI_NONE and np.isnan(none.ci_low) and np.isnan(none.ci_high)
    with pytest.raises(StatsError, match="no common seed"):
        paired_effect(a, b[b["seed"] == 3], n_resamples=10)
    with pytest.raises(ValueError, match="output"):
        paired_effect(a, b, output="stem")


def test_effect_equals_pooled_f1_difference_averaged_over_seeds() -> None:
    rng = np.random.default_rng(4)
    a, b = _per_file(0.6, rng, n_files=5), _per_file(0.4, rng, n_files=5)

    def f1(df: pd.DataFrame, seed: int) -> float:
        d = df[(df["seed"] == seed) & (df["output"] == "slot")]
        tp, fp, fn = d["tp"].sum(), d["fp"].sum(), d["fn"].sum()
        return 100 * 2 * tp / (2 * tp + fp + fn)

    want = np.mean([f1(a, s) - f1(b, s) for s in (0, 1, 2)])
    assert paired_effect(a, b, n_resamples=100).effect == pytest.approx(want)


def test_read_per_file_takes_seed_from_folder(tmp_path: Path) -> None:
    df = _per_file(0.5, np.random.default_rng(5), seeds=(0,), n_files=3).drop(columns="seed")
    paths = []
    for s in (0, 4):
        p = tmp_path / f"seed{s}" / "per_file.csv"
        p.parent.mkdir()
        df[list(PER_FILE_COLUMNS)].to_csv(p, index=False)
        paths.append(p)
    runs = read_per_file_runs(paths)
    assert sorted(set(runs["seed"])) == [0, 4] and len(runs) == 12
    bad = tmp_path / "bad.csv"
    bad.write_text("file,output,tp\nx,mix,1\n")
    with pytest.raises(StatsError, match="bad.csv"):
        read_per_file(bad, seed=0)


def test_aggregate_seeds_mean_and_sample_std() -> None:
    assert mean_std([1.0, None, 3.0]) == (2.0, pytest.approx(np.sqrt(2.0)))
    assert mean_std([5.0]) == (5.0, None) and mean_std([None]) == (None, None)
    runs = pd.DataFrame({"exp": ["2b"] * 3 + ["1a"], "dataset": ["chamber"] * 4,
                         "slot_f1": [40.0, 50.0, 60.0, None], "std_f1": [1.0, 2.0, 3.0, 4.0]})
    out = aggregate_seeds(runs, ["exp", "dataset"], ["slot_f1", "std_f1"])
    r = out.set_index("exp")
    assert r.loc["2b", "slot_f1"] == 50.0 and r.loc["2b", "slot_f1_std"] == pytest.approx(10.0)
    assert r.loc["2b", "n_seeds"] == 3 and pd.isna(r.loc["1a", "slot_f1"])
    assert r.loc["1a", "std_f1"] == 4.0 and pd.isna(r.loc["1a", "std_f1_std"])


def _seeded(recall_a: dict[int, float], recall_b: float, n_files: int = 15,
            seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-file tables of two cells where cell ``a`` has its own recall in every seed (a trained
    model per seed) and ``b`` the same recall ``recall_b`` in every seed; files vary in size and
    difficulty alike on both sides."""
    rng = np.random.default_rng(seed)
    diff = rng.uniform(0.7, 1.0, size=n_files)
    a = pd.concat([_per_file(r, rng, seeds=(s,), n_files=n_files, file_difficulty=diff)
                   for s, r in recall_a.items()], ignore_index=True)
    b = _per_file(recall_b, rng, seeds=tuple(recall_a), n_files=n_files, file_difficulty=diff)
    return a, b


def test_seeds_of_opposite_sign_give_an_interval_covering_zero() -> None:
    """Three seeds whose effects disagree in sign (+, +, -) on 15 files: the file bootstrap of
    round 2 (seeds held fixed) gave a narrow interval excluding 0; the two-level interval covers 0
    and ``seeds_agree`` is False."""
    a, b = _seeded({0: 0.80, 1: 0.78, 2: 0.45}, 0.6)
    res = paired_effect(a, b, output="slot", n_resamples=2000)
    assert res.ci_method == CI_TWO_LEVEL and (res.n_seeds, res.n_files) == (3, 15)
    assert res.seed_effects[0] > 5 and res.seed_effects[1] > 5 and res.seed_effects[2] < -5
    assert not res.seeds_agree
    assert res.effect > 0  # the mean over seeds is positive ...
    assert res.ci_low < 0.0 < res.ci_high  # ... but not resolved
    # the draws do not depend on the batch size (reproducible findings)
    assert paired_effect(a, b, output="slot", n_resamples=2000, batch=7) == res


def test_consistent_effect_gives_an_interval_excluding_zero() -> None:
    a, b = _seeded({0: 0.80, 1: 0.76, 2: 0.78}, 0.6)
    res = paired_effect(a, b, output="slot", n_resamples=2000)
    assert res.seeds_agree and all(d > 0 for d in res.seed_effects)
    assert res.ci_method == CI_TWO_LEVEL
    assert 0.0 < res.ci_low < res.effect < res.ci_high
    assert 0 < res.half_width < 5.0


def test_one_seed_says_so_and_the_interval_is_over_files() -> None:
    a, b = _seeded({7: 0.8}, 0.6)
    res = paired_effect(a, b, output="slot", n_resamples=500)
    assert res.n_seeds == 1 and res.ci_method == CI_FILES_ONLY and res.seeds_agree
    assert res.ci_low < res.effect < res.ci_high


def test_note_outputs_are_compared_like_cells() -> None:
    a, b = _seeded({0: 0.8, 1: 0.8}, 0.6)
    a["output"] = a["output"].replace({"slot": "multi_instrument"})
    b["output"] = b["output"].replace({"slot": "multi_instrument"})
    res = paired_effect(a, b, output="multi_instrument", n_resamples=200)
    assert res.n_seeds == 2 and res.effect > 5
