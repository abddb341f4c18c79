"""Snakemake adapter: Table I, trainable parameters of the eight configurations."""

from pathlib import Path

from slotmpe.pipeline import log_to, table1

with log_to(snakemake.log[0]):  # noqa: F821
    table1(out_csv=Path(snakemake.output.csv), widths=snakemake.params.widths)  # noqa: F821
