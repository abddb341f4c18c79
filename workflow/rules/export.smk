# ONNX export of every model: results/{dataset}/{exp}/seed{seed}/model.onnx beside model.pt, so that
# `slotmpe transcribe --model .../model.pt` runs on onnxruntime without a manual `slotmpe export`
# (slotmpe.transcribe.runners.load_model_fast). The tuned thresholds and the checkpoint's
# instrument prototypes are embedded in the export's metadata.


rule export_onnx:
    input:
        model="results/{dataset}/{exp}/seed{seed}/model.pt",
        thresholds="results/{dataset}/{exp}/seed{seed}/thresholds.json",
    output:
        onnx="results/{dataset}/{exp}/seed{seed}/model.onnx",
    threads: cpu_threads(JOB_THREADS)
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        "logs/export/{dataset}_{exp}_seed{seed}.log",
    benchmark:
        "benchmarks/out/export/{dataset}_{exp}_seed{seed}.tsv"
    conda:
        ENV
    script:
        "../scripts/export_onnx.py"
