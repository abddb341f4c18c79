# Extension experiments (issue 18): Table III-ext. Inference-only extensions (4a, 4g, ...) declare
# ``derived_from`` and are built by the derive_model rule (train.smk) from their base's run.


rule table3_ext:
    input:
        runs=table3_ext_runs,
    output:
        csv="results/table3_ext.csv",
        md="results/table3_ext.md",
    params:
        rows=TABLE3_EXT_ROWS,
    log:
        "logs/report/table3_ext.log",
    conda:
        ENV
    script:
        "../scripts/table3_ext.py"
