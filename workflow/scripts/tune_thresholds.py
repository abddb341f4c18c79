"""Snakemake adapter: tune output thresholds on the full validation files."""

from pathlib import Path

from slotmpe.pipeline import log_to, tune_thresholds

with log_to(snakemake.log[0]):  # noqa: F821
    tune_thresholds(
        model_path=Path(snakemake.input.model),  # noqa: F821
        index_path=Path(snakemake.input.index),  # noqa: F821
        out_path=Path(snakemake.output.thresholds),  # noqa: F821
        max_frames=snakemake.params.max_frames,  # noqa: F821
        threads=snakemake.params.torch_threads,  # noqa: F821
    )
