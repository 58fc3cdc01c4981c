# Each job reads its config from the plan the onstart handler wrote into its run directory
# (common.smk, write_plans): config.yaml, whose hash names the directory, and plan.json for
# pretraining; eval.json for evaluation, whose `settings` param reruns it when they change.
# --stop-with $PPID: the job's shell is Snakemake's child, so a job ends with a killed Snakemake
# (keeping state.pt) instead of training on beside the rerun.
rule pretrain:
    input:
        data=PREPARED,
    output:
        *map(str, RUN.trained()),
    conda:
        "../envs/simsiam.yaml"
    log:
        f"logs/{PROFILE}/pretrain/{{run}}.log",
    benchmark:
        f"logs/{PROFILE}/benchmark/pretrain/{{run}}.tsv"
    params:
        out=lambda wc, output: os.path.dirname(output[0]),
    threads: THREADS["pretrain"]
    resources:
        mem_mb=RESOURCES["pretrain"]["mem_mb"],
        runtime=RESOURCES["pretrain"]["runtime"],
        gpu=RESOURCES["pretrain"]["gpu"],  # --resources gpu=N: N at once, each on its own GPU
    shell:
        "bash workflow/scripts/logged.sh {log}"
        " simsiam --threads {threads} pretrain --out {params.out} --data {input.data}"
        " --engine snakemake --stop-with $PPID"


rule evaluate:
    input:
        *map(str, RUN.trained()),
        data=PREPARED,
    output:
        str(RUN.metrics),
    conda:
        "../envs/simsiam.yaml"
    log:
        f"logs/{PROFILE}/evaluate/{{run}}.log",
    benchmark:
        f"logs/{PROFILE}/benchmark/evaluate/{{run}}.tsv"
    params:
        run=lambda wc, output: os.path.dirname(output[0]),
        # Not a run's hash: changing them reruns this job only (it reads them from eval.json).
        settings=lambda wc: EVALUATION_OF[wc.run],
    threads: THREADS["evaluate"]
    resources:
        mem_mb=RESOURCES["evaluate"]["mem_mb"],
        runtime=RESOURCES["evaluate"]["runtime"],
        gpu=RESOURCES["evaluate"]["gpu"],
    shell:
        "bash workflow/scripts/logged.sh {log}"
        " simsiam --threads {threads} evaluate --run {params.run} --data {input.data}"
        " --stop-with $PPID"
