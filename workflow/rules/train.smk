# Slot-model training: one job per (dataset, experiment, seed); derived experiments (3a, and
# inference-only extensions such as 4a) are built from their base run without training
# (slotmpe.derive).


rule train_model:
    input:
        index="data/{dataset}/features/index.csv",
        embeddings=embeddings_for,
    output:
        model="results/{dataset}/{exp}/seed{seed}/model.pt",
        log_csv="results/{dataset}/{exp}/seed{seed}/train_log.csv",
    wildcard_constraints:
        exp="|".join(TRAINED),
    params:
        torch_threads=torch_threads,
        train={**config["train"], "widths": config["model"]["widths"]},
    threads: cpu_threads(JOB_THREADS)
    resources:
        mem_mb=6000,
        runtime=600,
        gpu_jobs=1,  # one of the GPU's job slots (profiles/gpu: --resources gpu_jobs=N); unlimited elsewhere
    log:
        "logs/train/{dataset}_{exp}_seed{seed}.log",
    benchmark:
        "benchmarks/out/train/{dataset}_{exp}_seed{seed}.tsv"
    conda:
        ENV
    script:
        "../scripts/train_model.py"


rule derive_model:
    input:
        unpack(derived_base),
    output:
        model="results/{dataset}/{exp}/seed{seed}/model.pt",
        log_csv="results/{dataset}/{exp}/seed{seed}/train_log.csv",
    wildcard_constraints:
        exp="|".join(DERIVED) or "^$",
    log:
        "logs/train/{dataset}_{exp}_seed{seed}.log",
    conda:
        ENV
    script:
        "../scripts/derive_model.py"
