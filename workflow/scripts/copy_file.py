"""Snakemake adapter: publish a file under another name (atomic copy)."""

from pathlib import Path

from slotmpe.pipeline import copy_file, log_to

with log_to(snakemake.log[0]):  # noqa: F821
    copy_file(Path(snakemake.input[0]), Path(snakemake.output[0]))  # noqa: F821
