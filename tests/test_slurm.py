"""The Slurm profile on a real Slurm: the README's one-node block (workflow/scripts/
slurm_cluster.py and the tracking server on PostgreSQL) runs the smoke §4.5 table through the queue
as printed; then a pretraining cancelled mid-run with scancel resumes from its state.pt."""

from __future__ import annotations

import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import readme
import yaml
from mlflow_writers import free_port
from project import copy_project

ROOT = Path(__file__).parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"
sys.path.insert(0, str(SCRIPTS))
import slurm_cluster  # noqa: E402  (workflow/scripts is no package)
import tracking_server  # noqa: E402

BLOCK = "slurm_cluster.py start"  # the README block's key in tests/readme.py
# squeue --states=all --format "%i %k %T": job id, comment (Snakemake's rule_<name>...), state
QUEUED = re.compile(r"^(\d+) rule_([a-z]+)(?:_wildcards_\S+)? ([A-Z]+)$", re.MULTILINE)


def _skip_without_slurm_or_postgres() -> None:
    if missing := slurm_cluster.missing_binaries():
        pytest.skip(f"Slurm's {', '.join(missing)} not installed ({slurm_cluster.INSTALL})")
    try:
        tracking_server.pg_bindir()
    except tracking_server.ServerError:
        pytest.skip("PostgreSQL's binaries are not installed (apt-get install postgresql)")


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=240
    )


def _stop(out: Path) -> str:
    """The block's two stops, as printed (the test runs them after its own checks)."""
    said = _script("tracking_server.py", "stop", "--root", str(out / "tracking")).stderr
    return said + _script("slurm_cluster.py", "stop", "--root", str(out / "slurm")).stderr


def _cluster_env(out: Path, port: int) -> dict[str, str]:
    """What the block's two exports set, for the commands the test runs after it."""
    return {
        "SLURM_CONF": str(out / "slurm" / "slurm.conf"),
        "PATH": f"{out / 'slurm' / 'bin'}:{readme.new_shell_env()['PATH']}",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
    }


def _queue(env: dict[str, str]) -> list[tuple[str, str, str]]:
    done = subprocess.run(
        ["squeue", "--states=all", "--format", "%i %k %T"],
        capture_output=True,
        text=True,
        env=readme.new_shell_env(**env),
        check=True,
    )
    return QUEUED.findall(done.stdout)


@pytest.mark.slow
def test_the_readme_s_one_node_slurm_block_queues_the_similarity_table_and_a_cancelled_run_resumes(
    tmp_path,
):
    from mlflow import MlflowClient

    _skip_without_slurm_or_postgres()
    project = copy_project(tmp_path / "project")
    readme.project_as_cloned(project)
    # Not under pytest's tmp_path: the postgres user (the database's, under root) cannot enter
    # it, and its long path may not fit a unix socket.
    out = Path(tempfile.mkdtemp(prefix="simsiam-slurm-"))
    out.chmod(0o755)
    port = free_port()
    try:
        done = readme.run(BLOCK, project, OUT=str(out), PORT=str(port))
        env = _cluster_env(out, port)

        # Through the queue: prepare, the 2 pretrainings and their evaluations; not the report.
        queued = QUEUED.findall(done.stdout)
        assert collections.Counter(rule for _, rule, _ in queued) == {
            "prepare": 1,
            "pretrain": 2,
            "evaluate": 2,
        }, done.stdout
        assert {state for _, _, state in queued} == {"COMPLETED"}
        # Each asked for what the smoke profile's resources say (params/profiles.yaml), as
        # Slurm's own job completion log records it: 1 CPU, 2000 MB, 10 minutes.
        asked = {
            fields["JobId"]: (fields["ProcCnt"], fields["TimeLimit"], fields["Tres"])
            for line in (out / "slurm" / "jobcomp.log").read_text().splitlines()
            for fields in [dict(f.split("=", 1) for f in line.split() if "=" in f)]
        }
        assert {asked[job] for job, _, _ in queued} == {
            ("1", "10", "cpu=1,mem=2000M,node=1,billing=1")
        }
        assert "Finished jobid" in done.stderr and "(Rule: report)" in done.stderr
        report = (project / "reports" / "similarity.md").read_text()
        assert "Similarity function" in report

        # In the server: every run, each epoch's metrics and each step's loss, the artifacts.
        client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
        experiment = client.get_experiment_by_name("simsiam-smoke")
        found = client.search_runs([experiment.experiment_id])
        runs = [r for r in found if "report" not in r.data.tags]  # the trainings
        assert [r.data.tags["report"] for r in found if r not in runs] == ["similarity"]
        assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
        for run in runs:
            run_id = run.info.run_id
            assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2]
            steps = [m.step for m in client.get_metric_history(run_id, "step_loss")]
            assert sorted(steps) == list(range(1, len(steps) + 1)) and len(steps) >= 2
            assert "linear_acc" in run.data.metrics
            logged = {a.path for a in client.list_artifacts(run_id)}
            assert {"config.yaml", "history.json", "metrics.json"} <= logged

        _cancel_and_resume(project, env, client)
    finally:
        stopped = _stop(out)
        shutil.rmtree(out, ignore_errors=True)
    for daemon in ("mlflow server", "PostgreSQL", "slurmd", "slurmctld", "munged"):
        assert f"{daemon}: stopped" in stopped


def _cancel_and_resume(project: Path, env: dict[str, str], client) -> None:
    """One new, longer pretraining (§4.5's cross-entropy row at 6 epochs, in this copy only),
    cancelled by scancel once it saved its state.pt, then the same command again."""
    table = project / "params" / "tables" / "similarity.yaml"
    similarity = yaml.safe_load(table.read_text())
    similarity["rows"]["cross-entropy"]["overrides"]["optim"] = {"epochs": 6}
    table.write_text(yaml.safe_dump(similarity, sort_keys=False))
    command = [
        "bash",
        "-c",
        ". .venv/bin/activate && export SIMSIAM_DATA=$PWD/../shared/datasets/cifar10-jpeg.tar.gz"
        " && snakemake reports/similarity.md --workflow-profile workflow/profiles/slurm"
        " --slurm-status-command squeue --slurm-init-seconds-before-status-checks 5"
        " --config profile=smoke"
        f" tracking_uri={env['MLFLOW_TRACKING_URI']}",
    ]
    before = set((project / "results" / "smoke" / "runs").iterdir())
    first = subprocess.Popen(
        command,
        cwd=project,
        env=readme.new_shell_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (states := [r / "state.pt" for r in _new_runs(project, before)]):
        assert first.poll() is None and time.monotonic() < deadline, "no state.pt was saved"
        time.sleep(0.2)
    (job,) = [i for i, rule, state in _queue(env) if rule == "pretrain" and state == "RUNNING"]
    subprocess.run(["scancel", job], env=readme.new_shell_env(**env), check=True)
    output = first.communicate(timeout=300)[0]
    assert first.returncode != 0, output
    (state,) = states
    assert state.is_file(), "the cancelled run's state.pt is gone"
    cancelled = [s for i, rule, s in _queue(env) if i == job]
    assert cancelled == ["CANCELLED"], cancelled

    again = subprocess.run(
        command,
        cwd=project,
        env=readme.new_shell_env(**env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    run = state.parent
    assert not state.exists()
    journal = (run / "pretrain.log").read_text()
    assert "started, MLflow run" in journal and "resumed from results/smoke/runs/" in journal
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history if "loss" in r] == [1, 2, 3, 4, 5, 6]
    run_id = json.loads((run / "pretrain.json").read_text())["mlflow_run_id"]
    # One MLflow run over both attempts, each epoch logged once.
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2, 3, 4, 5, 6]


def _new_runs(project: Path, before: set[Path]) -> list[Path]:
    """Run directories made since `before` that hold a state.pt (an epoch saved)."""
    runs = (project / "results" / "smoke" / "runs").iterdir()
    return [r for r in runs if r not in before and (r / "state.pt").is_file()]


def test_the_cluster_script_names_the_packages_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(slurm_cluster, "_find", lambda name: None)
    assert slurm_cluster.main(["start", "--root", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "slurm_cluster.py start: munged, mungekey, slurmctld, slurmd, sbatch, srun, squeue, "
        "sinfo, scancel not found: apt-get install slurmctld slurmd slurm-client munge"
    )


def test_the_node_offers_this_machine_s_cpus_and_most_of_its_memory(tmp_path):
    conf = slurm_cluster.slurm_conf(tmp_path, "alice", ("node1", 16, 64000))
    assert "NodeName=node1 NodeAddr=127.0.0.1 CPUs=16 RealMemory=57600 " in conf
    assert f"JobCompLoc={tmp_path / 'jobcomp.log'}" in conf and "SlurmUser=alice" in conf
    ports = [line for line in conf.splitlines() if line.startswith(("SlurmctldPort", "SlurmdPort"))]
    assert len(ports) == 2 and ports[0].split("=")[1] != ports[1].split("=")[1]
