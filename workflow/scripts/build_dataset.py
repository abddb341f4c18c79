"""Snakemake adapter: build data/{dataset}/manifest.parquet."""

from pathlib import Path

from slotmpe.pipeline import build_dataset, log_to

with log_to(snakemake.log[0]):  # noqa: F821
    build_dataset(
        name=snakemake.wildcards.dataset,  # noqa: F821
        dscfg=snakemake.params.dscfg,  # noqa: F821
        manifest_path=Path(snakemake.output.manifest),  # noqa: F821
        raw_root=snakemake.params.raw_root,  # noqa: F821
        seed=int(snakemake.params.seed),  # noqa: F821
    )
