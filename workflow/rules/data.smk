# Raw data: download + unpack the real datasets, render the embedded ones, adapt everything to the
# manifest schema of DESIGN.md.


rule download_dataset:
    output:
        marker=touch(f"{config['raw_root']}/{{dataset}}.ready"),
    params:
        dscfg=dataset_cfg,
        raw_root=lambda wildcards, output: Path(output.marker).parent,
    log:
        "logs/download/{dataset}.log",
    conda:
        ENV
    script:
        "../scripts/download_dataset.py"


rule build_dataset:
    input:
        download=download_marker,
    output:
        manifest="data/{dataset}/manifest.parquet",
    params:
        dscfg=dataset_cfg,
        raw_root=raw_root_of,
        seed=0,
    threads: cpu_threads(JOB_THREADS)
    log:
        "logs/data/{dataset}.log",
    benchmark:
        "benchmarks/out/data/{dataset}.tsv"
    conda:
        ENV
    script:
        "../scripts/build_dataset.py"
