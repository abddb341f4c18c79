# Extension experiments (issue 18): models of inference-only extensions, and Table III-ext.


rule derive_model:
    wildcard_constraints:
        exp="|".join(DERIVED_EXPS),
    input:
        base=trained_model_of,
    output:
        model="results/{dataset}/{exp}/seed{seed}/model.pt",
    log:
        "logs/train/{dataset}_{exp}_seed{seed}_derive.log",
    conda:
        ENV
    script:
        "../scripts/derive_model.py"


rule table3_ext:
    input:
        metrics=table3_ext_metrics,
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
