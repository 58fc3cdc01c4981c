"""Concurrent tracking: eight writers released at once into one fresh SQLite store lose nothing."""

import json
import multiprocessing as mp
from pathlib import Path

import pytest
from mlflow_writers import assert_nothing_lost, run_writers

from simsiam_lab.rundir import RunDir
from simsiam_lab.track import PretrainRun, Tracker

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
    manifest = {
        "dataset": "imagefolder",
        "source": "/data/flowers.tar.gz",
        "source_sha256": "ab" * 32,
        "classes": ["daisy", "rose"],
        "counts": {"train": {"daisy": 3, "rose": 4}, "test": {"daisy": 1, "rose": 1}},
        "stored_size": 32,
    }
    tracker.log_dataset(run_id, manifest)
    (found,) = tracker.client.get_run(run_id).inputs.dataset_inputs
    assert found.dataset.name == "imagefolder" and found.dataset.digest == ("ab" * 32)[:36]
    assert json.loads(found.dataset.source)["uri"] == "/data/flowers.tar.gz"
    assert json.loads(found.dataset.schema)["classes"] == ["daisy", "rose"]
    assert json.loads(found.dataset.profile)["counts"] == {"train": 7, "test": 2}


MANIFEST = {
    "dataset": "cifar10",
    "source": "torchvision",
    "source_sha256": "torchvision:cifar10",
    "classes": ["a", "b"],
    "counts": {"train": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}},
    "stored_size": 32,
}


def test_a_resumed_pretraining_continues_its_mlflow_run_and_logs_each_epoch_once(
    tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    run_dir = RunDir(tmp_path / "run")
    run_dir.root.mkdir()
    opened = PretrainRun.open(run_dir, False, "simsiam-test", "r", {}, {"seed": 0}, MANIFEST)
    assert opened.log_epoch({"epoch": 1, "loss": -0.5}) == {"loss": -0.5}

    # A kill, then the resumed process replays the history it saved, plus a new epoch.
    resumed = PretrainRun.open(run_dir, True, "simsiam-test", "r", {}, {"seed": 0}, MANIFEST)
    assert resumed.run_id == opened.run_id
    assert resumed.log_epoch({"epoch": 1, "loss": -0.5}) == {}
    assert resumed.log_epoch({"epoch": 2, "loss": -0.6}) == {"loss": -0.6}
    (run_dir.root / "config.yaml").write_text("seed: 0\n")
    resumed.finish("ok", [run_dir.config])

    client = Tracker().client
    run = client.get_run(opened.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "ok"
    assert run.data.tags["mlflow.source.git.commit"]  # MLflow's own column in the UI
    assert [m.step for m in client.get_metric_history(opened.run_id, "loss")] == [1, 2]
    assert [a.path for a in client.list_artifacts(opened.run_id)] == ["config.yaml"]
    assert len(client.search_runs([run.info.experiment_id])) == 1
