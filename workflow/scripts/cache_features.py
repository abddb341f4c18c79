"""Snakemake adapter: cache features and targets of every piece of a dataset."""

from pathlib import Path

from slotmpe.pipeline import cache_features, log_to

with log_to(snakemake.log[0]):  # noqa: F821
    cache_features(
        manifest_path=Path(snakemake.input.manifest),  # noqa: F821
        index_path=Path(snakemake.output.index),  # noqa: F821
        threads=snakemake.params.torch_threads,  # noqa: F821
    )
