"""DVC on a fresh clone, without training: what `dvc repro` would run, the profile switch, and one
training per distinct config in both engines. (tests/test_pipeline.py runs the DVC smoke DAG.)"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from project import copy_project

from simsiam_lab.study import Params

ROOT = Path(__file__).parents[1]
ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.environ.get("SIMSIAM_DATA") or ARCHIVE.is_file()),
        reason="needs the CIFAR-10 archive (SIMSIAM_DATA or ../shared/datasets)",
    ),
]


@pytest.fixture
def clone(tmp_path) -> Path:
    """The checkout's DAG as committed: a fresh clone, nothing built."""
    project = copy_project(tmp_path / "project")
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run([*git, "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "clone"], cwd=project, check=True)
    return project


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    # Absolute: CI's is relative to the checkout, and these run in a copy elsewhere.
    env["SIMSIAM_DATA"] = str(Path(env.get("SIMSIAM_DATA") or ARCHIVE).resolve())
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def _stages(dry_run: str, kind: str) -> list[str]:
    return re.findall(rf"Running stage '{kind}@([^']+)'", dry_run)


def _dry(clone: Path) -> str:
    # Plain `dvc repro --dry` fails on a fresh clone (see the xfail below); forcing the stages
    # downstream of the always-run `source` skips the run-cache lookup that fails, and on a clone
    # every stage runs anyway.
    result = _run(["dvc", "repro", "--dry", "--force-downstream"], clone)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_fresh_clone_dry_run_lists_one_training_per_config_as_snakemake(clone: Path):
    params = Params(clone / "params")
    dvc = _stages(_dry(clone), "pretrain")
    plan = params.plan("cpu", params.table_names(), read_data=False)
    assert len(dvc) == len(set(dvc)) == len(plan)  # 67 at cpu: 70 before, by override text

    snakemake = _run(["snakemake", "-n", "--cores", "1", "all", "--config", "profile=cpu"], clone)
    assert snakemake.returncode == 0, snakemake.stdout + snakemake.stderr
    jobs = re.search(r"^pretrain\s+(\d+)$", snakemake.stdout, re.MULTILINE)
    assert jobs and int(jobs.group(1)) == len(dvc)
    # A config several tables share trains once, under the name of its first trial.
    assert "table3-c-s0" not in dvc and "table2-b64-s0" not in dvc


@pytest.mark.xfail(
    strict=True,
    reason="DVC 3.67.1: a dry run hashes a dependency that an earlier stage has not made yet "
    "(dvc/stage/cache.py _can_hash), so it fails on any two-stage pipeline; when this passes, "
    "the README's `--force-downstream` advice can go",
)
def test_a_plain_dry_run_works_on_a_fresh_clone(clone: Path):
    result = _run(["dvc", "repro", "--dry"], clone)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_profile_switch_runs_exactly_that_profile_s_trials(clone: Path):
    # -S cannot change DVC's stage list: the first stage stops the run and names the fix.
    refused = _run(["dvc", "exp", "run", "-S", "params/pipeline.yaml:profile=smoke"], clone)
    assert refused.returncode != 0
    fix = "python workflow/scripts/dvc_yaml.py --profile smoke"
    assert "dvc.yaml lists the trials of profile cpu, but params/pipeline.yaml asks for smoke" in (
        refused.stdout + refused.stderr
    )
    assert fix in refused.stdout + refused.stderr
    assert "Running stage 'pretrain@" not in refused.stdout
    _run(["git", "checkout", "params/pipeline.yaml"], clone)

    switched = _run([sys.executable, "workflow/scripts/dvc_yaml.py", "--profile", "smoke"], clone)
    assert switched.returncode == 0, switched.stderr
    assert "profile: smoke" in (clone / "params" / "pipeline.yaml").read_text()
    params = Params(clone / "params")
    planned = params.plan("smoke", params.table_names(), read_data=False)
    dry = _dry(clone)
    assert len(_stages(dry, "pretrain")) == len(planned) == 27
    assert "--profile smoke" in dry and "--profile cpu" not in dry


def test_a_stale_dvc_yaml_stops_the_run_with_the_command_that_regenerates_it(clone: Path):
    table = clone / "params" / "tables" / "table3.yaml"
    new_row = "rows:\n  e: {overrides: {optim: {base_lr: 0.07}}, paper: 1.0}\n"  # a new config
    table.write_text(table.read_text().replace("rows:\n", new_row))
    result = _run(["dvc", "repro", "source"], clone)
    assert result.returncode != 0
    assert (
        "dvc.yaml is stale (params/ or the library's imports changed); regenerate: "
        "python workflow/scripts/dvc_yaml.py" in (result.stdout + result.stderr)
    )
