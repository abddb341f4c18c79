"""Snakemake adapter: export one trained model.pt to model.onnx beside it."""

from pathlib import Path

from slotmpe.pipeline import log_to
from slotmpe.transcribe.onnx_export import export_onnx

with log_to(snakemake.log[0]):  # noqa: F821
    export_onnx(Path(snakemake.input.model), Path(snakemake.output.onnx))  # noqa: F821
