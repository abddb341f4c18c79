"""A published run: the small outputs of one ``results/`` tree in ``docs/runs/<date>-<commit>/``.

:func:`publish_run` copies, from a finished ``results/`` tree,

* the tables (:data:`TABLE_FILES` that exist): Table III (+ the paper beside it, the note table),
  findings, ``table3_ext``, generalisation and Table I, csv + md;
* from every run folder ``{dataset}/{exp}/seed{seed}/`` :data:`RUN_FILES` (``per_file.csv``,
  ``metrics.json``, ``thresholds.json``, ``train_log.csv``) and, from its cross-dataset folders
  ``on_{test}/``, their metrics, per-file counts and thresholds; never a model;

and writes ``environment.json``: ``commit`` (and ``commit_short``, ``dirty``: uncommitted changes
in the repository at publishing time), ``created`` (UTC), ``cpu`` (model name, flags and count from
``/proc/cpuinfo``, else ``lscpu``), ``versions`` (python, torch, slotmpe), ``paper_aliases`` (read
back by ``slotmpe findings``), ``seeds``, ``runs`` (per run: dataset, exp, seed and what its
checkpoint recorded: precision, grad clip, threads, device, CPU, epochs; ``null`` where the
checkpoint is absent or silent) and ``wall_time`` (every Snakemake ``benchmark:`` file under
``benchmarks/out/`` beside the results tree: the rule's output name, seconds and peak RSS in MB).

``slotmpe findings <published folder>`` rebuilds the tables from the copied per-run files with the
workflow's own code (:func:`slotmpe.results.build.rebuild`).
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slotmpe.results.build import ENVIRONMENT_NAME, discover_runs
from slotmpe.utils import atomic_path, get_logger

log = get_logger(__name__)

TABLE_FILES: tuple[str, ...] = (
    "table3.csv", "table3.md", "table3_vs_paper.md", "table3_notes.csv", "table3_notes.md",
    "findings.csv", "findings.md", "table3_ext.csv", "table3_ext.md", "generalisation.csv",
    "generalisation.md", "table1.csv",
)
RUN_FILES: tuple[str, ...] = ("per_file.csv", "metrics.json", "thresholds.json", "train_log.csv")
CROSS_FILES: tuple[str, ...] = (
    "metrics.json", "per_file.csv", "thresholds.json", "metrics_retuned.json",
    "per_file_retuned.csv",
)
CHECKPOINT_KEYS: tuple[str, ...] = (
    "precision", "grad_clip", "threads", "device", "cpu", "cpu_model", "cpu_flags",
    "best_epoch", "epochs_trained", "derived_from",
)


def _git(repo: Path, *args: str) -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                             timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip()


def cpu_info() -> dict[str, Any]:
    """``{"model", "flags", "n_cpus"}`` of this machine (``/proc/cpuinfo``, else ``lscpu``)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if ":" in line:
                k, v = (x.strip() for x in line.split(":", 1))
                fields.setdefault(k, v)
        n = sum(1 for line in text.splitlines() if line.startswith("processor"))
    except OSError:
        n = 0
    if "model name" not in fields:
        out = _lscpu()
        fields.update({"model name": out.get("Model name", platform.processor()),
                       "flags": out.get("Flags", "")})
    return {"model": fields.get("model name") or platform.processor() or None,
            "flags": sorted(fields.get("flags", "").split()), "n_cpus": n or None}


def _lscpu() -> dict[str, str]:
    try:
        res = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.strip(): v.strip() for k, v in
            (line.split(":", 1) for line in res.stdout.splitlines() if ":" in line)}


def checkpoint_record(model_path: Path) -> dict[str, Any]:
    """What a run's ``model.pt`` says about how it was trained (:data:`CHECKPOINT_KEYS`, from its
    ``extra`` or ``extra["train_config"]``; ``None`` where absent), plus the torch version."""
    rec: dict[str, Any] = {k: None for k in CHECKPOINT_KEYS}
    rec["torch"] = None
    if not model_path.is_file():
        return rec
    from slotmpe.models.io import read_checkpoint

    ckpt = read_checkpoint(model_path)
    extra = ckpt.get("extra") or {}
    train = extra.get("train_config") or {}
    for k in CHECKPOINT_KEYS:
        v = extra.get(k, train.get(k) if isinstance(train, dict) else None)
        rec[k] = v if isinstance(v, str | int | float | bool | list) or v is None else str(v)
    rec["torch"] = (ckpt.get("versions") or {}).get("torch")
    return rec


def wall_times(bench_dir: Path) -> list[dict[str, Any]]:
    """Every Snakemake benchmark file under ``bench_dir``: ``{"benchmark", "s", "max_rss_mb"}``
    (``benchmark``: the path below ``bench_dir`` without ``.tsv``; the first repeat's figures)."""
    import pandas as pd

    out = []
    for p in sorted(Path(bench_dir).rglob("*.tsv")):
        try:
            df = pd.read_csv(p, sep="\t")
        except (ValueError, OSError) as e:
            log.warning("skipping unreadable benchmark file %s (%s)", p, e)
            continue
        if df.empty or "s" not in df.columns:
            continue
        rss = df["max_rss"].iloc[0] if "max_rss" in df.columns else None
        out.append({"benchmark": p.relative_to(bench_dir).with_suffix("").as_posix(),
                    "s": round(float(df["s"].iloc[0]), 2),
                    "max_rss_mb": None if rss is None or pd.isna(rss) or rss == "-"
                    else round(float(rss), 1)})
    return out


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def default_out(repo: Path = Path("."), root: Path = Path("docs/runs")) -> Path:
    """``docs/runs/<YYYY-MM-DD>-<short commit>`` (today's UTC date, the repository's HEAD)."""
    short = _git(repo, "rev-parse", "--short=7", "HEAD") or "nocommit"
    return Path(root) / f"{_dt.datetime.now(_dt.UTC).date().isoformat()}-{short}"


def publish_run(
    results_dir: Path,
    out_dir: Path | None = None,
    paper_aliases: Mapping[str, str] | None = None,
    repo: Path = Path("."),
    bench_dir: Path | None = None,
) -> Path:
    """Copy the small outputs of ``results_dir`` to ``out_dir`` and write ``environment.json``.

    Args:
        results_dir: a finished ``results/`` tree.
        out_dir: the published folder (default :func:`default_out`).
        paper_aliases: our dataset -> the paper's, recorded for ``slotmpe findings``.
        repo: the git repository whose commit is recorded.
        bench_dir: Snakemake benchmark files (default ``results_dir/../benchmarks/out``).

    Raises ``FileNotFoundError`` when ``results_dir`` holds no run folder.
    """
    import torch

    import slotmpe

    results_dir = Path(results_dir)
    out = default_out(repo) if out_dir is None else Path(out_dir)
    runs = discover_runs(results_dir)
    if not runs:
        raise FileNotFoundError(f"{results_dir}: no run folder ({{dataset}}/{{exp}}/seed{{n}}/"
                                "metrics.json) to publish")
    out.mkdir(parents=True, exist_ok=True)
    for name in TABLE_FILES:
        if (results_dir / name).is_file():
            _copy(results_dir / name, out / name)
    records = []
    for (exp, ds), seeds in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        for seed, run in sorted(seeds.items()):
            rel = run.relative_to(results_dir)
            for name in RUN_FILES:
                if (run / name).is_file():
                    _copy(run / name, out / rel / name)
            for cross in sorted(run.glob("on_*")):
                for name in CROSS_FILES:
                    if (cross / name).is_file():
                        _copy(cross / name, out / rel / cross.name / name)
            records.append({"dataset": ds, "exp": exp, "seed": seed,
                            **checkpoint_record(run / "model.pt")})
    commit = _git(repo, "rev-parse", "HEAD")
    env = {
        "commit": commit,
        "commit_short": commit[:7] if commit else None,
        "dirty": None if commit is None else bool(_git(repo, "status", "--porcelain",
                                                       "--untracked-files=no")),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "results_dir": str(results_dir),
        "cpu": cpu_info(),
        "versions": {"python": platform.python_version(), "torch": str(torch.__version__),
                     "slotmpe": slotmpe.__version__},
        "paper_aliases": dict(paper_aliases or {}),
        "seeds": sorted({r["seed"] for r in records}),
        "runs": records,
        "wall_time": wall_times(results_dir.parent / "benchmarks" / "out"
                                if bench_dir is None else Path(bench_dir)),
    }
    with atomic_path(out / ENVIRONMENT_NAME) as tmp:
        tmp.write_text(json.dumps(env, indent=2) + "\n")
    log.info("published %d runs of %s to %s", len(records), results_dir, out)
    return out
