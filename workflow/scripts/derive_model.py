"""Snakemake adapter: the model of an inference-only extension = its base's trained weights."""

from pathlib import Path

from slotmpe.extensions import derive_checkpoint
from slotmpe.pipeline import log_to

with log_to(snakemake.log[0]):  # noqa: F821
    derive_checkpoint(
        base_model=Path(snakemake.input.base),  # noqa: F821
        out_model=Path(snakemake.output.model),  # noqa: F821
        exp_name=snakemake.wildcards.exp,  # noqa: F821
    )
