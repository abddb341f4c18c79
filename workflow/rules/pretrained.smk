# The model that ships with the package (src/slotmpe/pretrained/, docs/pretrained.md):
# `snakemake --cores 4 results/pretrained/model.onnx` builds results/pretrained/{model.onnx,
# card.json, MODEL_CARD.md} from one trained run named in the config's `pretrained:` section
# (experiment, dataset, seed), reusing that run's train / tune / evaluate / export outputs and its
# cross-dataset evaluations (`test_on`). Copying results/pretrained/model.onnx and MODEL_CARD.md
# into src/slotmpe/pretrained/ ships it.

include: "common_pretrained.smk"


rule pretrained_naming:
    input:
        model=f"{PRETRAINED_RUN}/model.onnx",
        index="data/{test_ds}/features/index.csv",
    output:
        naming="results/pretrained/naming_{test_ds}.json",
    params:
        max_frames=config["eval"]["max_frames"],
    threads: 1
    log:
        "logs/pretrained/naming_{test_ds}.log",
    conda:
        ENV
    script:
        "../scripts/pretrained_naming.py"


rule pretrained_model:
    input:
        export=f"{PRETRAINED_RUN}/model.onnx",
        train_log=f"{PRETRAINED_RUN}/train_log.csv",
        metrics=lambda wc: list(pretrained_metrics(wc).values()),
        naming=lambda wc: list(pretrained_naming(wc).values()),
    output:
        model="results/pretrained/model.onnx",
        card_data="results/pretrained/card.json",
        card="results/pretrained/MODEL_CARD.md",
    params:
        run={k: PRETRAINED[k] for k in ("exp", "dataset", "seed")},
        metrics=pretrained_metrics,
        naming=pretrained_naming,
        train={**config["train"], "widths": config["model"]["widths"]},
        benchmark="benchmarks/out/train/{dataset}_{exp}_seed{seed}.tsv".format(**PRETRAINED),
        repo=workflow.basedir,
    log:
        "logs/pretrained/model.log",
    conda:
        ENV
    script:
        "../scripts/pretrained_model.py"
