"""Concurrent tracking: eight writers released at once into one fresh SQLite store lose nothing."""

import getpass
import json
import multiprocessing as mp
import subprocess
from pathlib import Path

import pytest
from manifests import SMALL, manifest
from mlflow import MlflowClient
from mlflow_writers import assert_nothing_lost, run_writers

from simsiam_lab.rundir import RunDir
from simsiam_lab.track import (
    DESCRIPTION_TAG,
    PretrainRun,
    Tracker,
    git_commit,
    log_evaluation,
    log_report,
    source_tags,
    tracking_uri,
)

EPOCHS = 15


@pytest.mark.slow
def test_eight_writers_at_once_lose_no_run_metric_or_artifact(tmp_path: Path):
    store = tmp_path / ".mlflow" / "mlflow.db"
    # Fresh interpreters, as Snakemake's jobs are; all eight create the store at once.
    run_writers(mp.get_context("spawn"), f"sqlite:///{store}", tmp_path, EPOCHS)
    assert_nothing_lost(f"sqlite:///{store}", EPOCHS)


def test_a_run_records_its_dataset_as_an_mlflow_input(tmp_path: Path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = tracker.start("simsiam-test", "run", {}, {"seed": 0})
    flowers = manifest(
        dataset="imagefolder",
        source="/data/flowers.tar.gz",
        source_sha256="ab" * 32,
        classes=["daisy", "rose"],
        counts={"train": {"daisy": 3, "rose": 4}, "test": {"daisy": 1, "rose": 1}},
    )
    tracker.log_dataset(run_id, flowers)
    (found,) = tracker.client.get_run(run_id).inputs.dataset_inputs
    assert found.dataset.name == "imagefolder" and found.dataset.digest == ("ab" * 32)[:36]
    assert json.loads(found.dataset.source)["uri"] == "/data/flowers.tar.gz"
    assert json.loads(found.dataset.schema)["classes"] == ["daisy", "rose"]
    assert json.loads(found.dataset.profile)["counts"] == {"train": 7, "test": 2}


def test_a_resumed_pretraining_continues_its_mlflow_run_and_logs_each_epoch_once(
    tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    run_dir = RunDir(tmp_path / "run")
    run_dir.root.mkdir()
    tags = {"engine": "dvc", "engine.experiment": "exp-1"}
    opened = PretrainRun.open(run_dir, False, "simsiam-test", "r", tags, {"seed": 0}, SMALL)
    assert opened.log_epoch({"epoch": 1, "loss": -0.5}) == {"loss": -0.5}

    # A kill, then the resumed process replays the history it saved, plus a new epoch.
    resumed = PretrainRun.open(run_dir, True, "simsiam-test", "r", {}, {"seed": 0}, SMALL)
    assert resumed.run_id == opened.run_id
    assert resumed.log_epoch({"epoch": 1, "loss": -0.5}) == {}
    assert resumed.log_epoch({"epoch": 2, "loss": -0.6}) == {"loss": -0.6}
    # Each step's loss at its SGD step (the epoch's end less its count), logged once too.
    steps = {"epoch": 3, "loss": -0.7, "step": 6, "step_loss": [-0.65, -0.7, -0.75]}
    assert resumed.log_epoch(steps) == {"loss": -0.7}
    assert resumed.log_epoch(steps) == {}
    (run_dir.root / "config.yaml").write_text("seed: 0\n")
    resumed.finish("ok", [run_dir.config])

    client = Tracker().client
    run = client.get_run(opened.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "ok"
    history = client.get_metric_history(run.info.run_id, "step_loss")
    assert sorted((m.step, m.value) for m in history) == [(4, -0.65), (5, -0.7), (6, -0.75)]
    assert "step" not in run.data.metrics
    assert run.data.tags["mlflow.source.git.commit"]  # MLflow's own column in the UI
    assert run.data.tags.items() >= tags.items()  # the resumed run keeps the tags it began with
    assert [m.step for m in client.get_metric_history(opened.run_id, "loss")] == [1, 2, 3]
    assert [a.path for a in client.list_artifacts(opened.run_id)] == ["config.yaml"]
    assert len(client.search_runs([run.info.experiment_id])) == 1


def _git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=test", "-c", "user.email=test@localhost"]
    done = subprocess.run(["git", *identity, *args], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_run_names_the_full_commit_whether_the_tree_was_dirty_and_the_user(
    tmp_path: Path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    _git(tmp_path, "init", "-q")
    # A fresh repository (the pipeline tests' project copy) has no commit to name.
    tags = source_tags()
    assert tags["mlflow.source.git.commit"] == "unknown" and tags["git_dirty"] == "unknown"

    (tmp_path / "train.py").write_text("lr = 0.1\n")
    _git(tmp_path, "add", "train.py")
    _git(tmp_path, "commit", "-qm", "first")
    (tmp_path / "results.json").write_text("{}")  # untracked: the tree is still clean
    tags = source_tags()
    assert tags["mlflow.source.git.commit"] == _git(tmp_path, "rev-parse", "HEAD")
    assert len(tags["mlflow.source.git.commit"]) == 40 and tags["git_dirty"] == "false"
    assert tags["mlflow.user"] == getpass.getuser()
    assert tags["mlflow.source.name"] == "simsiam pretrain"
    assert tags["mlflow.source.type"] == "LOCAL"

    (tmp_path / "train.py").write_text("lr = 0.2\n")
    assert source_tags()["git_dirty"] == "true"
    # The reports keep git describe's short, readable form.
    assert git_commit() == _git(tmp_path, "rev-parse", "--short=12", "HEAD") + "-dirty"


def test_an_experiment_gets_a_description_where_it_has_none(tmp_path: Path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")

    def note(name: str) -> str | None:
        return tracker.client.get_experiment_by_name(name).tags.get(DESCRIPTION_TAG)

    tracker.experiment_id("created", "a smoke run")
    assert note("created") == "a smoke run"
    tracker.client.create_experiment("older")  # created before experiments had descriptions
    tracker.experiment_id("older", "a smoke run")
    assert note("older") == "a smoke run"
    tracker.client.set_experiment_tag(tracker.experiment_id("older"), DESCRIPTION_TAG, "mine")
    tracker.experiment_id("older", "a smoke run")
    assert note("older") == "mine"  # one written in the UI stays


def test_a_store_s_artifacts_lie_beside_it_named_after_it_and_are_git_ignored(
    tmp_path: Path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a store in the working directory, as sqlite:///runs.db puts it
    tracker = Tracker("sqlite:///runs.db")
    run_id = tracker.start("simsiam-test", "run", {}, {"seed": 0})
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    tracker.log_artifact(run_id, tmp_path / "config.yaml")
    assert (tmp_path / "runs-artifacts").is_dir() and not (tmp_path / "artifacts").exists()
    logged = list((tmp_path / "runs-artifacts").rglob("config.yaml"))
    assert len(logged) == 1
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "runs-artifacts/1/run/config.yaml"],
        cwd=Path(__file__).parents[1],
    )
    assert ignored.returncode == 0  # by the checkout's .gitignore


def test_a_dataset_another_job_inserted_at_the_same_moment_is_logged_on_a_retry(monkeypatch):
    from mlflow.exceptions import MlflowException

    from simsiam_lab import track

    monkeypatch.setattr(track.time, "sleep", lambda s: None)
    calls = []

    def log_inputs():
        calls.append(1)
        if len(calls) == 1:  # what the server answered when two jobs raced (PostgreSQL)
            raise MlflowException(
                "BAD_REQUEST: (psycopg2.errors.UniqueViolation) duplicate key "
                'value violates unique constraint "dataset_pk"'
            )

    track._retry_duplicate(log_inputs)
    assert len(calls) == 2
    with pytest.raises(MlflowException, match="no such run"):  # any other error is raised
        track._retry_duplicate(lambda: (_ for _ in ()).throw(MlflowException("no such run")))


def test_a_table_report_is_one_mlflow_run_with_its_verdicts_updated_when_rendered_again(
    tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    page = tmp_path / "table3.html"
    page.write_text("<p>the page</p>")
    claims = [
        {"text": "BN on the hidden layers raises accuracy.", "verdict": "reproduced"},
        {"text": "The affine is not necessary.", "verdict": "not testable"},
    ]
    summary = {"table": "table3", "title": "Table 3", "claims": claims, "mlflow_runs": ["ab" * 16]}
    first = log_report("smoke", summary, [page])
    claims[1]["verdict"] = "inconclusive"
    assert log_report("smoke", summary, [page]) == first  # the same run, updated
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(first)
    assert run.info.run_name == "report-table3" and run.info.status == "FINISHED"
    assert run.data.tags["report"] == "table3"
    assert run.data.tags["mlflow.source.name"] == "simsiam report"
    assert run.data.tags["claim.02"] == "inconclusive: The affine is not necessary."
    assert run.data.metrics["inconclusive"] == 1.0 and run.data.metrics["not_testable"] == 0.0
    note = run.data.tags["mlflow.note.content"]
    assert f"#/experiments/{run.info.experiment_id}/runs/{'ab' * 16}" in note
    artifacts = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").list_artifacts(first)
    assert [a.path for a in artifacts] == ["table3.html"]


def test_the_default_store_is_the_project_root_s_from_a_subfolder_too(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "baseline.yaml").write_text("seed: 0\n")
    (tmp_path / "src" / "deep").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert tracking_uri() == "sqlite:///.mlflow/mlflow.db"
    monkeypatch.chdir(tmp_path / "src" / "deep")
    assert tracking_uri() == f"sqlite:///{tmp_path}/.mlflow/mlflow.db"


def test_an_evaluation_with_other_settings_is_its_own_record(tmp_path: Path, monkeypatch):
    """A DVC experiment that evaluates with other settings must not rewrite the first
    evaluation's numbers on the training run: it gets a run nested under it, one per settings,
    and the same settings again update the record that holds them."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracker = Tracker(uri)
    trained = tracker.start("simsiam-test", "table3-c-seed0", {"row.table3": "c"}, {"seed": 0})
    metrics = tmp_path / "metrics.json"
    metrics.write_text("{}")
    five, six = {"linear_epochs": 5}, {"linear_epochs": 6}

    assert log_evaluation(trained, {"linear_acc": 18.0}, five, metrics) == trained
    nested = log_evaluation(trained, {"linear_acc": 19.0}, six, metrics)
    assert nested != trained
    assert log_evaluation(trained, {"linear_acc": 19.5}, six, metrics) == nested
    assert log_evaluation(trained, {"linear_acc": 18.0}, five, metrics) == trained

    client = MlflowClient(uri)
    first, other = client.get_run(trained), client.get_run(nested)
    assert first.data.metrics["linear_acc"] == 18.0 and first.data.tags["eval.linear_epochs"] == "5"
    assert other.data.metrics["linear_acc"] == 19.5 and other.data.tags["eval.linear_epochs"] == "6"
    assert other.data.tags["mlflow.parentRunId"] == trained
    assert other.data.tags["mlflow.source.name"] == "simsiam evaluate"
    assert other.info.run_name == "table3-c-seed0-eval-" + other.data.tags["eval.settings"][:6]
    assert "row.table3" not in other.data.tags  # a row's group-by holds one record a seed
    history = client.get_metric_history(trained, "linear_acc")
    assert [(m.step, m.value) for m in history] == [(0, 18.0), (0, 18.0)]  # bars in MLflow
