"""Snakemake adapter: re-tune a model's thresholds on another dataset's validation files."""

from pathlib import Path

from slotmpe.generalisation import tune_cross
from slotmpe.pipeline import log_to

with log_to(snakemake.log[0]):  # noqa: F821
    tune_cross(
        model_path=Path(snakemake.input.model),  # noqa: F821
        test_feature_dir=Path(snakemake.input.index).parent,  # noqa: F821
        out_path=Path(snakemake.output.thresholds),  # noqa: F821
        train_ds=snakemake.wildcards.dataset,  # noqa: F821
        test_ds=snakemake.wildcards.test_ds,  # noqa: F821
        max_frames=snakemake.params.max_frames,  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
    )
