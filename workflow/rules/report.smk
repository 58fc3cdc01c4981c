# Seconds-long: on a cluster they run beside Snakemake rather than wait in the queue.
localrules:
    report,
    index,


# What renders a report (the library's own list, as dvc.yaml's report stages have it): editing a
# template or a module the report code imports re-renders every report and the index, and
# trains or evaluates nothing.
RENDERERS = [f"src/{path}" for path in rendering_code()]


rule report:
    input:
        metrics=lambda wc: sorted({str(RunDir(d).metrics) for _, d in row_runs(wc.table)}),
        data=PREPARED,
        code=RENDERERS,
        # Its labels, paper numbers and claims: an edit re-renders the report (as in dvc.yaml).
        table="params/tables/{table}.yaml",
    output:
        report="reports/{table}.md",
        # report(): what `snakemake --report report.html` shows, one folder per table
        page=report(
            "reports/{table}.html",
            caption="../report/table.rst",
            category=table_category,
            labels={"shows": "claims, verdicts, the paper's table beside ours"},
        ),
        metrics="reports/{table}.json",
        curves=report(
            "reports/{table}.png",
            caption="../report/curves.rst",
            category=table_category,
            labels={"shows": "training curves"},
        ),
        bars="reports/{table}.accuracy.csv",  # for dvc plots; the picture is accuracy.png
        bars_plot=report(
            "reports/{table}.accuracy.png",
            caption="../report/accuracy.rst",
            category=table_category,
            labels={"shows": "linear accuracy: paper vs ours"},
        ),
        runs="reports/{table}.runs.csv",  # one row per trial: what the verdicts are computed from
        # numbers only, and a CSV a quantity with a column a row: what `dvc metrics`/`plots` read
        numbers="reports/{table}.metrics.json",
        curve_tables=expand("reports/{{table}}.{quantity}.csv", quantity=CURVES),
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
        code=RENDERERS,
    output:
        index="reports/index.md",
        counts="reports/index.json",  # the counts, per table and study-wide (Holm)
        # Sorts first among the report's folders, before the tables' titles.
        page=report(
            "reports/index.html",
            caption="../report/index.rst",
            category="All tables",
            labels={"shows": "every claim with its verdict"},
        ),
        runs=report(
            "reports/runs.csv",
            caption="../report/runs.rst",
            category="All tables",
            labels={"shows": "every trial (CSV, downloads)"},
        ),
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
