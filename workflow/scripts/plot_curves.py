"""Snakemake adapter: training curves (train/val loss per term per epoch) of one run."""

from pathlib import Path

from slotmpe.pipeline import log_to
from slotmpe.results.pages import plot_training_curves

with log_to(snakemake.log[0]):  # noqa: F821
    w = snakemake.wildcards  # noqa: F821
    plot_training_curves(
        log_csv=Path(snakemake.input.log_csv),  # noqa: F821
        out_png=Path(snakemake.output.png),  # noqa: F821
        title=f"{w.exp} on {w.dataset}, seed {w.seed}: loss per term (train solid, val dashed)",
    )
