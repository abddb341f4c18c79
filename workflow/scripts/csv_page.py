"""Snakemake adapter: a CSV table -> one HTML page for the report."""

from pathlib import Path

from slotmpe.pipeline import log_to
from slotmpe.results.pages import csv_page

with log_to(snakemake.log[0]):  # noqa: F821
    csv_page(
        csv_path=Path(snakemake.input.csv),  # noqa: F821
        out_html=Path(snakemake.output.html),  # noqa: F821
        title=snakemake.params.title,  # noqa: F821
        intro=snakemake.params.intro,  # noqa: F821
    )
