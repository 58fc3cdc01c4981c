rule pretrain:
    input:
        PREPARED,
    output:
        config=f"{RUNS}/{{run}}/config.yaml",
        checkpoint=f"{RUNS}/{{run}}/checkpoint.pt",
        history=f"{RUNS}/{{run}}/history.json",
        summary=f"{RUNS}/{{run}}/pretrain.json",
    conda:
        "../envs/simsiam.yaml"
    log:
        f"logs/{PROFILE}/pretrain/{{run}}.log",
    benchmark:
        f"logs/{PROFILE}/benchmark/pretrain/{{run}}.tsv"
    params:
        profile=PROFILE,
        out=lambda wc, output: os.path.dirname(output.summary),
    threads: THREADS
    resources:
        mem_mb=4000,
        gpu=1,  # --resources gpu=N: N pretrainings at once, each on its own GPU
    shell:
        "bash workflow/scripts/logged.sh {log}"
        " simsiam --threads {threads} pretrain --profile {params.profile}"
        " --config-hash {wildcards.run}"
        " --data {input} --out {params.out}"


rule evaluate:
    input:
        data=PREPARED,
        checkpoint=f"{RUNS}/{{run}}/checkpoint.pt",
        summary=f"{RUNS}/{{run}}/pretrain.json",
    output:
        f"{RUNS}/{{run}}/metrics.json",
    conda:
        "../envs/simsiam.yaml"
    log:
        f"logs/{PROFILE}/evaluate/{{run}}.log",
    benchmark:
        f"logs/{PROFILE}/benchmark/evaluate/{{run}}.tsv"
    params:
        run=lambda wc, output: os.path.dirname(output[0]),
    threads: THREADS
    resources:
        mem_mb=4000,
        gpu=1,
    shell:
        "bash workflow/scripts/logged.sh {log}"
        " simsiam --threads {threads} evaluate --run {params.run} --data {input.data}"
