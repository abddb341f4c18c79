"""Snakemake adapter: Markdown table(s) -> one HTML page for the report."""

from pathlib import Path

from slotmpe.pipeline import log_to
from slotmpe.results.pages import markdown_page

with log_to(snakemake.log[0]):  # noqa: F821
    markdown_page(
        md_paths=[Path(p) for p in snakemake.input.md],  # noqa: F821
        out_html=Path(snakemake.output.html),  # noqa: F821
        title=snakemake.params.title,  # noqa: F821
    )
