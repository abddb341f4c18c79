# Raw data: download + unpack the real datasets, render the embedded ones, adapt everything to the
# manifest schema of DESIGN.md. The download marker records the dataset's source (url, md5,
# sha256, path) and the `source` param holds it too: changing any of them reruns the download
# (Snakemake's params rerun trigger) and so everything downstream of the manifest.


rule download_dataset:
    output:
        marker=f"{config['raw_root']}/{{dataset}}.ready",
    params:
        dscfg=dataset_cfg,
        source=dataset_source,
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
