# Helpers shared by all rules: profile resolution, config validation, wildcard constraints and
# target lists. Rules stay declarative; all logic lives in the slotmpe package.
from pathlib import Path

from snakemake.utils import validate

from slotmpe.config import apply_profile, table3_rows
from slotmpe.download import source_json
from slotmpe.experiments import EXPERIMENTS, get_experiment

# Apply the profile overlay, then re-apply the command-line --config on top so it always wins.
_resolved = apply_profile(config, workflow.config_settings.overwrite_config)
config.clear()
config.update(_resolved)

validate(config, "../schemas/config.schema.yaml")

DATASETS = sorted(config["datasets"])
REAL_TYPES = {"urmp", "mshoxxdb", "musicnet", "slakh"}
TABLE3_ROWS = table3_rows(config)
SEEDS = [int(s) for s in config["seeds"]]
ENV = "../../envs/slotmpe.yaml"

if config["fig2_dataset"] not in config["datasets"]:
    raise ValueError(
        f"fig2_dataset {config['fig2_dataset']!r} is not a configured dataset: {DATASETS}"
    )


wildcard_constraints:
    dataset="|".join(DATASETS),
    exp="|".join(EXPERIMENTS),
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


def table3_metrics(wildcards):
    """metrics.json of every configured (exp, dataset) row for every seed."""
    return [
        f"results/{ds}/{exp}/seed{seed}/metrics.json"
        for exp, ds in TABLE3_ROWS
        for seed in SEEDS
    ]
