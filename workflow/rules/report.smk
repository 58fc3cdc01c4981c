# Seconds-long: on a cluster they run beside Snakemake rather than wait in the queue.
localrules:
    report,
    index,


rule report:
    input:
        metrics=lambda wc: sorted({str(RunDir(d).metrics) for _, d in row_runs(wc.table)}),
        data=PREPARED,
    output:
        # report(): `snakemake --report report.html` shows them, per table
        report=report("reports/{table}.md", category="{table}", labels={"file": "report"}),
        metrics="reports/{table}.json",
        curves=report("reports/{table}.png", category="{table}", labels={"file": "curves"}),
        bars=report(
            "reports/{table}.accuracy.csv", category="{table}", labels={"file": "accuracy"}
        ),
        runs="reports/{table}.runs.csv",  # one row per trial: what the verdicts are computed from
    conda:
        "../envs/simsiam.yaml"
    log:
        f"logs/{PROFILE}/report/{{table}}.log",
    benchmark:
        f"logs/{PROFILE}/benchmark/report/{{table}}.tsv"
    params:
        profile=PROFILE,
        runs=lambda wc: " ".join(f"--run {r}={d}" for r, d in row_runs(wc.table)),
    shell:
        "bash workflow/scripts/logged.sh {log}"
        " simsiam report --profile {params.profile} --table {wildcards.table} --data {input.data}"
        " {params.runs} --out {output.report}"


rule index:
    input:
        expand("reports/{table}.{suffix}", table=TABLES, suffix=["json", "runs.csv"]),
    output:
        index=report("reports/index.md", category="index", labels={"file": "every claim"}),
        runs=report("reports/runs.csv", category="index", labels={"file": "every trial"}),
    conda:
        "../envs/simsiam.yaml"
    log:
        f"logs/{PROFILE}/report/index.log",
    benchmark:
        f"logs/{PROFILE}/benchmark/index.tsv"
    params:
        summaries=expand("reports/{table}.json", table=TABLES),
    shell:
        "bash workflow/scripts/logged.sh {log} simsiam index"
        " {params.summaries} --out {output.index}"
