# Seconds-long: on a cluster they run beside Snakemake rather than wait in the queue.
localrules:
    report,
    index,
    next_look,


# What renders a report (the library's own list, as dvc.yaml's report stages have it): editing a
# template or a module the report code imports re-renders every report and the index, and
# trains or evaluates nothing.
RENDERERS = [f"src/{path}" for path in rendering_code()]


# A table's files, by the wildcard, and the index's (the library declares their names).
REPORT = ReportFiles.of("{table}")
INDEX = IndexFiles.of()


rule report:
    input:
        metrics=lambda wc: sorted({str(RunDir(d).metrics) for _, d in row_runs(wc.table)}),
        data=PREPARED,
        code=RENDERERS,
        # Its labels, paper numbers and claims: an edit re-renders the report (as in dvc.yaml).
        table="params/tables/{table}.yaml",
    output:
        report=str(REPORT.page),
        # report(): what `snakemake --report report.html` shows, one folder per table
        page=report(
            str(REPORT.html),
            caption="../report/table.rst",
            category=table_category,
            labels={"shows": "claims, verdicts, the paper's table beside ours"},
        ),
        summary=str(REPORT.summary),
        curves=report(
            str(REPORT.curves),
            caption="../report/curves.rst",
            category=table_category,
            labels={"shows": "training curves"},
        ),
        bars=str(REPORT.accuracy),  # for dvc plots; the picture is accuracy_plot
        bars_plot=report(
            str(REPORT.accuracy_plot),
            caption="../report/accuracy.rst",
            category=table_category,
            labels={"shows": "linear accuracy: paper vs ours"},
        ),
        runs=str(REPORT.runs),  # one row per trial: what the verdicts are computed from
        # numbers only, and a CSV a quantity with a column a row: what `dvc metrics`/`plots` read
        numbers=str(REPORT.metrics),
        curve_tables=list(map(str, REPORT.curve_tables)),
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
        [str(path) for table in TABLES for path in ReportFiles.of(table).index_inputs],
        code=RENDERERS,
    output:
        index=str(INDEX.page),
        counts=str(INDEX.counts),  # the counts, per table and study-wide (Holm)
        # Sorts first among the report's folders, before the tables' titles.
        page=report(
            str(INDEX.html),
            caption="../report/index.rst",
            category="All tables",
            labels={"shows": "every claim with its verdict"},
        ),
        runs=report(
            str(INDEX.runs),
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
        summaries=[str(ReportFiles.of(table).summary) for table in TABLES],
    shell:
        "bash workflow/scripts/logged.sh {log} simsiam index"
        " {params.summaries} --out {output.index}"


rule next_look:
    # The sequential study's next look (`snakemake next_look`): from the tables' reports, the
    # seeds their waiting claims need, written to params/seeds/PROFILE.yaml. That file is read
    # when a plan is made, so the next `snakemake` run trains them (dvc.yaml: regenerate).
    input:
        reports=[str(ReportFiles.of(table).summary) for table in TABLES],
    output:
        f"logs/{PROFILE}/next-look.txt",
    conda:
        "../envs/simsiam.yaml"
    log:
        f"logs/{PROFILE}/next-look.log",
    params:
        profile=PROFILE,
        reports=lambda wc, input: os.path.dirname(input.reports[0]),
    shell:
        "bash workflow/scripts/logged.sh {log}"
        " simsiam seeds --profile {params.profile} --reports {params.reports} && cp {log} {output}"
