"""The paper's findings tested on our runs: ``results/findings.csv`` and ``results/findings.md``.

Each finding compares two (exp, dataset) cells of Table III on one metric with
:func:`slotmpe.results.stats.paired_effect`: effect ``exp_a - exp_b`` in points (per-seed pooled F1
difference, averaged over seeds) with a 95 % **two-level paired bootstrap** interval (seeds, then
test files, the same files for both experiments), so the interval covers training randomness as
well as the choice of test files; beside it the paper's effect from its Table III
(``reference/paper_table3.csv``). Datasets are named as in the paper (``urmp``, ``mshoxxdb``); a
configured dataset stands in for the paper's through ``paper_aliases`` (chamber -> urmp,
electro -> mshoxxdb).

Verdict (:func:`verdict`): ``holds`` when the interval excludes 0 on the paper's side **and** the
effect has that sign in every seed (``seeds_agree``), ``reversed`` when both hold on the other
side, otherwise ``not resolved`` (:func:`verdict_reason` says why); also whenever fewer than
:data:`MIN_SEEDS_FOR_VERDICT` seeds (one seed says nothing about training randomness: its
interval is over files only, ``ci_method`` says so) or fewer than :data:`MIN_FILES_FOR_VERDICT`
test files are compared, or the paper has no effect to compare with.

``min_detectable``: half the interval's width in points, about the smallest effect that these seeds
and files could tell from 0 (an effect smaller than this is "not resolved" by construction).

``findings.csv`` columns: :data:`FINDINGS_COLUMNS` (the round-2 columns, then ``ci_method``,
``seeds_agree``, ``seed_effects`` (per-seed effects in seed order, ``;``-separated) and
``min_detectable``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from slotmpe.per_file import PER_FILE_NAME
from slotmpe.results.stats import paired_effect, read_per_file_runs
from slotmpe.utils import atomic_path, get_logger

log = get_logger(__name__)

FINDINGS_COLUMNS: tuple[str, ...] = (
    "finding", "dataset", "exp_a", "exp_b", "metric", "effect", "ci_low", "ci_high", "n_seeds",
    "n_files", "paper_effect", "verdict", "ci_method", "seeds_agree", "seed_effects",
    "min_detectable", "reason",
)
METRIC_OUTPUT: dict[str, str] = {
    "slot_f1": "slot", "std_f1": "mix", "note_onset_f1": "note_onset",
    "note_onoff_f1": "note_onoff", "slot_note_onset_f1": "slot_note_onset",
    "slot_note_onoff_f1": "slot_note_onoff", "multi_instrument_f1": "multi_instrument",
}
HOLDS, REVERSED, UNRESOLVED = "holds", "reversed", "not resolved"
# Below this many common test files a file bootstrap has too few distinct resamples to trust.
MIN_FILES_FOR_VERDICT = 5
# One seed cannot show training randomness: no verdict from a single seed.
MIN_SEEDS_FOR_VERDICT = 2


@dataclass(frozen=True)
class Finding:
    """One claim of the paper: ``exp_a`` vs ``exp_b`` on ``metric`` on the paper's dataset."""

    name: str
    claim: str
    paper_dataset: str
    exp_a: str
    exp_b: str
    metric: str = "slot_f1"


FINDINGS: tuple[Finding, ...] = (
    Finding("matching", "Hungarian matching >> fixed family slots (family F1)", "urmp", "1c", "1b"),
    Finding("film", "FiLM timbre conditioning helps stem F1", "urmp", "2b", "2a"),
    Finding("polyphony", "mixture polyphony supervision helps stem F1 (URMP-like)", "urmp",
            "3b", "3a"),
    Finding("polyphony", "mixture + slot polyphony supervision helps stem F1 (URMP-like)", "urmp",
            "3c", "3a"),
    Finding("timbre_vs_film", "timbre head alone vs FiLM on the electronic set (stem F1)",
            "mshoxxdb", "2a", "2b"),
    Finding("timbre_vs_film", "timbre head alone vs FiLM on the electronic set (standard F1)",
            "mshoxxdb", "2a", "2b", "std_f1"),
)


def verdict(
    ci_low: float,
    ci_high: float,
    paper_effect: float,
    seeds_agree: bool = True,
    n_seeds: int = MIN_SEEDS_FOR_VERDICT,
    n_files: int = MIN_FILES_FOR_VERDICT,
) -> str:
    """``holds`` / ``reversed`` / ``not resolved`` (module docstring; :func:`verdict_reason`
    says why a finding is not resolved)."""
    if verdict_reason(ci_low, ci_high, paper_effect, seeds_agree, n_seeds, n_files):
        return UNRESOLVED
    same_side = (ci_low > 0) == (paper_effect > 0)
    return HOLDS if same_side else REVERSED


def verdict_reason(
    ci_low: float,
    ci_high: float,
    paper_effect: float,
    seeds_agree: bool = True,
    n_seeds: int = MIN_SEEDS_FOR_VERDICT,
    n_files: int = MIN_FILES_FOR_VERDICT,
) -> str:
    """Why :func:`verdict` gives no verdict (``""`` where it gives one): every reason that
    applies, ``"; "``-joined: no paper effect to compare with, too few seeds or test files, the
    seeds disagree in sign, the 95 % CI covers 0."""
    reasons = []
    if not np.isfinite(paper_effect) or paper_effect == 0:
        reasons.append("the paper has no effect to compare with")
    if n_seeds < MIN_SEEDS_FOR_VERDICT:
        reasons.append(f"{n_seeds} seed (at least {MIN_SEEDS_FOR_VERDICT} needed)")
    if n_files < MIN_FILES_FOR_VERDICT:
        reasons.append(f"{n_files} test files (at least {MIN_FILES_FOR_VERDICT} needed)")
    if not seeds_agree and n_seeds > 1:
        reasons.append("the seeds disagree in sign")
    if not np.all(np.isfinite([ci_low, ci_high])):
        reasons.append("no CI")
    elif ci_low <= 0 <= ci_high:
        reasons.append("the 95 % CI covers 0")
    return "; ".join(reasons)


def _paper_effect(f: Finding) -> float:
    from slotmpe.results.table3 import paper_table3

    p = paper_table3().set_index(["exp", "dataset"])
    try:
        return float(p.loc[(f.exp_a, f.paper_dataset), f.metric]
                     - p.loc[(f.exp_b, f.paper_dataset), f.metric])
    except KeyError:
        return float("nan")


def per_file_paths(results: Path, dataset: str, exp: str, seeds: Sequence[int]) -> list[Path]:
    """``results/{dataset}/{exp}/seed{s}/per_file.csv`` for every seed."""
    return [Path(results) / dataset / exp / f"seed{s}" / PER_FILE_NAME for s in seeds]


def build_findings(
    per_file: Mapping[tuple[str, str], pd.DataFrame],
    dataset_aliases: Mapping[str, str] | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Findings table from per-file tables keyed by ``(exp, dataset)`` (concatenated over seeds).

    A finding is evaluated on every dataset standing in for its paper dataset whose two
    experiments are both present; the others are skipped (logged).
    """
    aliases = dict(dataset_aliases or {})
    datasets = sorted({ds for _, ds in per_file})
    rows = []
    for f in FINDINGS:
        for ds in datasets:
            if aliases.get(ds, ds) != f.paper_dataset:
                continue
            a, b = per_file.get((f.exp_a, ds)), per_file.get((f.exp_b, ds))
            if a is None or b is None:
                log.info("finding %s skipped on %s: %s or %s not configured", f.name, ds,
                         f.exp_a, f.exp_b)
                continue
            eff = paired_effect(a, b, output=METRIC_OUTPUT[f.metric], n_resamples=n_resamples,
                                seed=seed)
            pe = _paper_effect(f)
            rows.append({
                "finding": f.name, "dataset": ds, "exp_a": f.exp_a, "exp_b": f.exp_b,
                "metric": f.metric, "effect": round(eff.effect, 2), "ci_low": round(eff.ci_low, 2),
                "ci_high": round(eff.ci_high, 2), "n_seeds": eff.n_seeds, "n_files": eff.n_files,
                "paper_effect": round(pe, 2),
                "verdict": verdict(eff.ci_low, eff.ci_high, pe, eff.seeds_agree, eff.n_seeds,
                                   eff.n_files),
                "ci_method": eff.ci_method, "seeds_agree": eff.seeds_agree,
                "seed_effects": ";".join(f"{d:+.2f}" for d in eff.seed_effects),
                "min_detectable": round(eff.half_width, 2),
                "reason": verdict_reason(eff.ci_low, eff.ci_high, pe, eff.seeds_agree,
                                         eff.n_seeds, eff.n_files),
            })
    return pd.DataFrame.from_records(rows, columns=list(FINDINGS_COLUMNS))


def render_findings_md(
    df: pd.DataFrame, dataset_aliases: Mapping[str, str] | None = None, seeds_note: str = ""
) -> str:
    """Markdown rendering of :func:`build_findings`'s frame with the claims and the method
    (``seeds_note``: a Markdown section on the run's seeds appended at the end)."""
    aliases = dict(dataset_aliases or {})
    claims = {(f.name, f.exp_a, f.exp_b, f.metric): f.claim for f in FINDINGS}
    lines = [
        "# The paper's findings on our runs\n",
        "Effect = metric(exp A) - metric(exp B) in points; metric = pooled F1 over the test files "
        "per seed, averaged over seeds (the Table III figure). 95 % CI: two-level paired "
        "bootstrap, resampling seeds (training randomness) and then test files (the same drawn "
        "files for both experiments and every drawn seed). Per seed: the effect in each seed. "
        "Detectable: half the CI width, about the smallest effect these seeds and files can tell "
        "from 0. Paper effect: the same difference in the paper's Table III (on the paper's "
        "dataset; ours are stand-ins where named so). Verdict: *holds* if the CI excludes 0 on "
        "the paper's side and every seed has the effect's sign, *reversed* if both hold on the "
        "other side, else *not resolved*, with the reasons: the seeds disagree in sign, the CI "
        "covers 0, too few seeds (always with a single seed, whose CI covers test files only) "
        "or files.\n",
        "| Finding | Dataset | A vs B | Metric | Effect [95 % CI] | Per seed | Detectable | Paper "
        "| Seeds | Files | Verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in df.iterrows():
        claim = claims.get((r["finding"], r["exp_a"], r["exp_b"], r["metric"]), r["finding"])
        ds = str(r["dataset"])
        ds_label = f"{ds} (~{aliases[ds]})" if ds in aliases and aliases[ds] != ds else ds
        paper = "–" if pd.isna(r["paper_effect"]) else f"{r['paper_effect']:+.2f}"
        ci = ("no CI (one seed, one file)" if pd.isna(r["ci_low"])
              else f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]")
        if int(r["n_seeds"]) < MIN_SEEDS_FOR_VERDICT and not pd.isna(r["ci_low"]):
            ci += " (files only: 1 seed)"
        det = "–" if pd.isna(r["min_detectable"]) else f"±{r['min_detectable']:.2f}"
        per_seed = str(r["seed_effects"]).replace(";", ", ")
        if not bool(r["seeds_agree"]) and int(r["n_seeds"]) > 1:
            per_seed += " (signs differ)"
        lines.append(
            f"| {claim} | {ds_label} | {r['exp_a']} vs {r['exp_b']} | {r['metric']} | "
            f"{r['effect']:+.2f} {ci} | {per_seed} | {det} | {paper} | "
            f"{int(r['n_seeds'])} | {int(r['n_files'])} | {r['verdict']}"
            + (f": {r['reason']}" if isinstance(r.get("reason"), str) and r["reason"] else "")
            + " |"
        )
    if df.empty:
        lines.append("| (no finding: the compared experiments are not configured) |||||||||||")
    return "\n".join(lines) + "\n" + seeds_note


def write_findings(
    per_file_paths_by_cell: Mapping[tuple[str, str], Sequence[Path]],
    out_csv: Path,
    out_md: Path,
    dataset_aliases: Mapping[str, str] | None = None,
    n_resamples: int = 2000,
    seeds_note: str = "",
) -> pd.DataFrame:
    """Read the per-file tables of every (exp, dataset) cell, write findings.csv/.md atomically
    (``seeds_note``: see :func:`render_findings_md`)."""
    per_file = {k: read_per_file_runs(v) for k, v in per_file_paths_by_cell.items() if v}
    df = build_findings(per_file, dataset_aliases, n_resamples=n_resamples)
    with atomic_path(Path(out_csv)) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(Path(out_md)) as tmp:
        tmp.write_text(render_findings_md(df, dataset_aliases, seeds_note))
    return df
