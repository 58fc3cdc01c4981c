"""The cluster's tracking: an MLflow server on PostgreSQL, started and stopped by
workflow/scripts/tracking_server.py, takes eight writers at once and loses nothing; and the
pipeline's `tracking_uri` reaches every job as MLFLOW_TRACKING_URI."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import readme
from mlflow_writers import WRITERS, assert_nothing_lost, free_port, run_writers
from project import copy_project

from simsiam_lab.track import TrackingError, check_server

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "workflow" / "scripts" / "tracking_server.py"
sys.path.insert(0, str(SCRIPT.parent))
import run_env  # noqa: E402  (workflow/scripts is no package)
import tracking_server  # noqa: E402

STEPS = 50


def _postgres_installed() -> bool:
    try:
        tracking_server.pg_bindir()
    except tracking_server.ServerError:
        return False
    return True


def _server(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=240,
    )


def _assert_private(root: Path) -> None:
    """What a shared node needs: artifacts and the socket for the owner alone, and a database
    that refuses TCP however it is started (no `trust` line but the socket's)."""
    for private in ("artifacts", "pgsocket", "pgdata"):
        assert (root / private).stat().st_mode & 0o077 == 0, private
    hba = [
        line.split()
        for line in (root / "pgdata" / "pg_hba.conf").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert {fields[-1] for fields in hba if fields[0] == "host"} == {"reject"}, hba
    assert {fields[-1] for fields in hba if fields[0] == "local"} == {"trust"}, hba
    conf = (root / "pgdata" / "postgresql.conf").read_text()
    assert "listen_addresses = ''" in conf


@pytest.fixture
def server() -> Iterator[tuple[str, Path]]:
    """A fresh server (its URI and root) for the test, stopped after it whatever happened."""
    if not _postgres_installed():
        pytest.skip("PostgreSQL's binaries are not installed (apt-get install postgresql)")
    # Not under pytest's tmp_path: that lies in a 0700 directory the postgres user (who runs
    # the database when tests run as root) cannot enter, and its long path may not fit a socket.
    root = Path(tempfile.mkdtemp(prefix="simsiam-pg-"))
    root.chmod(0o755)
    started = _server(root, "start", "--port", str(free_port()), "--workers", "2")
    try:
        assert started.returncode == 0, started.stderr
        (line,) = started.stdout.splitlines()  # the one line to export
        assert line.startswith("MLFLOW_TRACKING_URI=http://127.0.0.1:")
        _assert_private(root)
        yield line.partition("=")[2], root
    finally:
        stopped = _server(root, "stop")
        shutil.rmtree(root, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
    assert "mlflow server: stopped" in stopped.stderr and "PostgreSQL: stopped" in stopped.stderr


@pytest.mark.slow
def test_eight_writers_through_the_server_lose_no_run_metric_or_artifact(server, tmp_path):
    from mlflow import MlflowClient

    uri, root = server
    # Fresh interpreters, as Snakemake's jobs are, forked from one that imported MLflow once:
    # eight imports at once would take most of the test's time on two cores.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["mlflow", "simsiam_lab.track", "mlflow_writers"])
    run_writers(ctx, uri, tmp_path, STEPS)

    runs = assert_nothing_lost(uri, STEPS)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("simsiam-test")
    # Left to the server, which proxies the artifacts into its root, not a path of the client's.
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    steps = artifacts = 0
    for run in runs:
        assert run.data.params == {"seed": run.data.tags["index"]}
        steps += sum(len(client.get_metric_history(run.info.run_id, k)) for k in ("loss", "z_std"))
        (listed,) = client.list_artifacts(run.info.run_id)
        assert listed.path == f"metrics-{run.data.tags['index']}.json"
        artifacts += 1
    stored = list((root / "artifacts").rglob("metrics-*.json"))
    print(f"{len(runs)} runs, {steps} metric steps, {artifacts} artifacts ({len(stored)} on disk)")
    assert (steps, artifacts, len(stored)) == (WRITERS * STEPS * 2, WRITERS, WRITERS)


@pytest.mark.slow  # PostgreSQL and the server started and stopped, the cifar10 study planned
def test_the_readme_s_cluster_block_runs_in_a_new_shell(tmp_path):
    if not _postgres_installed():
        pytest.skip("PostgreSQL's binaries are not installed (apt-get install postgresql)")
    project = copy_project(tmp_path / "project")
    readme.project_as_cloned(project)
    out = Path(tempfile.mkdtemp(prefix="simsiam-pg-"))  # as the server fixture's root
    out.chmod(0o755)
    try:
        done = readme.run(
            "tracking_server.py start --root /shared", project, OUT=str(out), PORT=str(free_port())
        )
    finally:
        _server(out / "tracking", "stop")  # where the block stopped before its own stop
        shutil.rmtree(out, ignore_errors=True)
    assert done.stdout.startswith("MLFLOW_TRACKING_URI=http://127.0.0.1:"), done.stdout
    assert "Job stats:" in done.stdout and "pretrain" in done.stdout
    assert "mlflow server: stopped" in done.stderr and "PostgreSQL: stopped" in done.stderr


def test_the_pipeline_tracking_uri_reaches_every_job(monkeypatch):
    # Set first, so that monkeypatch restores the environment the other tests see.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///before.db")
    run_env.use_tracking_uri("http://head-node:5000")  # what common.smk does with the key
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://head-node:5000"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("htp://head-node:5000", "unknown scheme 'htp'"),
        ("http://:5000", "no host"),
    ],
)
def test_a_mistyped_pipeline_tracking_uri_is_refused_while_planning(monkeypatch, uri, message):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///before.db")
    with pytest.raises(TrackingError, match=message):
        run_env.use_tracking_uri(uri)
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///before.db"


def test_a_server_that_does_not_answer_is_one_line():
    with pytest.raises(TrackingError, match=r"no MLflow server answers \(.+\); start it"):
        check_server(f"http://127.0.0.1:{free_port()}", timeout=5)


def test_postgresql_s_binaries_are_found_through_a_link_on_path(monkeypatch, tmp_path):
    real, linked = tmp_path / "pg" / "bin", tmp_path / "local"
    real.mkdir(parents=True)
    linked.mkdir()
    for name in tracking_server.BINARIES:
        (real / name).write_text("#!/bin/sh\n")
        (real / name).chmod(0o755)
    # as on an image that links only the server's binaries into /usr/local/bin, not psql
    for name in ("initdb", "pg_ctl"):
        (linked / name).symlink_to(real / name)
    monkeypatch.setattr(tracking_server, "DEBIAN_VERSIONS", tmp_path / "none")
    monkeypatch.setenv("PATH", str(linked))
    assert tracking_server.pg_bindir() == real


def test_the_server_names_the_package_to_install_when_postgresql_is_missing(
    monkeypatch, capsys, tmp_path
):
    monkeypatch.setattr(tracking_server, "DEBIAN_VERSIONS", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no pg_config
    assert tracking_server.main(["stop", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        "tracking_server.py stop: PostgreSQL's initdb, pg_ctl, psql not found together: "
        "apt-get install postgresql"
    )


def test_the_server_refuses_a_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(tracking_server.ServerError, match=f"port {port} .* is in use"):
            tracking_server.check_port_free("127.0.0.1", port)
