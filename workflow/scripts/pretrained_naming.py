"""Snakemake adapter: instrument-name accuracy of the shipped run on one test split
(slotmpe.naming_eval.naming_accuracy)."""

import json
from pathlib import Path

from slotmpe.naming_eval import naming_accuracy
from slotmpe.pipeline import log_to
from slotmpe.utils import atomic_path

with log_to(snakemake.log[0]):  # noqa: F821
    res = naming_accuracy(
        Path(snakemake.input.model),  # noqa: F821
        Path(snakemake.input.index).parent,  # noqa: F821
        split="test",
        max_frames=snakemake.params.max_frames,  # noqa: F821
    )
    with atomic_path(Path(snakemake.output.naming)) as tmp:  # noqa: F821
        tmp.write_text(json.dumps(res, indent=1) + "\n")
