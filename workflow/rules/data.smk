rule prepare:
    input:
        # data.class_list's file: editing the list re-prepares.
        class_list=PROFILE_DATA["class_list"] or [],
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
        # The source's content fingerprint: pointing SIMSIAM_DATA (or data.source) at other
        # data changes it, so Snakemake re-prepares (and the runs' hashes change with it).
        source_sha256=PROFILE_DATA["source_sha256"],
    shell:
        "bash workflow/scripts/logged.sh {log}"
        " simsiam prepare --profile {params.profile} --out {output}"
