"""Snakemake adapter: score a model trained on one dataset on another dataset's test files."""

from pathlib import Path

from slotmpe.generalisation import evaluate_cross
from slotmpe.pipeline import log_to

with log_to(snakemake.log[0]):  # noqa: F821
    evaluate_cross(
        model_path=Path(snakemake.input.model),  # noqa: F821
        thresholds_path=Path(snakemake.input.thresholds),  # noqa: F821
        test_feature_dir=Path(snakemake.input.index).parent,  # noqa: F821
        test_manifest=Path(snakemake.input.manifest),  # noqa: F821
        out_path=Path(snakemake.output.metrics),  # noqa: F821
        per_file_path=Path(snakemake.output.per_file),  # noqa: F821
        train_ds=snakemake.wildcards.dataset,  # noqa: F821
        test_ds=snakemake.wildcards.test_ds,  # noqa: F821
        embeddings_path=Path(snakemake.input.embeddings[0]) if snakemake.input.embeddings else None,  # noqa: F821
        retuned=bool(snakemake.params.retuned),  # noqa: F821
        max_frames=snakemake.params.max_frames,  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
    )
