rule report:
    input:
        metrics=lambda wc: sorted({f"{d}/metrics.json" for _, d in row_runs(wc.table)}),
        data=PREPARED,
    output:
        report="reports/{table}.md",
        metrics="reports/{table}.json",
        curves="reports/{table}.png",
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
        expand("reports/{table}.json", table=TABLES),
    output:
        "reports/index.md",
    conda:
        "../envs/simsiam.yaml"
    log:
        f"logs/{PROFILE}/report/index.log",
    benchmark:
        f"logs/{PROFILE}/benchmark/index.tsv"
    shell:
        "bash workflow/scripts/logged.sh {log} simsiam index {input} --out {output}"
