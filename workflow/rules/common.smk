# Helpers shared by all rules: profile resolution, config validation, wildcard constraints and
# target lists. Rules stay declarative; all logic lives in the slotmpe package.
import math
import os
from pathlib import Path

from snakemake.utils import validate

from slotmpe.config import apply_profile, table3_ext_rows, table3_rows, validate_config
from slotmpe.download import source_json
from slotmpe.experiments import ALL_EXPERIMENTS, get_experiment

# Apply the profile overlay, then re-apply the command-line --config on top so it always wins.
_resolved = apply_profile(config, workflow.config_settings.overwrite_config)
config.clear()
config.update(_resolved)

# Unknown keys (typos) and values a job would fail on (reversed ranges, a device this machine
# lacks, ...) fail here, naming the key; Snakemake's validate then fills in the defaults. A
# cluster's submit host (no local cores) skips the device check: its jobs run, and are checked,
# on the nodes.
validate_config(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml",
                check_devices=workflow.global_resources["_nodes"].value is None)
validate(config, "../schemas/config.schema.yaml")

DATASETS = sorted(config["datasets"])
REAL_TYPES = {"urmp", "mshoxxdb", "musicnet", "slakh"}
TABLE3_ROWS = table3_rows(config)
TABLE3_EXT_ROWS = table3_ext_rows(config)
SEEDS = [int(s) for s in config["seeds"]]
# Experiments built from another experiment's trained run (slotmpe.derive) and trained ones.
DERIVED = [e for e, x in ALL_EXPERIMENTS.items() if x.derived_from and config["derive_experiments"]]
TRAINED = [e for e in ALL_EXPERIMENTS if e not in DERIVED]
ENV = "../../envs/slotmpe.yaml"

if config["fig2_dataset"] not in config["datasets"]:
    raise ValueError(
        f"fig2_dataset {config['fig2_dataset']!r} is not a configured dataset: {DATASETS}"
    )


# Threads. A rule declares ``cpu_threads(n)`` for a job that runs ``n`` torch threads. Locally,
# Snakemake starts jobs while their declared threads fit into --cores; where --cores exceeds the
# CPUs present (e.g. `--cores 4` on 2 cores) every declaration is scaled by OVERSUB, so the torch
# threads of concurrent jobs never exceed os.cpu_count(). The job's torch threads are its
# (possibly capped) threads divided by OVERSUB (``torch_threads``). Cluster executors (slurm:
# --jobs, no local cores) are left alone: their profile's set-threads are the job's threads.
# JOB_THREADS = 1: on 2 shared cores, parallel 1-thread jobs finished 4 tiny training jobs no later
# than 2-thread jobs one after the other (README, "Configuration and profiles"); --set-threads
# RULE=N still gives a rule N torch threads (divided by OVERSUB).
CPUS = os.cpu_count() or 1
LOCAL = workflow.global_resources["_nodes"].value is None
OVERSUB = max(1, math.ceil(workflow._cores / CPUS)) if LOCAL and workflow._cores else 1
JOB_THREADS = 1


def cpu_threads(n):
    """Declared threads of a job that runs ``n`` torch threads (scaled by OVERSUB)."""
    return n * OVERSUB


def torch_threads(wildcards, threads):
    """Torch intra-op threads of a job from its granted threads (never below 1)."""
    return max(1, threads // OVERSUB)


wildcard_constraints:
    dataset="|".join(DATASETS),
    exp="|".join(ALL_EXPERIMENTS),
    seed=r"\d+",


def dataset_cfg(wildcards):
    """The config entry of the wildcard's dataset."""
    return config["datasets"][wildcards.dataset]


def dataset_source(wildcards):
    """Where a real dataset comes from (url, checksums, path), as a canonical JSON string."""
    return source_json(dataset_cfg(wildcards), wildcards.dataset)


def download_marker(wildcards):
    """Real datasets depend on their download/unpack marker; embedded and folder ones on nothing."""
    if dataset_cfg(wildcards)["type"] in REAL_TYPES:
        return [f"{config['raw_root']}/{wildcards.dataset}.ready"]
    return []


def raw_root_of(wildcards, input):
    """Folder holding the unpacked real datasets (from the download marker), or None."""
    return Path(input.download[0]).parent if input.download else None


def embeddings_for(wildcards):
    """Experiments with a timbre head train against the dataset's exported stem embeddings."""
    if get_experiment(wildcards.exp).timbre_head:
        return [f"results/{wildcards.dataset}/timbre/embeddings.parquet"]
    return []


def derived_base(wildcards):
    """The trained base run (model.pt and train_log.csv) a derived experiment is built from."""
    base = get_experiment(wildcards.exp).derived_from
    run = f"results/{wildcards.dataset}/{base}/seed{wildcards.seed}"
    return {"model": f"{run}/model.pt", "log_csv": f"{run}/train_log.csv"}


def table3_metrics(wildcards):
    """metrics.json of every configured (exp, dataset) row for every seed."""
    return [
        f"results/{ds}/{exp}/seed{seed}/metrics.json"
        for exp, ds in TABLE3_ROWS
        for seed in SEEDS
    ]


def table3_per_file(wildcards):
    """per_file.csv of every configured (exp, dataset) row for every seed (findings input)."""
    return [
        f"results/{ds}/{exp}/seed{seed}/per_file.csv"
        for exp, ds in TABLE3_ROWS
        for seed in SEEDS
    ]


def table3_ext_runs(wildcards):
    """metrics.json and per_file.csv of every extension row and of its base, for every seed."""
    from slotmpe.results.ext import ext_rows_with_bases

    return [
        f"results/{ds}/{exp}/seed{seed}/{name}"
        for exp, ds in ext_rows_with_bases(TABLE3_EXT_ROWS)
        for seed in SEEDS
        for name in ("metrics.json", "per_file.csv")
    ]


# model.onnx (workflow/rules/export.smk) beside every model.pt of the Table III rows, all seeds.
ONNX_TARGETS = expand(
    "results/{run}/seed{seed}/model.onnx",
    run=list(map("{0[1]}/{0[0]}".format, TABLE3_ROWS)),
    seed=SEEDS,
)
