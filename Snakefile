# slotmpe: slot-attention multi-instrument multi-pitch estimation, from raw data to Table III and Fig. 2.
# Usage: snakemake --cores 4 results/table3.csv   (see README.md; profiles in config.yaml)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/common_report.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/timbre.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/generalisation.smk"
include: "workflow/rules/report_pages.smk"
include: "workflow/rules/extensions.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/pretrained.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        "results/table3.csv",
        "results/fig2_umap.png",
        "results/generalisation.csv",
        REPORT_TARGETS,
        ONNX_TARGETS,
    default_target: True
