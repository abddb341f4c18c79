# Feature cache: one file per piece with the wide CQT, per-stem CQTs and all target rolls.


rule cache_features:
    input:
        manifest="data/{dataset}/manifest.parquet",
    output:
        index="data/{dataset}/features/index.csv",
    params:
        torch_threads=torch_threads,
    threads: cpu_threads(JOB_THREADS)
    resources:
        mem_mb=4000,
    log:
        "logs/features/{dataset}.log",
    benchmark:
        "benchmarks/out/features/{dataset}.tsv"
    conda:
        ENV
    script:
        "../scripts/cache_features.py"
