"""Statistics over seeds and test files: Table III mean/std, paired effects with bootstrap CIs.

One module serves Table III's ``<col>_std`` columns (:func:`aggregate_seeds`), ``results/findings.*``
and ``results/table3_ext.*`` (:func:`paired_effect`).

Inputs
    ``results/{ds}/{exp}/seed{seed}/per_file.csv``, written by
    :func:`slotmpe.evaluation.evaluate_model` beside ``metrics.json``, one row per (test file,
    output) with columns :data:`PER_FILE_COLUMNS`: ``output`` is ``"mix"`` (standard MPE) or
    ``"slot"`` (the experiment's family- or stem-level slot metric), ``tp, fp, fn`` are counts of
    (frame, pitch) cells at the tuned threshold, so the pooled F1 of any subset of files is
    ``2 TP / (2 TP + FP + FN)`` of the summed counts (exactly Table III's pooled F1 over all of
    them). Statistics never rerun inference.

Paired effect (:func:`paired_effect`)
    ``a`` and ``b`` are per-file tables of two (exp, dataset) cells concatenated over seeds with a
    ``seed`` column. The effect is ``F1(a) - F1(b)`` in points, where ``F1(x)`` is the mean over
    seeds of the pooled F1 of seed ``s`` over all test files (the Table III figure averaged over
    seeds). Only the (seed, file) pairs present on both sides enter (paired design: same files and
    same seeds on both sides). The confidence interval is a percentile bootstrap over *files*: a
    resample draws ``n_files`` files with replacement and uses the same drawn files for every seed
    and for both sides, so the seed-to-seed variation is kept in every resample and the file
    variation is what is resampled (``scipy.stats.bootstrap`` with ``paired=True``, BCa where it is
    defined, percentile otherwise). With a constant statistic the interval collapses to the
    point; with a single common file there is no interval (``ci_low = ci_high = NaN``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

PER_FILE_NAME = "per_file.csv"
PER_FILE_COLUMNS: tuple[str, ...] = ("file", "output", "tp", "fp", "fn", "n_frames", "threshold")
OUTPUTS: tuple[str, ...] = ("mix", "slot")


class StatsError(ValueError):
    """Per-file tables that cannot be compared (missing columns, no common files or seeds)."""


@dataclass(frozen=True)
class PairedEffect:
    """Effect ``F1(a) - F1(b)`` in points with its bootstrap confidence interval."""

    effect: float
    ci_low: float
    ci_high: float
    n_seeds: int
    n_files: int

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict of the fields (for CSV rows)."""
        return asdict(self)


# --------------------------------------------------------------------------------------------
# per_file.csv
# --------------------------------------------------------------------------------------------


def read_per_file(path: Path, seed: int | None = None) -> pd.DataFrame:
    """Read one ``per_file.csv``; adds a ``seed`` column (given, or from a ``seed{n}`` folder).

    Raises :class:`StatsError` naming the file when a required column is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"per-file metrics {path} do not exist (run the evaluation)")
    df = pd.read_csv(path, dtype={"file": str, "output": str})
    missing = [c for c in ("file", "output", "tp", "fp", "fn") if c not in df.columns]
    if missing:
        raise StatsError(f"{path}: missing column(s) {missing}")
    if seed is None and "seed" not in df.columns:
        name = path.parent.name
        if not (name.startswith("seed") and name[4:].isdigit()):
            raise StatsError(f"{path}: no seed given and the folder is not named seed<n>")
        seed = int(name[4:])
    if seed is not None:
        df["seed"] = int(seed)
    return df


def read_per_file_runs(paths: Iterable[Path]) -> pd.DataFrame:
    """Concatenate the ``per_file.csv`` of several seeds of one (exp, dataset) cell."""
    frames = [read_per_file(Path(p)) for p in paths]
    if not frames:
        raise StatsError("no per-file tables given")
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------
# Paired bootstrap
# --------------------------------------------------------------------------------------------


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Pooled F1 in points of summed counts (0 where nothing is predicted or active)."""
    den = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 100.0 * 2 * tp / np.where(den > 0, den, 1), 0.0)


def _count_cube(df: pd.DataFrame, output: str, seeds: list[int], files: list[str]) -> np.ndarray:
    """``(3, n_seeds, n_files)`` float64 cube of tp, fp, fn."""
    sub = df[df["output"] == output].set_index(["seed", "file"])
    if sub.index.duplicated().any():
        dup = sub.index[sub.index.duplicated()][0]
        raise StatsError(f"duplicated per-file row for seed {dup[0]}, file {dup[1]!r} ({output})")
    idx = pd.MultiIndex.from_product([seeds, files], names=["seed", "file"])
    cube = sub.reindex(idx)[["tp", "fp", "fn"]].to_numpy(np.float64)
    return cube.T.reshape(3, len(seeds), len(files))


def _common(a: pd.DataFrame, b: pd.DataFrame, output: str) -> tuple[list[int], list[str]]:
    for name, df in (("a", a), ("b", b)):
        missing = [c for c in ("seed", "file", "output", "tp", "fp", "fn") if c not in df.columns]
        if missing:
            raise StatsError(f"per-file table {name} lacks column(s) {missing}")
    pa = a[a["output"] == output]
    pb = b[b["output"] == output]
    seeds = sorted(set(pa["seed"].astype(int)) & set(pb["seed"].astype(int)))
    if not seeds:
        raise StatsError(f"no common seed with {output!r} rows on both sides")
    files: set[str] | None = None
    for s in seeds:
        fs = set(pa.loc[pa["seed"] == s, "file"]) & set(pb.loc[pb["seed"] == s, "file"])
        files = fs if files is None else files & fs
    if not files:
        raise StatsError(f"no test file with {output!r} rows in every common seed on both sides")
    return seeds, sorted(files)


def paired_effect(
    a: pd.DataFrame,
    b: pd.DataFrame,
    output: str = "slot",
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedEffect:
    """Effect ``F1(a) - F1(b)`` (points) with a paired bootstrap CI over test files (module docstring).

    Args:
        a, b: per-file tables (:data:`PER_FILE_COLUMNS` + ``seed``) concatenated over seeds.
        output: ``"mix"`` or ``"slot"``.
        n_resamples: bootstrap resamples; confidence: CI level; seed: bootstrap RNG seed.
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}; got {output!r}")
    seeds, files = _common(a, b, output)
    ca = _count_cube(a, output, seeds, files)  # (3, S, F)
    cb = _count_cube(b, output, seeds, files)

    def stat(ia: np.ndarray, ib: np.ndarray, axis: int = -1) -> np.ndarray:
        """File indices ``(..., F)`` of one or a batch of resamples (identical on both sides)."""
        ia = np.asarray(ia, dtype=np.int64)
        sa = ca[:, :, ia].sum(axis=-1)  # (3, S, ...)
        sb = cb[:, :, ia].sum(axis=-1)
        return _f1(*sa).mean(axis=0) - _f1(*sb).mean(axis=0)

    idx = np.arange(len(files))
    point = float(stat(idx, idx))
    if len(files) < 2:  # no file variation to resample: no interval
        return PairedEffect(point, math.nan, math.nan, len(seeds), len(files))

    res = None
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                res = sps.bootstrap(
                    (idx, idx), stat, paired=True, vectorized=True, n_resamples=n_resamples,
                    confidence_level=confidence, method=method, batch=256,
                    random_state=np.random.default_rng(seed),
                )
            except (ValueError, FloatingPointError):
                res = None
        if res is not None and np.all(np.isfinite([res.confidence_interval.low,
                                                   res.confidence_interval.high])):
            break
    if res is None or not np.isfinite(res.confidence_interval.low):
        lo = hi = point  # degenerate (constant statistic)
    else:
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return PairedEffect(point, min(lo, point), max(hi, point), len(seeds), len(files))


# --------------------------------------------------------------------------------------------
# Mean / std over seeds
# --------------------------------------------------------------------------------------------


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample std (``ddof=1``) of the non-missing values; std ``None`` below two values."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return None, None
    mean = float(np.mean(vals))
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return mean, std


def aggregate_seeds(
    runs: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str]
) -> pd.DataFrame:
    """Per-seed metrics -> one row per ``keys`` group with ``<m>``, ``<m>_std`` and ``n_seeds``.

    ``runs`` holds one row per (group, seed); a metric missing (NaN/None) in some seeds is averaged
    over the seeds that have it; ``<m>_std`` is the sample std (NaN below two values).
    """
    recs = []
    for key, grp in runs.groupby(list(keys), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rec: dict[str, object] = dict(zip(keys, key, strict=True))
        for m in metrics:
            mean, std = mean_std(list(grp[m]) if m in grp else [])
            rec[m], rec[f"{m}_std"] = mean, std
        rec["n_seeds"] = len(grp)
        recs.append(rec)
    cols = [*keys, *metrics, *(f"{m}_std" for m in metrics), "n_seeds"]
    return pd.DataFrame.from_records(recs, columns=cols)
