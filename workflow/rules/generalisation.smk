# Cross-dataset evaluation: models trained on one dataset scored on another's test split
# (results/{dataset}/{exp}/seed{seed}/on_{test_ds}/), and results/generalisation.csv/.md.


wildcard_constraints:
    test_ds="|".join(DATASETS),


rule export_cross_embeddings:
    input:
        encoder="results/{dataset}/timbre/encoder.pt",
        index="data/{test_ds}/features/index.csv",
    output:
        embeddings="results/{dataset}/timbre/on_{test_ds}/embeddings.parquet",
    params:
        seed=SEEDS[0],
    log:
        "logs/timbre/{dataset}_export_on_{test_ds}.log",
    conda:
        ENV
    script:
        "../scripts/export_embeddings.py"


rule evaluate_cross:
    input:
        model="results/{dataset}/{exp}/seed{seed}/model.pt",
        thresholds="results/{dataset}/{exp}/seed{seed}/thresholds.json",
        index="data/{test_ds}/features/index.csv",
        manifest="data/{test_ds}/manifest.parquet",
        embeddings=cross_embeddings,
    output:
        metrics="results/{dataset}/{exp}/seed{seed}/on_{test_ds}/metrics.json",
        per_file="results/{dataset}/{exp}/seed{seed}/on_{test_ds}/per_file.csv",
    params:
        max_frames=config["eval"]["max_frames"],
        retuned=False,
    threads: 1
    log:
        "logs/eval/{dataset}_{exp}_seed{seed}_on_{test_ds}.log",
    benchmark:
        "benchmarks/out/eval/{dataset}_{exp}_seed{seed}_on_{test_ds}.tsv"
    conda:
        ENV
    script:
        "../scripts/evaluate_cross.py"


rule tune_thresholds_cross:
    input:
        model="results/{dataset}/{exp}/seed{seed}/model.pt",
        index="data/{test_ds}/features/index.csv",
    output:
        thresholds="results/{dataset}/{exp}/seed{seed}/on_{test_ds}/thresholds.json",
    params:
        max_frames=config["eval"]["max_frames"],
    threads: 1
    log:
        "logs/eval/{dataset}_{exp}_seed{seed}_on_{test_ds}_thresholds.log",
    conda:
        ENV
    script:
        "../scripts/tune_cross.py"


use rule evaluate_cross as evaluate_cross_retuned with:
    input:
        model="results/{dataset}/{exp}/seed{seed}/model.pt",
        thresholds="results/{dataset}/{exp}/seed{seed}/on_{test_ds}/thresholds.json",
        index="data/{test_ds}/features/index.csv",
        manifest="data/{test_ds}/manifest.parquet",
        embeddings=cross_embeddings,
    output:
        metrics="results/{dataset}/{exp}/seed{seed}/on_{test_ds}/metrics_retuned.json",
        per_file="results/{dataset}/{exp}/seed{seed}/on_{test_ds}/per_file_retuned.csv",
    params:
        max_frames=config["eval"]["max_frames"],
        retuned=True,
    log:
        "logs/eval/{dataset}_{exp}_seed{seed}_on_{test_ds}_retuned.log",
    benchmark:
        "benchmarks/out/eval/{dataset}_{exp}_seed{seed}_on_{test_ds}_retuned.tsv"


rule generalisation_table:
    input:
        metrics=generalisation_metrics_paths(config, SEEDS),
    output:
        csv="results/generalisation.csv",
        md="results/generalisation.md",
    params:
        rows=generalisation_rows(config),
        tests=GEN_TEST,
    log:
        "logs/report/generalisation.log",
    conda:
        ENV
    script:
        "../scripts/generalisation_table.py"
