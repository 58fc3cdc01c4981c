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
import urllib.error
import urllib.request
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


def _assert_private(root: Path, local: str = "trust") -> None:
    """What a shared node needs: artifacts and the socket for the owner alone, and a database
    that refuses TCP however it is started (no `trust` line but the socket's, and with --secure
    not even that)."""
    for private in ("artifacts", "pgsocket", "pgdata"):
        assert (root / private).stat().st_mode & 0o077 == 0, private
    hba = [
        line.split()
        for line in (root / "pgdata" / "pg_hba.conf").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert {fields[-1] for fields in hba if fields[0] == "host"} == {"reject"}, hba
    assert {fields[-1] for fields in hba if fields[0] == "local"} == {local}, hba
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


@pytest.mark.slow  # PostgreSQL and the server started with --secure, and stopped
def test_a_secure_server_asks_a_login_and_the_database_a_password_shown_nowhere(monkeypatch):
    from mlflow import MlflowClient

    if not _postgres_installed():
        pytest.skip("PostgreSQL's binaries are not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="simsiam-pg-"))  # as the server fixture's
    root.chmod(0o755)
    started = _server(root, "start", "--port", str(free_port()), "--workers", "2", "--secure")
    try:
        assert started.returncode == 0, started.stderr
        (line,) = started.stdout.splitlines()
        uri = line.partition("=")[2]
        assert started.stderr.splitlines()[-1].endswith(f"export $(cat {root}/credentials)")
        login = dict(var.split("=", 1) for var in (root / "credentials").read_text().split())
        assert sorted(login) == ["MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_USERNAME"]
        pg_password = (root / "pgpass").read_text().strip().rsplit(":", 1)[1]
        passwords = (login["MLFLOW_TRACKING_PASSWORD"], pg_password)

        _assert_private(root, local="scram-sha-256")
        for secret in ("credentials", "pgpass", "basic_auth.ini"):
            assert (root / secret).stat().st_mode & 0o777 == 0o600, secret
        # 0700; 0711 when run as root, for the postgres user to reach pgdata/ through it
        mode = root.stat().st_mode & 0o777
        assert mode == (0o711 if os.geteuid() == 0 else 0o700), oct(mode)

        # No login, no REST API; /health (the script's own check) stays open.
        for path in ("/api/2.0/mlflow/experiments/search?max_results=1", "/health"):
            try:
                with urllib.request.urlopen(uri + path, timeout=30) as response:
                    status = response.status
            except urllib.error.HTTPError as err:
                status = err.code
            assert status == (200 if path == "/health" else 401), path
        for name, value in login.items():  # as `export $(cat ROOT/credentials)` sets them
            monkeypatch.setenv(name, value)
        client = MlflowClient(tracking_uri=uri)
        run = client.create_run(client.create_experiment("simsiam-secure"))
        client.log_metric(run.info.run_id, "loss", 0.25, step=3)
        (logged,) = client.get_metric_history(run.info.run_id, "loss")
        assert (logged.value, logged.step) == (0.25, 3)

        # The database asks the password: refused without the password file, let in with it.
        bindir = tracking_server.pg_bindir()
        psql = [str(bindir / "psql"), f"--host={root}/pgsocket", "--username=postgres"]
        psql += ["--dbname=mlflow", "--no-password", "--tuples-only", "--command=SELECT 1"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PGPASS")}
        refused, let_in = (
            subprocess.run(
                tracking_server.as_postgres(psql),
                capture_output=True,
                text=True,
                cwd="/",
                env={**env, "PGPASSFILE": pgpass},
            )
            for pgpass in ("/nonexistent", f"{root}/pgpass")
        )
        assert refused.returncode != 0 and "no password supplied" in refused.stderr, refused
        assert let_in.stdout.strip() == "1", let_in.stderr

        # Every user of the node reads every command line: no password in any, nor in the logs.
        shown = {"start's stdout": started.stdout, "start's stderr": started.stderr}
        shown |= {log: (root / log).read_text() for log in ("mlflow.log", "postgres.log")}
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                shown[str(cmdline)] = cmdline.read_bytes().decode(errors="replace")
            except OSError:
                continue  # gone meanwhile
        server_cmdline = shown[f"/proc/{int((root / 'mlflow.pid').read_text())}/cmdline"]
        assert (
            "--app-name=basic-auth" in server_cmdline
            and "postgresql://postgres@/" in server_cmdline
        )
        assert [where for where, text in shown.items() if any(p in text for p in passwords)] == []

        assert _server(root, "status").returncode == 0
        refused = _server(root, "start", "--port", str(free_port()))  # without --secure
        assert refused.returncode == 1
        assert refused.stderr.strip().endswith("start it with --secure again")
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
