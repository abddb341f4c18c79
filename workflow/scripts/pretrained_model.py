"""Snakemake adapter: the shipped model's release (model.onnx with release metadata, card.json,
MODEL_CARD.md) from one trained run (slotmpe.pretrained.card.build_pretrained)."""

from pathlib import Path

from slotmpe.pipeline import log_to
from slotmpe.pretrained.card import build_pretrained

with log_to(snakemake.log[0]):  # noqa: F821
    build_pretrained(
        export=Path(snakemake.input.export),  # noqa: F821
        run=snakemake.params.run,  # noqa: F821
        train_log=Path(snakemake.input.train_log),  # noqa: F821
        metrics=snakemake.params.metrics,  # noqa: F821
        out_model=Path(snakemake.output.model),  # noqa: F821
        out_json=Path(snakemake.output.card_data),  # noqa: F821
        out_card=Path(snakemake.output.card),  # noqa: F821
        train_config=snakemake.params.train,  # noqa: F821
        benchmark=Path(snakemake.params.benchmark),  # noqa: F821
        naming=snakemake.params.naming,  # noqa: F821
        repo=snakemake.params.repo,  # noqa: F821
    )
