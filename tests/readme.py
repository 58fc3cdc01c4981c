"""The README's command blocks, read from README.md itself, and how a test runs each one: in a new
shell after the set-up, as a newcomer pastes it, made smoke-sized where the block is larger.

Every ```sh block of the README has an entry in SIZED: the words that make it small enough for
CI (each must occur in the block, so the README cannot drift from what is run) and the test that
runs it. test_readme.py checks that no block lacks one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import e2e
import pytest

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
# The set-up at the head of the README's first commands: a venv, the package installed into it.
SETUP = re.compile(
    r"python3 -m venv \.venv && \. \.venv/bin/activate && pip install -e '\.\[([\w,]+)\]' && "
)
SMOKE = "--config profile=smoke threads=1 tables=[table3,similarity]"  # test_pipeline's smoke run


@cache
def blocks() -> list[str]:
    """Each ```sh block of the README, its continued lines joined."""
    found = re.findall(r"^```sh\n(.*?)^```$", README.read_text(), re.MULTILINE | re.DOTALL)
    return [block.replace("\\\n", "") for block in found]


@dataclass(frozen=True)
class Sized:
    """How a test runs one README block: `subs` replaces each (README's words, smaller words),
    in order, after SETUP is taken off where `after_setup`; `test` is the test function
    (module::name) that runs it."""

    test: str
    subs: tuple[tuple[str, str], ...] = ()
    after_setup: bool = False  # the block starts with SETUP, which this pytest's venv has done


# Keyed by words that occur in exactly one block.
SIZED: dict[str, Sized] = {
    # The main job: at smoke. The set-up (venv, install) is what this pytest runs in.
    "snakemake --cores all reports/table3.md\n": Sized(
        "test_pipeline::test_the_readme_s_snakemake_blocks_run_as_printed_in_a_new_shell",
        (("reports/table3.md\n", f"reports/table3.md {SMOKE}\n"),),
        after_setup=True,
    ),
    ". .venv/bin/activate && export SIMSIAM_DATA": Sized(
        "test_pipeline::test_the_readme_s_snakemake_blocks_run_as_printed_in_a_new_shell"
    ),
    # The test command: .ci/run runs it whole (test_readme checks); here, one small test file.
    "&& pytest\n": Sized(
        "test_readme::test_the_readme_s_test_command_runs_in_a_new_shell",
        (("&& pytest\n", "&& pytest -n 0 -p no:cacheprovider tests/test_loss.py\n"),),
        after_setup=True,
    ),
    "snakemake --cores all all  ": Sized(
        "test_pipeline::test_the_readme_s_snakemake_blocks_run_as_printed_in_a_new_shell",
        (("all all ", f"all all {SMOKE} "), ("report.html all ", f"report.html all {SMOKE} ")),
    ),
    "--config profile=smoke  # targets before --config": Sized(
        "test_pipeline::test_the_readme_s_snakemake_blocks_run_as_printed_in_a_new_shell"
    ),
    # Your own images: 8 and 67 pretrainings of the cpu network, so only planned (-n).
    "reports/figure2.md --config profile=folder": Sized(
        "test_pipeline::test_the_readme_s_snakemake_blocks_run_as_printed_in_a_new_shell",
        (("snakemake ", "snakemake -n "), ("/path/to/flowers.tar.gz", "$FLOWERS")),
    ),
    "all --config profile=folder": Sized(
        "test_pipeline::test_the_readme_s_snakemake_blocks_run_as_printed_in_a_new_shell",
        (("snakemake ", "snakemake -n "), ("/path/to/flowers.tar.gz", "$FLOWERS")),
    ),
    # ImageNet's ResNet-50 runs: planned (-n) on a generated tree of its 100 classes.
    "profile=imagenet100": Sized(
        "test_pipeline::test_the_readme_s_snakemake_blocks_run_as_printed_in_a_new_shell",
        (("snakemake ", "snakemake -n "), ("/path/to/imagenet", "$IMAGENET")),
    ),
    # The benchmark: the install checked offline against this pytest's venv; the report
    # rewritten from its results instead of --quick's 10 minutes of measuring (test_benchmarks
    # measures each section small); gpu.sh as printed (it refuses a machine without CUDA).
    "python benchmarks/run.py --quick": Sized(
        "test_readme::test_the_readme_s_benchmark_block_runs_in_a_new_shell",
        (
            (
                "pip install -e '.[bench]'",
                "pip install --dry-run --no-index --no-build-isolation -e '.[bench]'",
            ),
            ("run.py --quick", "run.py --render"),
            (
                "bash benchmarks/gpu.sh  ",
                "{ bash benchmarks/gpu.sh 2> $OUT/gpu.err || test $? = 1; }  ",
            ),
            ("job_startup.py  ", "job_startup.py --files 2000 --archive-gb 0.01 --dir $OUT  "),
        ),
    ),
    # One run over several processes: two CPU processes at smoke.
    "torchrun --nproc_per_node 4": Sized(
        "test_pipeline::test_the_readme_s_snakemake_blocks_run_as_printed_in_a_new_shell",
        (("cifar10", "smoke"), ("--nproc_per_node 4", "--nproc_per_node 2")),
    ),
    # A real cluster's block: its cifar10 study planned (-n) against the tracking server on a
    # free port (the next block queues the smoke Table 3 on a one-node Slurm).
    "tracking_server.py start --root /shared": Sized(
        "test_tracking_server::test_the_readme_s_cluster_block_runs_in_a_new_shell",
        (
            ("/shared/simsiam-tracking", "$OUT/tracking"),
            ("--host 0.0.0.0", "--host 127.0.0.1 --port $PORT"),
            ("snakemake all --workflow-profile workflow/profiles/slurm ", "snakemake -n all "),
            ("HOST:5000", "127.0.0.1:$PORT"),
        ),
    ),
    # Slurm on this machine, as printed, in a temporary folder and on a free port; its two
    # stops run after the test's checks of the queue and the server.
    "slurm_cluster.py start": Sized(
        "test_slurm::test_the_readme_s_one_node_slurm_block_queues_the_similarity_table_and_a_"
        "cancelled_run_resumes",
        (
            ("python workflow/scripts/tracking_server.py stop --root /tmp/simsiam-tracking\n", ""),
            ("python workflow/scripts/slurm_cluster.py stop --root /tmp/simsiam-slurm\n", ""),
            ("/tmp/simsiam-slurm", "$OUT/slurm"),
            ("--root /tmp/simsiam-tracking)", "--root $OUT/tracking --port $PORT)"),
        ),
    ),
    # After a kill -9 of Snakemake: the killed command's target at smoke ($TARGET).
    "--rerun-incomplete": Sized(
        "test_pipeline::test_a_killed_engine_s_training_stops_with_it_and_resumes_once",
        (("reports/table3.md --rerun", "$TARGET --config profile=smoke threads=1 --rerun"),),
    ),
    # DVC, on test_pipeline_dvc's smoke project: `dvc repro` as one table (Table 3).
    "dvc repro    ": Sized(
        "test_pipeline_dvc::test_dvc_repro_smoke_table3",
        (("dvc repro    ", "dvc repro report-table3    "),),
    ),
    "dvc exp run -n lin6": Sized("test_pipeline_dvc::test_dvc_repro_smoke_table3"),
    # A new table, written and built as printed (already smoke-sized).
    "cat > params/tables/projector.yaml": Sized(
        "test_readme::test_the_readme_s_new_table_block_builds_its_report_in_a_new_shell"
    ),
    # The next look, as printed, on the committed cpu reports: a dry run, it trains nothing.
    "simsiam seeds --profile cpu --dry-run": Sized(
        "test_readme::test_the_readme_s_next_look_block_runs_in_a_new_shell"
    ),
    "mlflow ui --backend-store-uri": Sized(
        "test_pipeline::test_mlflow_ui_shows_table3_runs_and_their_knn",
        (("--port 5000", "--port $PORT"),),
    ),
}


def sized(key: str) -> str:
    """The README block holding `key`, made smoke-sized by its entry's substitutions."""
    (block,) = [b for b in blocks() if key in b]
    entry = SIZED[key]
    if entry.after_setup:
        assert SETUP.search(block), (key, "the set-up")
        block = SETUP.sub("", block)
    for old, new in entry.subs:
        assert old in block, (key, old)
        block = block.replace(old, new)
    return block


def new_shell_env(**extra: str) -> dict[str, str]:
    """A new login's environment: no venv on PATH, no SIMSIAM_DATA, no MLflow settings."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin]
    keep = ("HOME", "USER", "LANG", "TMPDIR", "TERM")
    return (
        {k: os.environ[k] for k in keep if k in os.environ}
        | {"PATH": os.pathsep.join(path)}
        | extra
    )


def project_as_cloned(project: Path) -> None:
    """Lay a project copy out as a clone is: its venv at .venv (this pytest's), the CIFAR-10
    archive at ../shared/datasets/ (the README's path)."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("the README's commands activate .venv: run pytest from the README's venv")
    if not (project / ".venv").exists():
        (project / ".venv").symlink_to(sys.prefix)
    archive = project.parent / "shared" / "datasets" / e2e.ARCHIVE.name
    if not archive.exists():
        archive.parent.mkdir(parents=True, exist_ok=True)
        archive.symlink_to(e2e.env()["SIMSIAM_DATA"])  # the tests' data, resolved


def new_shell() -> str:
    """The README's line for a new shell (the venv, SIMSIAM_DATA), before every block."""
    (line,) = [b for b in blocks() if b.startswith(". .venv/bin/activate")]
    return f"set -eo pipefail\n{line}"


def script(key: str) -> str:
    """The README's new-shell line, then the sized block: what bash runs for `key`."""
    return new_shell() + sized(key)


def run(key: str, project: Path, **extra: str) -> subprocess.CompletedProcess:
    """The README block `key`, sized, in a new shell in `project`; asserts that it exits 0."""
    text = script(key)
    result = subprocess.run(
        ["bash", "-c", text],
        cwd=project,
        env=new_shell_env(**extra),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, (
        f"README block {key!r} failed:\n{text}\n{result.stdout}\n{result.stderr}"
    )
    return result
