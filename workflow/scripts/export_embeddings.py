"""Snakemake adapter: export one timbre embedding per pitched stem."""

from pathlib import Path

from slotmpe.pipeline import export_embeddings, log_to

with log_to(snakemake.log[0]):  # noqa: F821
    export_embeddings(
        encoder_path=Path(snakemake.input.encoder),  # noqa: F821
        index_path=Path(snakemake.input.index),  # noqa: F821
        out_path=Path(snakemake.output.embeddings),  # noqa: F821
        seed=int(snakemake.params.seed),  # noqa: F821
    )
