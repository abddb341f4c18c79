"""The result tables of one run, built the same way by the workflow and by ``slotmpe findings``.

:func:`write_table3_outputs` is what the ``table3`` rule runs (through
:func:`slotmpe.pipeline.table3`): Table III (:mod:`slotmpe.results.table3`), its note-level
companion (:mod:`slotmpe.results.table3_notes`) and the findings (:mod:`slotmpe.results.findings`).
:func:`rebuild` runs the same functions on a finished ``results/`` tree or a published run folder
(``docs/runs/<date>-<commit>/``, :mod:`slotmpe.results.publish`), so a reader can recompute the
tables from the per-run files without any model.

Run folders are found as ``{root}/{dataset}/{exp}/seed{seed}/metrics.json`` (+ ``per_file.csv``).
The rows are those of the folder's own ``table3.csv`` / ``table3_ext.csv`` when present (the
configured rows of the run), else every run found (paper experiments in Table III, extensions in
``table3_ext``); the seeds are those its tables use (:func:`select_seeds`: a published run's
``environment.json`` ``seeds``, a ``results/`` tree's ``table3.csv`` ``seeds`` column), so run
folders left from an earlier run never slip in; the dataset aliases (our dataset -> the paper's)
come from the folder's ``environment.json`` (``paper_aliases``), else from the argument, and a
folder with neither is an error rather than tables without the paper's figures.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from slotmpe.per_file import PER_FILE_NAME
from slotmpe.results.provenance import ProvenanceError, check_seeds, describe_seeds, seed_records
from slotmpe.utils import get_logger

log = get_logger(__name__)

METRICS_NAME = "metrics.json"
ENVIRONMENT_NAME = "environment.json"


@dataclass(frozen=True)
class Table3Outputs:
    """Paths written by :func:`write_table3_outputs` (``None``: that output is not written)."""

    csv: Path
    md: Path
    vs_paper: Path
    notes_csv: Path | None = None
    notes_md: Path | None = None
    findings_csv: Path | None = None
    findings_md: Path | None = None

    @classmethod
    def in_dir(cls, d: Path) -> Table3Outputs:
        """The workflow's file names under ``d`` (``results/`` layout)."""
        d = Path(d)
        return cls(d / "table3.csv", d / "table3.md", d / "table3_vs_paper.md",
                   d / "table3_notes.csv", d / "table3_notes.md", d / "findings.csv",
                   d / "findings.md")


def cells_of(per_file_paths: Sequence[Path]) -> dict[tuple[str, str], list[Path]]:
    """``(exp, dataset) -> per_file.csv paths`` from the layout ``{ds}/{exp}/seed{s}/per_file.csv``."""
    cells: dict[tuple[str, str], list[Path]] = {}
    for p in per_file_paths:
        run = Path(p).parent
        cells.setdefault((run.parent.name, run.parent.parent.name), []).append(Path(p))
    return cells


def write_table3_outputs(
    metrics_paths: Sequence[Path],
    rows: Sequence[tuple[str, str]],
    out: Table3Outputs,
    aliases: Mapping[str, str],
    per_file_paths: Sequence[Path] | None = None,
    seeds_note: str = "",
) -> None:
    """Table III, the note table and (with ``per_file_paths``) the findings of the given runs
    (``seeds_note``: Markdown appended to ``findings.md``, :func:`describe_seeds`)."""
    from slotmpe.results.table3 import write_table3

    write_table3(list(metrics_paths), rows, out.csv, out.md, out.vs_paper, dict(aliases))
    if out.notes_csv is not None and out.notes_md is not None:
        from slotmpe.results.table3_notes import write_table3_notes

        write_table3_notes(metrics_paths, rows, out.notes_csv, out.notes_md, dict(aliases))
    if per_file_paths is not None and out.findings_csv is not None and out.findings_md is not None:
        from slotmpe.results.findings import write_findings

        write_findings(cells_of(per_file_paths), out.findings_csv, out.findings_md, dict(aliases),
                       seeds_note=seeds_note)


def discover_runs(root: Path) -> dict[tuple[str, str], dict[int, Path]]:
    """``(exp, dataset) -> {seed: run folder}`` of every ``{ds}/{exp}/seed{n}/metrics.json``."""
    runs: dict[tuple[str, str], dict[int, Path]] = {}
    for m in sorted(Path(root).glob(f"*/*/seed*/{METRICS_NAME}")):
        run = m.parent
        hit = re.fullmatch(r"seed(\d+)", run.name)
        if hit:
            runs.setdefault((run.parent.name, run.parent.parent.name), {})[int(hit.group(1))] = run
    return runs


def _rows_of(csv: Path) -> list[tuple[str, str]] | None:
    if not csv.is_file():
        return None
    df = pd.read_csv(csv, dtype={"exp": str, "dataset": str})
    return list(dict.fromkeys(zip(df["exp"], df["dataset"], strict=True)))


def table_seeds(csv: Path) -> set[int] | None:
    """The seeds a ``table3.csv`` averaged (its ``seeds`` column); ``None`` without the file.

    A table written before the column existed gives ``None`` too; :func:`select_seeds` then
    checks its ``n_seeds`` against the folders found.
    """
    if not csv.is_file():
        return None
    df = pd.read_csv(csv, dtype={"seeds": str})
    if "seeds" not in df.columns:
        return None
    return {int(x) for cell in df["seeds"].dropna() for x in str(cell).split(";") if x != ""}


def read_environment(root: Path) -> dict[str, Any] | None:
    """``root/environment.json`` as a dict; ``None`` without it; ``ValueError`` naming it if bad."""
    env = Path(root) / ENVIRONMENT_NAME
    if not env.is_file():
        return None
    try:
        data = json.loads(env.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{env} is not valid JSON ({e}); restore it from the published run, or "
                         "delete it to take the aliases from --config") from None
    if not isinstance(data, dict):
        raise ValueError(f"{env} does not hold a JSON object")
    return data


def select_seeds(
    src: Path, runs: dict[tuple[str, str], dict[int, Path]], env: Mapping[str, Any] | None
) -> dict[tuple[str, str], dict[int, Path]]:
    """The run folders of the seeds the run's tables use.

    A published run (``env``) uses exactly the seeds its ``environment.json`` records; a seed
    folder it does not record is an error (of unknown commit and config). A ``results/`` tree uses
    the seeds of its ``table3.csv`` (``seeds`` column; folders of other seeds, left from an
    earlier run, are ignored with a warning); an older ``table3.csv`` without the column must
    count as many seeds per row as there are folders.
    """
    if env is not None:
        wanted = {int(s) for s in env.get("seeds") or []}
        stray = sorted(str(p.relative_to(src)) for seeds in runs.values()
                       for s, p in seeds.items() if s not in wanted)
        if stray:
            raise ProvenanceError(
                f"{src}: seed folder(s) {stray} are not recorded in {ENVIRONMENT_NAME} (seeds "
                f"{sorted(wanted)}): their commit and config are unknown; remove them or "
                "publish them with `slotmpe publish-run`")
    else:
        wanted_or_none = table_seeds(src / "table3.csv")
        if wanted_or_none is None:
            _check_old_table_counts(src, runs)
            return runs
        wanted = wanted_or_none
        stray = sorted(str(p.relative_to(src)) for seeds in runs.values()
                       for s, p in seeds.items() if s not in wanted)
        if stray:
            log.warning("%s: ignoring seed folders that its table3.csv does not use: %s", src,
                        stray)
    kept = {k: {s: p for s, p in v.items() if s in wanted} for k, v in runs.items()}
    return {k: v for k, v in kept.items() if v}


def _check_old_table_counts(src: Path, runs: dict[tuple[str, str], dict[int, Path]]) -> None:
    csv = src / "table3.csv"
    if not csv.is_file():
        return
    df = pd.read_csv(csv, dtype={"exp": str, "dataset": str})
    for exp, ds, n in zip(df["exp"], df["dataset"], df["n_seeds"], strict=True):
        found = sorted(runs.get((exp, ds), {}))
        if found and len(found) != int(n):
            raise ValueError(
                f"{csv} averaged {int(n)} seed(s) for {exp}/{ds} but {src} holds seed folders "
                f"{found}; remove the folders of seeds that run did not use (the table does not "
                "say which it used)")


def resolve_aliases(
    root: Path, env: Mapping[str, Any] | None, default: Mapping[str, str] | None
) -> dict[str, str]:
    """``paper_aliases`` of ``env`` when it has them, else ``default``; an error when neither
    is known (the tables would silently lose every comparison with the paper)."""
    if env is not None and isinstance(env.get("paper_aliases"), dict):
        return {str(k): str(v) for k, v in env["paper_aliases"].items()}
    if default is None:
        raise FileNotFoundError(
            f"{root}: no {ENVIRONMENT_NAME} and no workflow config found (none given, none "
            "beside the folder or in its slotmpe checkout): pass --config config.yaml so that "
            "the datasets map to the paper's (paper_aliases)")
    return dict(default)


def read_aliases(root: Path, default: Mapping[str, str] | None = None) -> dict[str, str]:
    """``paper_aliases`` of ``root/environment.json`` when it has them, else ``default``."""
    return resolve_aliases(root, read_environment(root), default or {})


def rebuild(
    src: Path, out: Path | None = None, aliases: Mapping[str, str] | None = None
) -> tuple[list[Path], list[str]]:
    """Recompute Table III, the note table, the findings and (where it has rows) ``table3_ext``
    from the run folders under ``src`` into ``out`` (default ``src``).

    Only the seeds the run uses enter (:func:`select_seeds`); a published run's seeds must share
    commit and config (:func:`slotmpe.results.provenance.check_seeds`), and ``findings.md`` gets a
    section on its seeds (:func:`slotmpe.results.provenance.describe_seeds`). Everything is
    written to a temporary folder inside ``out`` first and moved into place only when all of it
    is built, so a failure leaves the old tables. Returns the files written and the warnings
    (seeds on different CPU kinds or precisions).

    Raises ``FileNotFoundError`` when ``src`` holds no run folder, or when ``aliases`` is
    ``None`` and ``src`` has no ``environment.json`` (:func:`resolve_aliases`).
    """
    from slotmpe.experiments import get_experiment

    src = Path(src)
    out = src if out is None else Path(out)
    runs = discover_runs(src)
    if not runs:
        raise FileNotFoundError(f"{src}: no run folder ({{dataset}}/{{exp}}/seed{{n}}/"
                                f"{METRICS_NAME}) found")
    env = read_environment(src)
    note, warnings = "", []
    if env is not None:
        records = seed_records(env)
        check_seeds(records, src / ENVIRONMENT_NAME)
        note, warnings = describe_seeds(records)
    runs = select_seeds(src, runs, env)
    al = resolve_aliases(src, env, aliases)
    rows = _rows_of(src / "table3.csv") or [r for r in runs if get_experiment(r[0]).base is None]
    missing = [f"{e}/{d}" for e, d in rows if (e, d) not in runs]
    if missing:
        raise FileNotFoundError(f"{src}: no run folder for the Table III row(s) {missing}")
    metrics = [runs[r][s] / METRICS_NAME for r in rows for s in sorted(runs[r])]
    per_file = [runs[r][s] / PER_FILE_NAME for r in rows for s in sorted(runs[r])]
    have_pf = all(p.is_file() for p in per_file)
    if not have_pf:
        log.warning("%s: some per_file.csv are missing; findings are not recomputed", src)
    ext_rows = _rows_of(src / "table3_ext.csv")
    if ext_rows is None:
        ext_rows = [r for r in runs if get_experiment(r[0]).base is not None
                    and (get_experiment(r[0]).base, r[1]) in runs]
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".rebuild-") as tmp_name:
        tmp = Path(tmp_name)
        outs = Table3Outputs.in_dir(tmp)
        write_table3_outputs(metrics, rows, outs, al, per_file if have_pf else None, note)
        names = [outs.csv, outs.md, outs.vs_paper, outs.notes_csv, outs.notes_md]
        if have_pf:
            names += [outs.findings_csv, outs.findings_md]
        if ext_rows:
            from slotmpe.results.ext import ext_rows_with_bases, write_table3_ext

            paths = [runs[r][s] / METRICS_NAME for r in ext_rows_with_bases(ext_rows)
                     for s in sorted(runs.get(r, {}))]
            write_table3_ext(paths, ext_rows, tmp / "table3_ext.csv", tmp / "table3_ext.md")
            names += [tmp / "table3_ext.csv", tmp / "table3_ext.md"]
        written = []
        for p in names:
            if p is not None:
                os.replace(p, out / p.name)
                written.append(out / p.name)
    return written, warnings
