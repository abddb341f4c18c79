# Slot-model training: one job per (dataset, experiment, seed).


rule train_model:
    input:
        index="data/{dataset}/features/index.csv",
        embeddings=embeddings_for,
    output:
        model="results/{dataset}/{exp}/seed{seed}/model.pt",
        log_csv="results/{dataset}/{exp}/seed{seed}/train_log.csv",
    params:
        train={**config["train"], "widths": config["model"]["widths"]},
    threads: 1
    resources:
        mem_mb=6000,
        runtime=600,
    log:
        "logs/train/{dataset}_{exp}_seed{seed}.log",
    benchmark:
        "benchmarks/out/train/{dataset}_{exp}_seed{seed}.tsv"
    conda:
        ENV
    script:
        "../scripts/train_model.py"
