"""Snakemake adapter: build a derived experiment (3a) from its trained base run (2b)."""

from pathlib import Path

from slotmpe.pipeline import derive_model, log_to

with log_to(snakemake.log[0]):  # noqa: F821
    derive_model(
        exp=snakemake.wildcards.exp,  # noqa: F821
        base_model_path=Path(snakemake.input.model),  # noqa: F821
        base_log_path=Path(snakemake.input.log_csv),  # noqa: F821
        model_path=Path(snakemake.output.model),  # noqa: F821
        log_path=Path(snakemake.output.log_csv),  # noqa: F821
    )
