"""Projected wall time of a default run on P cores, from a finished run's per-job CPU times.

Usage::

    python benchmarks/project_run_time.py RUN/benchmarks/out [--seed 0] [--cores 2 16] [--seeds 1 3]

Reads the Snakemake ``benchmark:`` files of one run (one seed; :func:`slotmpe.results.publish.
wall_times`) and replays the run's jobs on ``P`` one-thread cores with a greedy list scheduler
(the longest ready job first, as a critical-path-aware stand-in for Snakemake's scheduler). Each
job takes its **CPU** seconds (``cpu_time``): for one-thread jobs that is what it would take on a
quiet core, while the wall seconds of a shared machine are not. ``--seeds N`` replays N copies of
every job after the datasets' shared part (data, features, timbre encoder).

The dependencies are the pipeline's (``workflow/rules``):

* ``data/<ds>`` -> ``features/<ds>`` -> ``timbre/<ds>_train``;
* ``train/<ds>_<exp>_seed<s>`` after ``features/<ds>``, and after ``timbre/<ds>_train`` when
  the experiment has a timbre head (it needs the exported embeddings);
* ``eval/..._thresholds`` and ``export/...`` after the training of their model (a derived model,
  3a, after the training it is derived from), ``eval/..._metrics`` after its thresholds.

Jobs without a benchmark file (embedding export, table and figure rules: seconds each) are left
out; the projection says how many jobs it replayed. It is a projection, not a measurement: it
assumes one-thread jobs that do not slow each other down.
"""

from __future__ import annotations

import argparse
import heapq
import re
from dataclasses import dataclass, field
from pathlib import Path

from slotmpe.experiments import get_experiment
from slotmpe.results.publish import seed_of_benchmark, wall_times


@dataclass
class Job:
    """One job of the replay: ``name`` (the benchmark path), ``cpu_s`` and its prerequisites."""

    name: str
    cpu_s: float
    after: list[str] = field(default_factory=list)


_MODEL = re.compile(r"^(?P<ds>[^_/]+)_(?P<exp>[^_]+)_seed(?P<seed>\d+)")


def build_jobs(rows: list[dict], seeds: int = 1) -> list[Job]:
    """Jobs and dependencies from ``wall_times`` rows (see the module docstring).

    ``seeds`` > 1 copies every per-model job under new seed numbers (``seed<k>+<i>``)."""
    by_name = {r["benchmark"]: float(r["cpu_s"] if r["cpu_s"] is not None else r["s"]) for r in rows}
    jobs: list[Job] = []
    for name, cpu in by_name.items():
        folder, _, stem = name.partition("/")
        if folder == "features":
            jobs.append(Job(name, cpu, [d for d in (f"data/{stem}",) if d in by_name]))
        elif folder == "timbre":
            ds = stem.removesuffix("_train")
            jobs.append(Job(name, cpu, [d for d in (f"features/{ds}",) if d in by_name]))
        elif folder in ("train", "eval", "export"):
            m = _MODEL.match(stem)
            if m is None:
                continue
            ds, exp = m["ds"], m["exp"]
            try:
                spec = get_experiment(exp)
            except (KeyError, ValueError):
                spec = None
            if folder == "train":
                pre = [f"features/{ds}"]
                if spec is not None and spec.timbre_head:
                    pre.append(f"timbre/{ds}_train")
            else:
                src = spec.derived_from if spec is not None and spec.derived_from else exp
                pre = [f"train/{ds}_{src}_seed{m['seed']}"]
                if stem.endswith("_metrics"):
                    pre.append(f"eval/{ds}_{exp}_seed{m['seed']}_thresholds")
            jobs.append(Job(name, cpu, [p for p in pre if p in by_name]))
        elif folder == "data":
            jobs.append(Job(name, cpu))
    if seeds > 1:
        shared = {j.name for j in jobs if j.name.split("/")[0] in ("data", "features", "timbre")}
        per_seed = [j for j in jobs if j.name not in shared]
        for i in range(1, seeds):
            def ren(n: str, i: int = i) -> str:
                return n if n in shared else f"{n}+{i}"
            jobs += [Job(ren(j.name), j.cpu_s, [ren(a) for a in j.after]) for j in per_seed]
    return jobs


def simulate(jobs: list[Job], cores: int) -> float:
    """Makespan (s) of ``jobs`` on ``cores`` one-thread cores, longest ready job first."""
    if cores < 1:
        raise ValueError(f"cores must be >= 1; got {cores}")
    todo = {j.name: j for j in jobs}
    waiting = {j.name: set(j.after) & todo.keys() for j in jobs}
    children: dict[str, list[str]] = {n: [] for n in todo}
    for n, pre in waiting.items():
        for p in pre:
            children[p].append(n)
    ready = [(-todo[n].cpu_s, n) for n, pre in waiting.items() if not pre]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < cores:
            cost, n = heapq.heappop(ready)
            heapq.heappush(running, (now - cost, n))
        now, done = heapq.heappop(running)
        for c in children[done]:
            waiting[c].discard(done)
            if not waiting[c]:
                heapq.heappush(ready, (-todo[c].cpu_s, c))
    if any(waiting[n] for n in waiting):
        raise ValueError("the job graph has a cycle or a missing prerequisite")
    return now


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bench_dir", type=Path, help="a run's benchmarks/out")
    p.add_argument("--cores", type=int, nargs="+", default=[2, 16])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 3])
    p.add_argument("--seed", type=int, default=0,
                   help="the measured seed whose jobs are replayed (others are left out)")
    args = p.parse_args()
    rows = [r for r in wall_times(args.bench_dir)
            if seed_of_benchmark(r["benchmark"]) in (None, args.seed)]
    if not rows:
        raise SystemExit(f"no benchmark files under {args.bench_dir}")
    one = build_jobs(rows)
    total = sum(j.cpu_s for j in one)
    train = sum(j.cpu_s for j in one if j.name.startswith("train/"))
    print(f"{len(one)} jobs with a benchmark file; CPU {total:.0f} s in all, {train:.0f} s training")
    print("seeds  cores  projected wall")
    for s in args.seeds:
        jobs = build_jobs(rows, seeds=s)
        for c in args.cores:
            t = simulate(jobs, c)
            print(f"{s:5d}  {c:5d}  {t:8.0f} s  ({t / 3600:.2f} h)")


if __name__ == "__main__":
    main()
