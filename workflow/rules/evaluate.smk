# Evaluation: thresholds tuned on full validation files, then fixed for the test files.


rule tune_thresholds:
    input:
        model="results/{dataset}/{exp}/seed{seed}/model.pt",
        index="data/{dataset}/features/index.csv",
    output:
        thresholds="results/{dataset}/{exp}/seed{seed}/thresholds.json",
    params:
        torch_threads=torch_threads,
        max_frames=config["eval"]["max_frames"],
    threads: cpu_threads(JOB_THREADS)
    log:
        "logs/eval/{dataset}_{exp}_seed{seed}_thresholds.log",
    benchmark:
        "benchmarks/out/eval/{dataset}_{exp}_seed{seed}_thresholds.tsv"
    conda:
        ENV
    script:
        "../scripts/tune_thresholds.py"


rule evaluate_model:
    input:
        model="results/{dataset}/{exp}/seed{seed}/model.pt",
        thresholds="results/{dataset}/{exp}/seed{seed}/thresholds.json",
        index="data/{dataset}/features/index.csv",
        embeddings=embeddings_for,
    output:
        metrics="results/{dataset}/{exp}/seed{seed}/metrics.json",
        per_file="results/{dataset}/{exp}/seed{seed}/per_file.csv",
    params:
        torch_threads=torch_threads,
        max_frames=config["eval"]["max_frames"],
    threads: cpu_threads(JOB_THREADS)
    log:
        "logs/eval/{dataset}_{exp}_seed{seed}_metrics.log",
    benchmark:
        "benchmarks/out/eval/{dataset}_{exp}_seed{seed}_metrics.tsv"
    conda:
        ENV
    script:
        "../scripts/evaluate_model.py"
