"""Snakemake adapter: results/generalisation.csv/.md from in-domain and cross-dataset metrics."""

from pathlib import Path

from slotmpe.generalisation import write_generalisation
from slotmpe.pipeline import log_to

with log_to(snakemake.log[0]):  # noqa: F821
    write_generalisation(
        paths=[Path(p) for p in snakemake.input.metrics],  # noqa: F821
        rows=[tuple(r) for r in snakemake.params.rows],  # noqa: F821
        tests=list(snakemake.params.tests),  # noqa: F821
        out_csv=Path(snakemake.output.csv),  # noqa: F821
        out_md=Path(snakemake.output.md),  # noqa: F821
    )
