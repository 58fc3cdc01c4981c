"""What a Snakemake run sets up or checks in its own process before planning (imported by
workflow/rules/common.smk; kept out of the .smk files because it touches the environment and
/proc)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from simsiam_lab.datasource import ENV_VAR
from simsiam_lab.track import check_tracking_uri


def config_error(config: dict, schema_path: str) -> str:
    """The config's first schema error in one line (Snakemake's `validate` prints the schema
    as well): the key, its value, what it must be and what it is for."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = jsonschema.Draft202012Validator(schema).iter_errors(config)
    error = jsonschema.exceptions.best_match(errors)
    if not error.absolute_path:  # an unknown or a missing key
        return f"config (params/pipeline.yaml and --config): {error.message}"
    key = ".".join(map(str, error.absolute_path))
    what = schema["properties"].get(str(error.absolute_path[0]), {}).get("description")
    return (
        f"config {key} = {error.instance!r} (params/pipeline.yaml or --config {key}=...): "
        f"{error.message}" + (f"; it is {what}" if what else "")
    )


def use_data_source(path: str) -> None:
    """--config data=PATH: the source every job reads (jobs inherit this environment); its
    fingerprint enters each run's config, so other data never reuses a run."""
    os.environ[ENV_VAR] = os.path.abspath(path)


def use_tracking_uri(uri: str) -> None:
    """--config tracking_uri=URI: the MLflow store of every job (a server's http:// address on
    a cluster, where SQLite on a shared file system is unsafe). A typo is refused here, before
    anything is submitted; whether the server answers is checked when jobs are about to run."""
    check_tracking_uri(uri)
    os.environ["MLFLOW_TRACKING_URI"] = uri


def _is_snakemake(argv: list[bytes]) -> bool:
    """`snakemake ...`, as its script runs under a venv's or conda's interpreter
    (`.../python3 .../bin/snakemake ...`), or `python -m snakemake ...`."""
    return any(os.path.basename(arg) == b"snakemake" for arg in argv[:3])


def other_snakemakes_here() -> list[int]:
    """Pids of other Snakemake processes working in this directory (from /proc; none where
    there is no /proc)."""
    mine, here = {os.getpid(), os.getppid()}, os.path.realpath(os.getcwd())
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            same_dir = os.path.realpath(proc / "cwd") == here
        except OSError:
            continue  # gone, or not ours to read
        if int(proc.name) not in mine and same_dir and _is_snakemake(argv):
            found.append(int(proc.name))
    return found


def warn_if_another_run_holds_the_lock() -> None:
    """Snakemake's own LockException suggests --unlock, which would let two runs write one
    directory; say first that a live run holds it."""
    if any(Path(".snakemake/locks").glob("*")) and (running := other_snakemakes_here()):
        print(
            f"Another Snakemake run (pid {running[0]}) is working in this directory and holds "
            "its lock: wait for it to finish rather than --unlock (that is for a killed run).",
            file=sys.stderr,
        )
