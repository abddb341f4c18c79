# The Snakemake report (`snakemake --report report.html` after a run): every table as an HTML page,
# the training curves of every run, Fig. 2; categories and captions in workflow/report/.


rule training_curves:
    input:
        log_csv="results/{dataset}/{exp}/seed{seed}/train_log.csv",
    output:
        png=report(
            "results/{dataset}/{exp}/seed{seed}/curves.png",
            category="4. Training curves",
            subcategory="{dataset}",
            labels={"experiment": "{exp}", "dataset": "{dataset}", "seed": "{seed}"},
            caption="../report/curves.rst",
        ),
    log:
        "logs/report/curves_{dataset}_{exp}_seed{seed}.log",
    conda:
        ENV
    script:
        "../scripts/plot_curves.py"


rule report_table3:
    input:
        md=["results/table3.md", "results/table3_vs_paper.md", "results/table3_notes.md"],
    output:
        html=report(
            "results/report/table3.html",
            category="1. Results",
            labels={"table": "Table III"},
            caption="../report/table3.rst",
        ),
    params:
        title="Table III",
    log:
        "logs/report/table3_html.log",
    conda:
        ENV
    script:
        "../scripts/markdown_page.py"


rule report_findings:
    input:
        md=["results/findings.md"],
    output:
        html=report(
            "results/report/findings.html",
            category="1. Results",
            labels={"table": "Findings"},
            caption="../report/findings.rst",
        ),
    params:
        title="Findings",
    log:
        "logs/report/findings_html.log",
    conda:
        ENV
    script:
        "../scripts/markdown_page.py"


rule report_generalisation:
    input:
        md=["results/generalisation.md"],
    output:
        html=report(
            "results/report/generalisation.html",
            category="1. Results",
            labels={"table": "Generalisation"},
            caption="../report/generalisation.rst",
        ),
    params:
        title="Generalisation",
    log:
        "logs/report/generalisation_html.log",
    conda:
        ENV
    script:
        "../scripts/markdown_page.py"


rule report_table1:
    input:
        csv="results/table1.csv",
    output:
        html=report(
            "results/report/table1.html",
            category="2. Model and capacity",
            labels={"table": "Table I"},
            caption="../report/table1.rst",
        ),
    params:
        title="Table I: configurations, parameters and compute",
        intro=(
            "params: trainable parameters (paper_params: Table I of the paper); the component "
            "columns split them (trunk, global branch, slot branch, slot attention without its FFN, "
            "the FFN, mask decoder, heads = timbre + FiLM + polyphony); grad_params: parameters "
            "that receive a gradient in a training step (measured); mflops: forward MFLOPs per "
            "23-frame window (torch FlopCounterMode). widths: the model.widths preset."
        ),
    log:
        "logs/report/table1_html.log",
    conda:
        ENV
    script:
        "../scripts/csv_page.py"
