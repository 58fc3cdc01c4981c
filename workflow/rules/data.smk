rule prepare:
    # No input: PREPARED's name holds the source's and the class list's fingerprints, so other
    # data, or an edited list, is prepared into a new directory.
    output:
        directory(PREPARED),
    conda:
        "../envs/simsiam.yaml"
    log:
        f"logs/{PROFILE}/prepare.log",
    benchmark:
        f"logs/{PROFILE}/benchmark/prepare.tsv"
    params:
        profile=PROFILE,
    threads: THREADS["prepare"]
    resources:
        mem_mb=RESOURCES["prepare"]["mem_mb"],
        runtime=RESOURCES["prepare"]["runtime"],
    shell:
        "bash workflow/scripts/logged.sh {log}"
        " simsiam prepare --profile {params.profile} --out {output}"
