"""A published run: the small outputs of one run, seed by seed, in ``docs/runs/<date>-<commit>/``.

:func:`publish_run` takes a finished ``results/`` tree (its ``table3.csv`` written by the workflow)
and publishes the seeds its ``table3.csv`` used (:func:`slotmpe.results.build.select_seeds`; run
folders of other seeds left in the tree are not published). Into the published folder go

* from every run folder ``{dataset}/{exp}/seed{seed}/`` :data:`RUN_FILES` (``per_file.csv``,
  ``metrics.json``, ``thresholds.json``, ``train_log.csv``) and, from its cross-dataset folders
  ``on_{test}/``, their metrics, per-file counts and thresholds; never a model;
* the tables: Table III, its paper comparison, the note table, the findings and ``table3_ext``
  **rebuilt from all the folder's seeds** (:func:`slotmpe.results.build.rebuild`), and
  generalisation, Table I and Fig. 2 copied (:data:`COPIED_TABLES`, :data:`COPIED_FIGURES`);
* ``environment.json`` (below) and ``STATUS.md`` (:mod:`slotmpe.results.status`); a hand-written
  ``README.md`` of the folder (how the run was made) is kept when seeds are added.

**Seeds add up.** When the folder already holds a published run of the same commit and the same
config (digest of the resolved config without ``seeds``), the new seeds join it (a seed published
again replaces its old folders); a different commit or config is refused, naming both. Without
``out_dir`` the folder is ``docs/runs/<date>-<short commit>`` of the slotmpe checkout, reusing an
existing ``docs/runs/*-<short commit>`` folder of that commit. The folder is assembled in a
temporary folder beside it and moved into place only when complete, so a failure (a truncated
``metrics.json``, a cut-short ``per_file.csv``, ...) leaves the old folder as it was; the folder
then holds exactly the seeds its tables use.

``environment.json``: ``commit`` (of the slotmpe checkout that made the tree,
:func:`slotmpe.results.provenance.project_for`; ``commit_short``, ``dirty``), ``config_file``,
``profile``, ``config_sha256``, ``created`` / ``updated`` (UTC), ``results_dir``, ``checkout``
(the main checkout and the worktree of the pinned commit, for ``STATUS.md``), ``cpu`` and
``versions`` (of the latest publishing), ``paper_aliases`` (read back by ``slotmpe findings``),
``planned`` (``seeds`` and Table III ``rows`` of the config), ``seeds``, ``seed_info`` (per seed:
commit, dirty, config digest, CPU (from the checkpoints, else the publishing machine), published,
``wall_time`` of its rules and ``wall_s_total`` / ``cpu_s_total``), ``runs`` (per run: dataset,
exp, seed and what its checkpoint recorded: precision, grad clip, threads, device, CPU, epochs;
``null`` where absent) and ``wall_time`` (every Snakemake ``benchmark:`` file under
``benchmarks/out/`` beside the results tree: the rule's output name, seconds, CPU seconds, peak
RSS in MB).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slotmpe.per_file import PER_FILE_NAME
from slotmpe.results.build import (
    ENVIRONMENT_NAME,
    METRICS_NAME,
    discover_runs,
    read_environment,
    rebuild,
    select_seeds,
)
from slotmpe.results.provenance import (
    ProvenanceError,
    commit_of,
    config_digest,
    find_config,
    load_run_config,
    project_for,
    worktree_plan,
)
from slotmpe.results.stats import read_per_file
from slotmpe.utils import get_logger, ordinary_mode

log = get_logger(__name__)

TABLE_FILES: tuple[str, ...] = (
    "table3.csv", "table3.md", "table3_vs_paper.md", "table3_notes.csv", "table3_notes.md",
    "findings.csv", "findings.md", "table3_ext.csv", "table3_ext.md", "generalisation.csv",
    "generalisation.md", "table1.csv",
)
# Not rebuilt from the run folders: copied from the latest results/ tree.
COPIED_TABLES: tuple[str, ...] = ("generalisation.csv", "generalisation.md", "table1.csv")
COPIED_FIGURES: tuple[str, ...] = ("fig2_umap.png",)  # Fig. 2, from the timbre encoders
RUN_FILES: tuple[str, ...] = ("per_file.csv", "metrics.json", "thresholds.json", "train_log.csv")
CROSS_FILES: tuple[str, ...] = (
    "metrics.json", "per_file.csv", "thresholds.json", "metrics_retuned.json",
    "per_file_retuned.csv",
)
CHECKPOINT_KEYS: tuple[str, ...] = (
    "precision", "grad_clip", "threads", "device", "cpu", "cpu_model", "cpu_flags",
    "best_epoch", "epochs_trained", "derived_from",
)
STATUS_NAME = "STATUS.md"
NOTES_NAME = "README.md"  # hand-written notes of a published run, kept when seeds are added


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
        ok = isinstance(v, str | int | float | bool | list | dict) or v is None
        rec[k] = json.loads(json.dumps(v, default=str)) if ok else str(v)
    rec["torch"] = (ckpt.get("versions") or {}).get("torch")
    return rec


def wall_times(bench_dir: Path) -> list[dict[str, Any]]:
    """Every Snakemake benchmark file under ``bench_dir``: ``{"benchmark", "s", "cpu_s",
    "max_rss_mb"}``
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
        cpu = df["cpu_time"].iloc[0] if "cpu_time" in df.columns else None
        out.append({"benchmark": p.relative_to(bench_dir).with_suffix("").as_posix(),
                    "s": round(float(df["s"].iloc[0]), 2),
                    "cpu_s": None if cpu is None or pd.isna(cpu) or cpu == "-"
                    else round(float(cpu), 2),
                    "max_rss_mb": None if rss is None or pd.isna(rss) or rss == "-"
                    else round(float(rss), 1)})
    return out


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def default_out(commit: str, root: Path) -> Path:
    """``root/<YYYY-MM-DD>-<short commit>`` (today's UTC date), or the existing folder of that
    commit under ``root`` (the run's earlier seeds) when there is exactly one."""
    short = commit[:7]
    found = sorted(p for p in Path(root).glob(f"*-{short}") if p.is_dir())
    if len(found) > 1:
        raise ProvenanceError(f"{root}: several published runs of commit {short} ({found}); "
                              "choose one with --out")
    if found:
        return found[0]
    return Path(root) / f"{_dt.datetime.now(_dt.UTC).date().isoformat()}-{short}"


def _validate_json(path: Path) -> None:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}): a cut-short write? re-run the "
                         "evaluation; nothing was published") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object; nothing was published")


def seed_of_benchmark(name: str) -> int | None:
    """The seed in a benchmark name (``train/chamber_3c_seed2`` -> 2), None for shared jobs."""
    hit = re.search(r"(?<![0-9a-z])seed(\d+)(?![0-9])", name)
    return int(hit.group(1)) if hit else None


def _check_same_run(out: Path, old: Mapping[str, Any], commit: str, digest: str) -> None:
    if old.get("commit") != commit:
        raise ProvenanceError(
            f"{out} holds a run of commit {old.get('commit')}; these results are of commit "
            f"{commit}: seeds of different commits cannot be one run; publish into another "
            "folder (--out)")
    if old.get("config_sha256") != digest:
        raise ProvenanceError(
            f"{out} holds a run with config sha256 {old.get('config_sha256')}; these results "
            f"were run with config sha256 {digest}: seeds of different configs cannot be one "
            "run; publish into another folder (--out)")


def publish_run(
    results_dir: Path,
    out_dir: Path | None = None,
    config: str | os.PathLike[str] | None = None,
    profile: str | None = None,
    bench_dir: Path | None = None,
    runs_root: Path | None = None,
) -> Path:
    """Publish the seeds of ``results_dir`` into ``out_dir`` (module docstring); returns it.

    Args:
        results_dir: a ``results/`` tree whose ``table3.csv`` the workflow wrote.
        out_dir: the published folder (default :func:`default_out` under ``runs_root``).
        config: the workflow config (default: ``config.yaml`` beside ``results_dir``, else at
            its checkout's root); profile: its profile, when not the config's own.
        bench_dir: Snakemake benchmark files (default ``results_dir/../benchmarks/out``).
        runs_root: where published runs live (default ``<checkout>/docs/runs``).

    Raises ``FileNotFoundError`` (no run folder, no ``table3.csv``, no config),
    :class:`~slotmpe.results.provenance.ProvenanceError` (unknown commit; a folder of another
    commit or config) and ``ValueError`` (a truncated ``metrics.json``, a cut-short
    ``per_file.csv``); the published folder is then left as it was.
    """
    import torch

    import slotmpe
    from slotmpe.config import table3_rows

    results_dir = Path(results_dir)
    found = discover_runs(results_dir)
    if not found:
        raise FileNotFoundError(f"{results_dir}: no run folder ({{dataset}}/{{exp}}/seed{{n}}/"
                                "metrics.json) to publish")
    if not (results_dir / "table3.csv").is_file():
        raise FileNotFoundError(
            f"{results_dir}: no table3.csv, so the seed is not finished (or the tree is not a "
            "results/ tree); run `snakemake results/table3.csv` first")
    project = project_for(results_dir)
    commit, dirty = commit_of(project)
    cfg_path = find_config(results_dir, config)
    if cfg_path is None:
        raise FileNotFoundError(f"{results_dir}: no config.yaml beside it or in {project}; "
                                "pass --config")
    cfg = load_run_config(cfg_path, profile)
    digest = config_digest(cfg)
    aliases = {str(k): str(v) for k, v in (cfg.get("paper_aliases") or {}).items()}
    runs = select_seeds(results_dir, found, None)
    new_seeds = sorted({s for v in runs.values() for s in v})
    for seeds in runs.values():
        for seed, run in seeds.items():
            for m in [run / METRICS_NAME, *sorted(run.glob(f"on_*/{METRICS_NAME}"))]:
                _validate_json(m)
                if (m.parent / PER_FILE_NAME).is_file():  # complete, covering metrics' files
                    read_per_file(m.parent / PER_FILE_NAME, seed=seed)

    out = (default_out(commit, project / "docs" / "runs" if runs_root is None else runs_root)
           if out_dir is None else Path(out_dir))
    old = read_environment(out) if out.is_dir() else None
    if old is None and out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not a published run (no {ENVIRONMENT_NAME});"
                              " choose another --out")
    if old is not None:
        _check_same_run(out, old, commit, digest)
    kept = sorted({int(s) for s in (old or {}).get("seeds") or []} - set(new_seeds))

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.publishing-"))
    try:
        records: list[dict[str, Any]] = [r for r in (old or {}).get("runs") or []
                                         if int(r.get("seed", -1)) in kept]
        for s in kept:  # the run's earlier seeds, as published
            for run in sorted(out.glob(f"*/*/seed{s}")):
                shutil.copytree(run, stage / run.relative_to(out))
        for (exp, ds), seeds in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            for seed, run in sorted(seeds.items()):
                rel = run.relative_to(results_dir)
                for name in RUN_FILES:
                    if (run / name).is_file():
                        _copy(run / name, stage / rel / name)
                for cross in sorted(run.glob("on_*")):
                    for name in CROSS_FILES:
                        if (cross / name).is_file():
                            _copy(cross / name, stage / rel / cross.name / name)
                rec = {"dataset": ds, "exp": exp, "seed": seed,
                       **checkpoint_record(run / "model.pt")}
                if rec["precision"] is None:
                    rec["precision"] = json.loads((run / METRICS_NAME).read_text()).get(
                        "train_precision")
                records.append(rec)
        records.sort(key=lambda r: (str(r["dataset"]), str(r["exp"]), int(r["seed"])))
        for name in ("table3.csv", "table3_ext.csv", *COPIED_TABLES, *COPIED_FIGURES):
            if (results_dir / name).is_file():
                _copy(results_dir / name, stage / name)
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        main, worktree = worktree_plan(project, commit)
        bench = wall_times(results_dir.parent / "benchmarks" / "out"
                           if bench_dir is None else Path(bench_dir))
        machine = cpu_info()
        seed_info = {k: v for k, v in ((old or {}).get("seed_info") or {}).items()
                     if int(k) in kept}
        for s in new_seeds:
            ck = next((r["cpu"] for r in records if r["seed"] == s
                       and isinstance(r.get("cpu"), dict)), None)
            mine = [b for b in bench if seed_of_benchmark(b["benchmark"]) == s]
            seed_info[str(s)] = {
                "commit": commit, "dirty": dirty, "config_sha256": digest, "published": now,
                "results_dir": str(results_dir), "cpu": ck or machine,
                "cpu_source": "checkpoint" if ck else "publishing machine",
                "wall_time": mine,
                "wall_s_total": round(sum(b["s"] for b in mine), 2),
                "cpu_s_total": round(sum(b["cpu_s"] or 0.0 for b in mine), 2),
            }
        old_bench = {b["benchmark"]: b for b in (old or {}).get("wall_time") or []
                     if seed_of_benchmark(b["benchmark"]) in (None, *kept)}
        old_bench.update({b["benchmark"]: b for b in bench
                          if seed_of_benchmark(b["benchmark"]) in (None, *new_seeds)})
        env = {
            "commit": commit, "commit_short": commit[:7],
            "dirty": bool(dirty or (old or {}).get("dirty")),
            "config_file": str(cfg_path), "profile": cfg.get("profile"),
            "profile_override": profile, "config_sha256": digest,
            "created": (old or {}).get("created") or now, "updated": now,
            "results_dir": str(results_dir),
            "checkout": {"main": str(main), "worktree": str(worktree)},
            "cpu": machine,
            "versions": {"python": platform.python_version(), "torch": str(torch.__version__),
                         "slotmpe": slotmpe.__version__},
            "paper_aliases": aliases,
            "planned": {"seeds": [int(x) for x in cfg.get("seeds") or []],
                        "rows": [list(r) for r in table3_rows(cfg)]},
            "seeds": sorted([*kept, *new_seeds]),
            "seed_info": dict(sorted(seed_info.items(), key=lambda kv: int(kv[0]))),
            "runs": records,
            "wall_time": sorted(old_bench.values(), key=lambda b: b["benchmark"]),
        }
        (stage / ENVIRONMENT_NAME).write_text(json.dumps(env, indent=2) + "\n")
        if (out / NOTES_NAME).is_file():  # the run's hand-written notes stay as they are
            _copy(out / NOTES_NAME, stage / NOTES_NAME)
        rebuild(stage)
        from slotmpe.results.status import render_status

        (stage / STATUS_NAME).write_text(render_status(env, out))
        _swap_into_place(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    log.info("published seeds %s of %s to %s (run seeds %s)", new_seeds, results_dir, out,
             env["seeds"])
    return out


def _swap_into_place(stage: Path, out: Path) -> None:
    """Move the assembled ``stage`` folder to ``out`` (the old ``out`` removed only after)."""
    os.chmod(stage, ordinary_mode(True))
    if out.exists():
        old = out.with_name(f".{out.name}.replaced-{os.getpid()}")
        os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(stage, out)
