"""Snakemake adapter: train one (dataset, experiment, seed) slot model."""

from pathlib import Path

from slotmpe.pipeline import log_to, train_model

with log_to(snakemake.log[0]):  # noqa: F821
    train_model(
        exp=snakemake.wildcards.exp,  # noqa: F821
        dataset=snakemake.wildcards.dataset,  # noqa: F821
        seed=int(snakemake.wildcards.seed),  # noqa: F821
        index_path=Path(snakemake.input.index),  # noqa: F821
        model_path=Path(snakemake.output.model),  # noqa: F821
        embeddings_path=Path(snakemake.input.embeddings[0]) if snakemake.input.embeddings else None,  # noqa: F821
        settings=dict(snakemake.params.train),  # noqa: F821
        threads=snakemake.params.torch_threads,  # noqa: F821
    )
