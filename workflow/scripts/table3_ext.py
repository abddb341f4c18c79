"""Snakemake adapter: extension experiments against their bases (results/table3_ext.*)."""

from pathlib import Path

from slotmpe.pipeline import log_to
from slotmpe.results.ext import write_table3_ext

with log_to(snakemake.log[0]):  # noqa: F821
    write_table3_ext(
        metrics_paths=[Path(p) for p in snakemake.input.runs if p.endswith("metrics.json")],  # noqa: F821
        rows=[tuple(r) for r in snakemake.params.rows],  # noqa: F821
        out_csv=Path(snakemake.output.csv),  # noqa: F821
        out_md=Path(snakemake.output.md),  # noqa: F821
    )
