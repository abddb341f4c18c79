# Timbre encoder (teacher): train on isolated stems, export one embedding per pitched stem, plot UMAP.


rule train_timbre_encoder:
    input:
        index="data/{dataset}/features/index.csv",
    output:
        encoder="results/{dataset}/timbre/encoder.pt",
        metrics="results/{dataset}/timbre/metrics.json",
    params:
        torch_threads=torch_threads,
        timbre=config["timbre"],
        seed=SEEDS[0],
    threads: cpu_threads(JOB_THREADS)
    resources:
        mem_mb=6000,
        runtime=240,
        gpu_jobs=1,  # one of the GPU's job slots (profiles/gpu: --resources gpu_jobs=N); unlimited elsewhere
    log:
        "logs/timbre/{dataset}_train.log",
    benchmark:
        "benchmarks/out/timbre/{dataset}_train.tsv"
    conda:
        ENV
    script:
        "../scripts/train_timbre.py"


rule export_embeddings:
    input:
        encoder="results/{dataset}/timbre/encoder.pt",
        index="data/{dataset}/features/index.csv",
    output:
        embeddings="results/{dataset}/timbre/embeddings.parquet",
    params:
        seed=SEEDS[0],
    threads: cpu_threads(JOB_THREADS)
    log:
        "logs/timbre/{dataset}_export.log",
    conda:
        ENV
    script:
        "../scripts/export_embeddings.py"


rule plot_umap:
    input:
        embeddings="results/{dataset}/timbre/embeddings.parquet",
    output:
        png="results/{dataset}/timbre/umap.png",
    params:
        seed=SEEDS[0],
    threads: cpu_threads(JOB_THREADS)
    log:
        "logs/timbre/{dataset}_umap.log",
    conda:
        ENV
    script:
        "../scripts/plot_umap.py"


rule fig2_umap:
    input:
        png=f"results/{config['fig2_dataset']}/timbre/umap.png",
    output:
        png=report(
            "results/fig2_umap.png",
            category="3. Figures",
            labels={"figure": "Fig. 2"},
            caption="../report/fig2.rst",
        ),
    log:
        "logs/timbre/fig2.log",
    conda:
        ENV
    script:
        "../scripts/copy_file.py"
