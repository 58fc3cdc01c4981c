# SimSiam ablations: data -> pretraining (one job per distinct resolved config) -> evaluation
# -> reports. Usage: snakemake --cores all [--config profile=NAME] reports/table3.md
from snakemake.utils import min_version

min_version("9.0")


configfile: "params/pipeline.yaml"  # validated in workflow/rules/common.smk


# `snakemake --report report.html`: its front page; each result's caption is in the rule.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        [str(ReportFiles.of(table).page) for table in TABLES],
        str(INDEX.page),
    default_target: True
