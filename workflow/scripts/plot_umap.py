"""Snakemake adapter: UMAP plot of a dataset's test-split stem embeddings."""

from pathlib import Path

from slotmpe.pipeline import log_to, plot_umap

with log_to(snakemake.log[0]):  # noqa: F821
    plot_umap(
        embeddings_path=Path(snakemake.input.embeddings),  # noqa: F821
        out_png=Path(snakemake.output.png),  # noqa: F821
        dataset=snakemake.wildcards.dataset,  # noqa: F821
        seed=int(snakemake.params.seed),  # noqa: F821
    )
