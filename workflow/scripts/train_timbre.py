"""Snakemake adapter: train the timbre encoder of one dataset."""

from pathlib import Path

from slotmpe.pipeline import log_to, train_timbre

with log_to(snakemake.log[0]):  # noqa: F821
    train_timbre(
        index_path=Path(snakemake.input.index),  # noqa: F821
        encoder_path=Path(snakemake.output.encoder),  # noqa: F821
        settings=dict(snakemake.params.timbre),  # noqa: F821
        seed=int(snakemake.params.seed),  # noqa: F821
        threads=snakemake.params.torch_threads,  # noqa: F821
    )
