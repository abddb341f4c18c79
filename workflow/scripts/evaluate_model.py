"""Snakemake adapter: evaluate one trained model on the test files."""

from pathlib import Path

from slotmpe.pipeline import evaluate_model, log_to

with log_to(snakemake.log[0]):  # noqa: F821
    evaluate_model(
        model_path=Path(snakemake.input.model),  # noqa: F821
        thresholds_path=Path(snakemake.input.thresholds),  # noqa: F821
        index_path=Path(snakemake.input.index),  # noqa: F821
        out_path=Path(snakemake.output.metrics),  # noqa: F821
        per_file_path=Path(snakemake.output.per_file),  # noqa: F821
        embeddings_path=Path(snakemake.input.embeddings[0]) if snakemake.input.embeddings else None,  # noqa: F821
        max_frames=snakemake.params.max_frames,  # noqa: F821
        threads=snakemake.params.torch_threads,  # noqa: F821
    )
