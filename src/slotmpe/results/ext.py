"""``results/table3_ext.{csv,md}``: extension experiments against their bases (issue 18).

One row per configured ``(exp, dataset)`` or ``(exp, dataset, reference)`` of ``table3_ext_rows``
(an extension, e.g. ``4a``, whose ``base`` is named in :data:`slotmpe.experiments.EXTENSIONS`;
``reference``, the experiment its effect is measured against, defaults to that base: issue 29
compares 4m and 4n with 2b, the best stem row of the published run, as well as with their own
bases). Columns:

``exp, base, reference, dataset, change``
    the row, its base experiment, the experiment it is compared with and the description of the
    one change.
``n_seeds``, ``slot_f1, slot_p, slot_r, slot_ap, std_f1, dup_rate, dup_rate_target`` (+ ``_std``)
    Table III metrics of the extension, mean (and sample std over seeds) of its ``metrics.json``
    files; ``dup_rate`` is the share of claimed slot cells claimed by two or more slots and
    ``dup_rate_target`` the share of unison cells in the targets (:mod:`slotmpe.postprocess`).
``base_slot_f1, base_dup_rate``
    the same means for the base on the same dataset.
``ref_slot_f1``
    the mean slot F1 of the reference (the base's where the row names none).
``effect, ci_low, ci_high, n_files, ci_method, seeds_agree, min_detectable``
    stem F1 of the extension minus that of its reference, in points, on the seeds both have, with the
    two-level (seeds, files) paired bootstrap 95 % CI of
    :func:`slotmpe.results.stats.paired_effect` on their ``per_file.csv`` (the same statistic as
    ``results/findings.*``), what the CI covers (one seed: test files only), whether every seed
    has the effect's sign, and the CI half-width (about the smallest effect that can be told
    from 0).
``verdict, reason``
    ``better`` / ``worse`` than the reference where the seed-aware CI excludes 0, every seed
    agrees in sign and there are enough seeds and files; otherwise ``not resolved`` and why
    (:func:`slotmpe.results.findings.verdict_reason`, the rule of ``findings``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from slotmpe.experiments import ExtRow, get_experiment, reference_of
from slotmpe.utils import atomic_path, get_logger

log = get_logger(__name__)

EXT_METRICS: tuple[str, ...] = (
    "slot_f1", "slot_p", "slot_r", "slot_ap", "std_f1", "dup_rate", "dup_rate_target",
)
TITLES: dict[str, str] = {
    "exp": "Exp", "base": "Base", "dataset": "Dataset", "change": "Change", "n_seeds": "Seeds",
    "slot_f1": "Slot F1", "slot_p": "Slot P", "slot_r": "Slot R", "slot_ap": "Slot AP",
    "std_f1": "Std F1", "dup_rate": "Dup %", "dup_rate_target": "Unison % (targets)",
    "base_slot_f1": "Base slot F1", "base_dup_rate": "Base dup %", "reference": "Vs",
    "ref_slot_f1": "Vs slot F1", "verdict": "Verdict",
    "effect": "Effect (pts)", "ci": "95 % CI", "n_files": "Files",
    "seeds_agree": "Seeds agree", "min_detectable": "Detectable",
}


class ExtTableError(RuntimeError):
    """The extension table cannot be built (missing or inconsistent inputs)."""


BETTER, WORSE = "better", "worse"


def ext_rows_with_bases(rows: Sequence[ExtRow]) -> list[tuple[str, str]]:
    """The configured rows plus the ``(base, dataset)`` and ``(reference, dataset)`` runs they
    are shown beside and compared with (no repeats).

    ``ValueError`` for a row whose experiment has no base (not an extension).
    """
    out: list[tuple[str, str]] = []
    for row in rows:
        ref, (exp, ds) = reference_of(row), row[:2]
        for r in ((exp, ds), (get_experiment(exp).base, ds), (ref, ds)):
            if r not in out:
                out.append(r)
    return out


def ext_verdict(ci_low: float, ci_high: float, seeds_agree: bool, n_seeds: int,
                n_files: int) -> tuple[str, str]:
    """``(verdict, reason)`` of an extension against its reference: ``better`` / ``worse``
    where :func:`slotmpe.results.findings.verdict_reason` finds no reason to withhold one (the
    expected direction is an improvement), else ``not resolved`` and that reason."""
    from slotmpe.results.findings import UNRESOLVED, verdict_reason

    reason = verdict_reason(ci_low, ci_high, 1.0, seeds_agree, n_seeds, n_files)
    if reason:
        return UNRESOLVED, reason
    return (BETTER if ci_low > 0 else WORSE), ""


def _runs(metrics_paths: Iterable[Path]) -> dict[tuple[str, str], dict[int, Path]]:
    """``(exp, dataset) -> {seed: metrics.json path}`` from the files' contents."""
    runs: dict[tuple[str, str], dict[int, Path]] = {}
    for p in metrics_paths:
        p = Path(p)
        try:
            m = json.loads(p.read_text())
        except (FileNotFoundError, json.JSONDecodeError) as e:
            raise ExtTableError(f"cannot read metrics file {p}: {e}") from None
        key = (str(m.get("exp")), str(m.get("dataset")))
        seed = int(m.get("seed", 0))
        if seed in runs.setdefault(key, {}):
            raise ExtTableError(f"two metrics files for {key} seed {seed} (second: {p})")
        runs[key][seed] = p
    return runs


def _mean_std(paths: Iterable[Path], key: str) -> tuple[float | None, float | None]:
    from slotmpe.results.stats import mean_std

    return mean_std([json.loads(Path(p).read_text()).get(key) for p in paths])


def build_table3_ext(
    metrics_paths: Iterable[Path], rows: Sequence[ExtRow], n_resamples: int = 2000
) -> pd.DataFrame:
    """The extension table as a frame (module docstring).

    ``metrics_paths``: ``metrics.json`` of every seed of every row and of its base, each with its
    ``per_file.csv`` beside it. ``ExtTableError`` when a row or its base has no run.
    """
    from slotmpe.per_file import PER_FILE_NAME
    from slotmpe.results.stats import paired_effect, read_per_file_runs

    runs = _runs(metrics_paths)
    recs = []
    for row in rows:
        try:
            ref = reference_of(row)
        except ValueError as err:
            raise ExtTableError(str(err)) from None
        e, ds = get_experiment(row[0]), row[1]
        mine, base, against = (runs.get((x, ds)) for x in (e.name, e.base, ref))
        if not mine or not base or not against:
            missing = [f"{x}/{ds}" for x, r in ((e.name, mine), (e.base, base), (ref, against))
                       if not r]
            raise ExtTableError(f"table3_ext: no metrics for {', '.join(dict.fromkeys(missing))}")
        rec: dict[str, object] = {"exp": e.name, "base": e.base, "reference": ref, "dataset": ds,
                                  "change": e.description, "n_seeds": len(mine)}
        for m in EXT_METRICS:
            rec[m], rec[f"{m}_std"] = _mean_std(mine.values(), m)
        rec["base_slot_f1"] = _mean_std(base.values(), "slot_f1")[0]
        rec["base_dup_rate"] = _mean_std(base.values(), "dup_rate")[0]
        rec["ref_slot_f1"] = _mean_std(against.values(), "slot_f1")[0]
        seeds = sorted(set(mine) & set(against))
        if not seeds:
            raise ExtTableError(f"{e.name} and {ref} on {ds} share no seed")
        a = read_per_file_runs([mine[s].with_name(PER_FILE_NAME) for s in seeds])
        b = read_per_file_runs([against[s].with_name(PER_FILE_NAME) for s in seeds])
        eff = paired_effect(a, b, output="slot", n_resamples=n_resamples)
        rec.update(effect=eff.effect, ci_low=eff.ci_low, ci_high=eff.ci_high,
                   n_files=eff.n_files, ci_method=eff.ci_method, seeds_agree=eff.seeds_agree,
                   min_detectable=eff.half_width)
        rec["verdict"], rec["reason"] = ext_verdict(eff.ci_low, eff.ci_high, eff.seeds_agree,
                                                    len(seeds), eff.n_files)
        recs.append(rec)
    text_cols = ("exp", "base", "reference", "dataset", "change", "ci_method", "seeds_agree",
                 "verdict", "reason")
    cols = ["exp", "base", "reference", "dataset", "change", "n_seeds", *EXT_METRICS,
            *(f"{m}_std" for m in EXT_METRICS), "base_slot_f1", "base_dup_rate", "ref_slot_f1",
            "effect", "ci_low", "ci_high", "n_files", "ci_method", "seeds_agree", "min_detectable",
            "verdict", "reason"]
    df = pd.DataFrame.from_records(recs, columns=cols)
    num = [c for c in cols if c not in text_cols]
    df[num] = df[num].apply(pd.to_numeric).round(2)
    return df


def _f(v: object) -> str:
    return "–" if v is None or pd.isna(v) else f"{float(v):.2f}"


def render_table3_ext_md(df: pd.DataFrame) -> str:
    """Markdown of :func:`build_table3_ext`'s frame (mean ± std where there are several seeds)."""
    head = ["exp", "base", "dataset", "n_seeds", "slot_f1", "slot_p", "slot_r", "dup_rate",
            "dup_rate_target", "base_slot_f1", "base_dup_rate", "reference", "ref_slot_f1",
            "effect", "ci", "seeds_agree", "min_detectable", "n_files", "verdict"]
    lines = ["| " + " | ".join(TITLES[h] for h in head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        cells = []
        for h in head:
            if h in ("exp", "base", "dataset", "reference"):
                cells.append(str(r[h]))
            elif h == "verdict":
                why = r.get("reason")
                cells.append(str(r[h]) + (f" ({why})" if isinstance(why, str) and why else ""))
            elif h in ("n_seeds", "n_files"):
                cells.append(str(int(r[h])))
            elif h == "ci":
                cells.append(f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]"
                             + (" (1 seed: files only)" if int(r["n_seeds"]) < 2 else ""))
            elif h == "seeds_agree":
                cells.append("yes" if bool(r[h]) else "no")
            else:
                text = _f(r[h])
                std = r.get(f"{h}_std")
                if text != "–" and std is not None and not pd.isna(std):
                    text += f" ± {_f(std)}"
                cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["", "Effect: slot F1 of the extension minus that of the row it is compared with "
             "(Vs: its base unless the row names another), in points, with a 95 % two-level "
             "paired bootstrap CI (seeds, then test files); Detectable: half the CI width. "
             "Verdict: better / worse where the CI excludes 0, every seed agrees in sign and "
             "there are at least 2 seeds and 5 files; otherwise not resolved, with why.", "",
             "Changes (each one change on top of its base):", ""]
    notes += [f"- **{r['exp']}** ({r['base']}): {r['change']}" for _, r in
              df.drop_duplicates("exp").iterrows()]
    return "\n".join(lines + notes) + "\n"


def write_table3_ext(
    metrics_paths: Iterable[Path], rows: Sequence[ExtRow], out_csv: Path, out_md: Path
) -> pd.DataFrame:
    """Build the extension table and write its CSV and Markdown (atomically)."""
    df = build_table3_ext(list(metrics_paths), rows)
    with atomic_path(Path(out_csv)) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(Path(out_md)) as tmp:
        tmp.write_text(render_table3_ext_md(df))
    log.info("table3_ext: %d rows -> %s", len(df), out_csv)
    return df
