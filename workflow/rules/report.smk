# Aggregation: Table III (with the paper beside it), the paper's findings with bootstrap CIs over
# test files and seeds, and Table I (parameter counts).


rule table3:
    input:
        metrics=table3_metrics,
        per_file=table3_per_file,
    output:
        csv="results/table3.csv",
        md="results/table3.md",
        vs_paper="results/table3_vs_paper.md",
        findings_csv="results/findings.csv",
        findings_md="results/findings.md",
    params:
        rows=TABLE3_ROWS,
        aliases=config["paper_aliases"],
    log:
        "logs/report/table3.log",
    conda:
        ENV
    script:
        "../scripts/table3.py"


rule table1:
    output:
        csv="results/table1.csv",
    params:
        widths=config["model"]["widths"],
    log:
        "logs/report/table1.log",
    conda:
        ENV
    script:
        "../scripts/table1.py"
