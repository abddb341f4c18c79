# Aggregation: Table III (with the paper beside it), its note-level table, the paper's findings
# with two-level (seeds, files) bootstrap CIs, and Table I (parameter counts). `slotmpe findings
# results` reruns the table3 rule's code on the finished tree.


rule table3:
    input:
        metrics=table3_metrics,
        per_file=table3_per_file,
        # the main job leaves deployable models: model.onnx beside every Table III model.pt, so
        # `slotmpe transcribe --model .../model.pt` runs on onnxruntime (issue 24)
        onnx=ONNX_TARGETS,
    output:
        csv="results/table3.csv",
        md="results/table3.md",
        vs_paper="results/table3_vs_paper.md",
        findings_csv="results/findings.csv",
        findings_md="results/findings.md",
        notes_csv="results/table3_notes.csv",
        notes_md="results/table3_notes.md",
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
