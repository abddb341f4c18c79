"""Snakemake adapter: download, verify and unpack one real dataset."""

from pathlib import Path

from slotmpe.pipeline import download_dataset, log_to

with log_to(snakemake.log[0]):  # noqa: F821
    download_dataset(
        name=snakemake.wildcards.dataset,  # noqa: F821
        dscfg=snakemake.params.dscfg,  # noqa: F821
        raw_root=Path(snakemake.params.raw_root),  # noqa: F821
    )
