"""Statistics over seeds and test files: Table III mean/std, seed-aware paired effects.

One module serves Table III's ``<col>_std`` columns (:func:`aggregate_seeds`), ``results/findings.*``
and ``results/table3_ext.*`` (:func:`paired_effect`).

Inputs
    ``results/{ds}/{exp}/seed{seed}/per_file.csv``, written by
    :func:`slotmpe.evaluation.evaluate_model` beside ``metrics.json``, one row per (test file,
    output) with columns :data:`slotmpe.per_file.PER_FILE_COLUMNS`. ``output`` is one of
    :data:`slotmpe.per_file.OUTPUTS`: ``"mix"``
    (standard MPE) and ``"slot"`` (the experiment's family- or stem-level slot metric) count
    (frame, pitch) cells at the tuned threshold; the note outputs (``note_onset``, ``note_onoff``,
    ``slot_note_onset``, ``slot_note_onoff``, ``multi_instrument``, defined in
    :mod:`slotmpe.metrics`) count notes. Either way ``tp, fp, fn`` are counts whose sums over any
    subset of files give the pooled F1 ``2 TP / (2 TP + FP + FN)`` of that subset (exactly Table
    III's pooled F1 over all of them). Statistics never rerun inference.

Paired effect (:func:`paired_effect`)
    ``a`` and ``b`` are per-file tables of two (exp, dataset) cells concatenated over seeds with a
    ``seed`` column. Only the seeds present on both sides and the files present in every one of
    those seeds on both sides enter (paired design). The effect of seed ``s`` is
    ``d_s = F1_s(a) - F1_s(b)`` in points, ``F1_s`` the pooled F1 of seed ``s`` over the files; the
    effect is the mean of ``d_s`` over seeds (the Table III figure of ``a`` minus that of ``b``).

    Interval: **two-level paired bootstrap** (percentile, ``n_resamples`` resamples, seeded numpy
    RNG so that the same inputs give the same interval). A resample draws ``S`` seeds with
    replacement (training randomness), then ``F`` test files with replacement (test-set sampling),
    and takes the mean over the drawn seeds of ``F1_s(a) - F1_s(b)`` over the drawn files. The drawn
    files are the same for both experiments (paired) and for every drawn seed of the resample: the
    test set is one set shared by all seeds (a crossed, not nested, design), so drawing files
    afresh per seed would average the file noise down over seeds although it is not independent
    between them. Resampling both levels is conservative for such a crossed design (it counts the
    seed x file interaction twice), which is the safe side for a verdict.

    ``ci_method`` names what the interval covers: :data:`CI_TWO_LEVEL` (>= 2 seeds, >= 2 files);
    :data:`CI_FILES_ONLY` with one seed: the interval is over test files only and says nothing
    about training randomness (a finding then gets no verdict, see :mod:`slotmpe.results.findings`);
    :data:`CI_SEEDS_ONLY` with one common file; :data:`CI_NONE` (one seed and one file,
    ``ci_low = ci_high = NaN``). With few seeds the seed level has few distinct resamples (3 seeds:
    10), so the interval is coarse; it is widened to contain the point estimate.

    ``seeds_agree``: every ``d_s`` is non-zero and has the same sign (the condition the findings'
    verdicts add to the interval). ``seed_effects``: the ``d_s`` in seed order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from slotmpe.per_file import OUTPUTS

CI_TWO_LEVEL = "two-level paired bootstrap (seeds, files)"
CI_FILES_ONLY = "paired file bootstrap, 1 seed (training randomness not covered)"
CI_SEEDS_ONLY = "seed bootstrap, 1 file (test-set sampling not covered)"
CI_NONE = "none (1 seed, 1 file)"


class StatsError(ValueError):
    """Per-file tables that cannot be compared (missing columns, no common files or seeds)."""


@dataclass(frozen=True)
class PairedEffect:
    """Effect ``F1(a) - F1(b)`` in points with its seed-aware bootstrap interval (module docstring)."""

    effect: float
    ci_low: float
    ci_high: float
    n_seeds: int
    n_files: int
    ci_method: str = ""
    seeds_agree: bool = False
    seed_effects: tuple[float, ...] = ()

    @property
    def half_width(self) -> float:
        """Half the interval's width in points: about the smallest effect these seeds and files
        can tell from 0 (NaN without an interval)."""
        return 0.5 * (self.ci_high - self.ci_low)

    def as_dict(self) -> dict[str, object]:
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
    counted = [c for c in ("tp", "fp", "fn", "n_frames") if c in df.columns]
    bad = df[counted].apply(pd.to_numeric, errors="coerce").isna().any(axis=1)
    if bad.any():
        raise StatsError(f"{path}: line {int(bad.idxmax()) + 2} lacks counts ({counted}): a "
                         "cut-short write? re-run the evaluation")
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        ends_in_newline = fh.tell() == 0 or (fh.seek(-1, 2) >= 0 and fh.read(1) == b"\n")
    if not ends_in_newline:
        raise StatsError(f"{path}: the last line is cut short (no final newline): an "
                         "interrupted write? re-run the evaluation")
    _check_covers_metrics(df, path)
    if seed is not None:
        df["seed"] = int(seed)
    return df


def _check_covers_metrics(df: pd.DataFrame, path: Path) -> None:
    """Every output of ``path`` lists as many distinct files as its sibling ``metrics.json``
    counts (``n_files``), and the mixture output is there; ``StatsError`` naming the file else.

    A ``per_file.csv`` cut short by an interrupted write would otherwise silently change every
    statistic computed from it. Without a sibling ``metrics.json`` (or its ``n_files``) nothing
    is checked.
    """
    metrics = path.with_name("metrics.json")
    if not metrics.is_file():
        return
    try:
        n_files = json.loads(metrics.read_text()).get("n_files")
    except (json.JSONDecodeError, AttributeError) as e:
        raise StatsError(f"{metrics}: not a valid metrics file ({e})") from None
    if not isinstance(n_files, int):
        return
    counts = df.groupby("output")["file"].nunique()
    if "mix" not in counts.index:
        raise StatsError(f"{path}: no 'mix' rows, but {metrics} counts {n_files} test files "
                         "(a cut-short write?); re-run the evaluation")
    short = {str(k): int(v) for k, v in counts.items() if int(v) != n_files}
    if short:
        raise StatsError(f"{path} does not cover the {n_files} test files that {metrics} "
                         f"counts (files per output: {short}); a cut-short write? re-run the "
                         "evaluation")


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


def _seed_signs_agree(d: np.ndarray) -> bool:
    """Whether every per-seed effect is non-zero and of one sign."""
    return bool(d.size) and (bool(np.all(d > 0)) or bool(np.all(d < 0)))


def paired_effect(
    a: pd.DataFrame,
    b: pd.DataFrame,
    output: str = "slot",
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    batch: int = 250,
) -> PairedEffect:
    """Effect ``F1(a) - F1(b)`` (points) with a two-level (seeds, files) paired bootstrap interval.

    Args:
        a, b: per-file tables (:data:`slotmpe.per_file.PER_FILE_COLUMNS` + ``seed``)
            concatenated over seeds.
        output: one of :data:`slotmpe.per_file.OUTPUTS`.
        n_resamples: bootstrap resamples; confidence: CI level; seed: bootstrap RNG seed;
        batch: resamples evaluated at once (memory ``~ 48 * batch * S * F`` bytes).
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}; got {output!r}")
    seeds, files = _common(a, b, output)
    ca = _count_cube(a, output, seeds, files)  # (3, S, F)
    cb = _count_cube(b, output, seeds, files)
    n_s, n_f = len(seeds), len(files)
    d_seed = _f1(*ca.sum(axis=-1)) - _f1(*cb.sum(axis=-1))  # (S,) per-seed effects
    point = float(d_seed.mean())
    agree = _seed_signs_agree(d_seed)
    per_seed = tuple(float(round(v, 6)) for v in d_seed)
    method = (CI_TWO_LEVEL if n_s > 1 and n_f > 1 else CI_FILES_ONLY if n_f > 1
              else CI_SEEDS_ONLY if n_s > 1 else CI_NONE)
    if method == CI_NONE:
        return PairedEffect(point, math.nan, math.nan, n_s, n_f, method, agree, per_seed)

    rng = np.random.default_rng(seed)  # all draws first: the result does not depend on batch
    seed_draws = (rng.integers(0, n_s, size=(n_resamples, n_s)) if n_s > 1
                  else np.zeros((n_resamples, 1), dtype=np.int64))  # (R, S)
    file_draws = (rng.integers(0, n_f, size=(n_resamples, n_f)) if n_f > 1
                  else np.zeros((n_resamples, 1), dtype=np.int64))  # (R, F): seeds, sides share
    stats_out = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, batch):
        si = seed_draws[start:start + batch]
        fi = file_draws[start:start + batch]
        sa = ca[:, si[:, :, None], fi[:, None, :]].sum(axis=-1)  # (3, m, S)
        sb = cb[:, si[:, :, None], fi[:, None, :]].sum(axis=-1)
        stats_out[start:start + len(si)] = (_f1(*sa) - _f1(*sb)).mean(axis=-1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = (float(v) for v in np.quantile(stats_out, [alpha, 1.0 - alpha]))
    return PairedEffect(point, min(lo, point), max(hi, point), n_s, n_f, method, agree, per_seed)


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
