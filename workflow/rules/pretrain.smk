rule pretrain:
    input:
        PREPARED,
    output:
        config=str(RUN.config),
        checkpoint=str(RUN.checkpoint),
        history=str(RUN.history),
        summary=str(RUN.summary),
    conda:
        "../envs/simsiam.yaml"
    log:
        f"logs/{PROFILE}/pretrain/{{run}}.log",
    benchmark:
        f"logs/{PROFILE}/benchmark/pretrain/{{run}}.tsv"
    params:
        profile=PROFILE,
        out=lambda wc, output: os.path.dirname(output.summary),
        # Not the run's identity: a function of the output, which Snakemake's params trigger
        # skips, so switching the MLflow artifact on or off retrains nothing.
        encoder_artifact=lambda wc, output: str(config["encoder_artifact"]).lower(),
        resolved=handed_over,
    threads: THREADS["pretrain"]
    resources:
        mem_mb=RESOURCES["pretrain"]["mem_mb"],
        runtime=RESOURCES["pretrain"]["runtime"],
        gpu=RESOURCES["pretrain"]["gpu"],  # --resources gpu=N: N at once, each on its own GPU
    shell:
        "bash workflow/scripts/logged.sh {log}"
        " simsiam --threads {threads} pretrain --profile {params.profile}"
        " --config-hash {wildcards.run} --resolved {params.resolved:q} --engine snakemake"
        " --encoder-artifact {params.encoder_artifact}"
        " --data {input} --out {params.out}"


rule evaluate:
    input:
        *map(str, RUN.evaluation_inputs()),
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
        profile=PROFILE,
        run=lambda wc, output: os.path.dirname(output[0]),
        # Evaluation settings are not part of a run's hash: changing them reruns this job only.
        settings=lambda wc: EVALUATION_OF[wc.run],
        settings_json=settings_json,
    threads: THREADS["evaluate"]
    resources:
        mem_mb=RESOURCES["evaluate"]["mem_mb"],
        runtime=RESOURCES["evaluate"]["runtime"],
        gpu=RESOURCES["evaluate"]["gpu"],
    shell:
        "bash workflow/scripts/logged.sh {log}"
        " simsiam --threads {threads} evaluate --profile {params.profile} --run {params.run}"
        " --settings {params.settings_json:q} --data {input.data}"
