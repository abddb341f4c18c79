"""Snakemake adapter: Table III (+ the paper beside it), its note-level table and the findings."""

from pathlib import Path

from slotmpe.pipeline import log_to, table3

with log_to(snakemake.log[0]):  # noqa: F821
    table3(
        metrics_paths=[Path(p) for p in snakemake.input.metrics],  # noqa: F821
        rows=[tuple(r) for r in snakemake.params.rows],  # noqa: F821
        out_csv=Path(snakemake.output.csv),  # noqa: F821
        out_md=Path(snakemake.output.md),  # noqa: F821
        out_vs_paper=Path(snakemake.output.vs_paper),  # noqa: F821
        aliases=dict(snakemake.params.aliases),  # noqa: F821
        per_file_paths=[Path(p) for p in snakemake.input.per_file],  # noqa: F821
        findings_csv=Path(snakemake.output.findings_csv),  # noqa: F821
        findings_md=Path(snakemake.output.findings_md),  # noqa: F821
        notes_csv=Path(snakemake.output.notes_csv),  # noqa: F821
        notes_md=Path(snakemake.output.notes_md),  # noqa: F821
    )
