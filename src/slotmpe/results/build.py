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
``table3_ext``); the dataset aliases (our dataset -> the paper's) come from the folder's
``environment.json`` (``paper_aliases``), else from the argument.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from slotmpe.per_file import PER_FILE_NAME
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
) -> None:
    """Table III, the note table and (with ``per_file_paths``) the findings of the given runs."""
    from slotmpe.results.table3 import write_table3

    write_table3(list(metrics_paths), rows, out.csv, out.md, out.vs_paper, dict(aliases))
    if out.notes_csv is not None and out.notes_md is not None:
        from slotmpe.results.table3_notes import write_table3_notes

        write_table3_notes(metrics_paths, rows, out.notes_csv, out.notes_md, dict(aliases))
    if per_file_paths is not None and out.findings_csv is not None and out.findings_md is not None:
        from slotmpe.results.findings import write_findings

        write_findings(cells_of(per_file_paths), out.findings_csv, out.findings_md, dict(aliases))


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


def read_aliases(root: Path, default: Mapping[str, str] | None = None) -> dict[str, str]:
    """``paper_aliases`` of ``root/environment.json`` when it has them, else ``default``."""
    env = Path(root) / ENVIRONMENT_NAME
    if env.is_file():
        try:
            data = json.loads(env.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{env} is not valid JSON ({exc}); restore it from the published "
                             "run, or delete it to take the aliases from --config") from None
        if isinstance(data, dict) and isinstance(data.get("paper_aliases"), dict):
            return {str(k): str(v) for k, v in data["paper_aliases"].items()}
    return dict(default or {})


def rebuild(
    src: Path, out: Path | None = None, aliases: Mapping[str, str] | None = None
) -> list[Path]:
    """Recompute Table III, the note table, the findings and (where it has rows) ``table3_ext``
    from the run folders under ``src`` into ``out`` (default ``src``); returns the files written.

    Raises ``FileNotFoundError`` when ``src`` holds no run folder.
    """
    from slotmpe.experiments import get_experiment

    src = Path(src)
    out = src if out is None else Path(out)
    runs = discover_runs(src)
    if not runs:
        raise FileNotFoundError(f"{src}: no run folder ({{dataset}}/{{exp}}/seed{{n}}/"
                                f"{METRICS_NAME}) found")
    al = read_aliases(src, aliases)
    rows = _rows_of(src / "table3.csv") or [r for r in runs if get_experiment(r[0]).base is None]
    missing = [f"{e}/{d}" for e, d in rows if (e, d) not in runs]
    if missing:
        raise FileNotFoundError(f"{src}: no run folder for the Table III row(s) {missing}")
    metrics = [runs[r][s] / METRICS_NAME for r in rows for s in sorted(runs[r])]
    per_file = [runs[r][s] / PER_FILE_NAME for r in rows for s in sorted(runs[r])]
    have_pf = all(p.is_file() for p in per_file)
    if not have_pf:
        log.warning("%s: some per_file.csv are missing; findings are not recomputed", src)
    outs = Table3Outputs.in_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    write_table3_outputs(metrics, rows, outs, al, per_file if have_pf else None)
    written = [outs.csv, outs.md, outs.vs_paper, outs.notes_csv, outs.notes_md]
    if have_pf:
        written += [outs.findings_csv, outs.findings_md]
    ext_rows = _rows_of(src / "table3_ext.csv")
    if ext_rows is None:
        ext_rows = [r for r in runs if get_experiment(r[0]).base is not None
                    and (get_experiment(r[0]).base, r[1]) in runs]
    if ext_rows:
        from slotmpe.results.ext import ext_rows_with_bases, write_table3_ext

        paths = [runs[r][s] / METRICS_NAME for r in ext_rows_with_bases(ext_rows)
                 for s in sorted(runs.get(r, {}))]
        write_table3_ext(paths, ext_rows, out / "table3_ext.csv", out / "table3_ext.md")
        written += [out / "table3_ext.csv", out / "table3_ext.md"]
    return [p for p in written if p is not None]
