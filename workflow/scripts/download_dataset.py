"""Snakemake adapter: download, verify and unpack one real dataset; write its ready marker."""

from pathlib import Path

from slotmpe.download import write_ready_marker
from slotmpe.pipeline import download_dataset, log_to

with log_to(snakemake.log[0]):  # noqa: F821
    folder = download_dataset(
        name=snakemake.wildcards.dataset,  # noqa: F821
        dscfg=snakemake.params.dscfg,  # noqa: F821
        raw_root=Path(snakemake.params.raw_root),  # noqa: F821
    )
    write_ready_marker(Path(snakemake.output.marker), folder, snakemake.params.source)  # noqa: F821
