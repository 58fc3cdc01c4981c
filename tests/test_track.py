"""Concurrent tracking: eight writers released at once into one fresh SQLite store lose nothing."""

import json
import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest

from simsiam_lab.track import Tracker

WRITERS, EPOCHS = 8, 15


def _write_one_run(uri: str, artifact_dir: str, index: int, barrier) -> None:
    barrier.wait(timeout=120)  # all eight create the store, the experiment and a run at once
    tracker = Tracker(uri)
    run_id = tracker.start("simsiam-test", f"run-{index}", {"index": str(index)}, {"seed": index})
    for epoch in range(1, EPOCHS + 1):
        tracker.log_metrics(run_id, {"loss": -epoch / EPOCHS, "z_std": 0.1 * index}, step=epoch)
    artifact = Path(artifact_dir) / f"metrics-{index}.json"
    artifact.write_text(f'{{"index": {index}}}')
    tracker.log_artifact(run_id, artifact)
    tracker.set_tags(run_id, {"status": "ok"})
    tracker.finish(run_id)


@pytest.mark.slow
def test_eight_writers_at_once_lose_no_run_metric_or_artifact(tmp_path: Path):
    store = tmp_path / ".mlflow" / "mlflow.db"
    ctx = mp.get_context("spawn")  # fresh interpreters, as Snakemake's jobs are
    barrier = ctx.Barrier(WRITERS)
    workers = [
        ctx.Process(target=_write_one_run, args=(f"sqlite:///{store}", str(tmp_path), i, barrier))
        for i in range(WRITERS)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    assert [w.exitcode for w in workers] == [0] * WRITERS

    with sqlite3.connect(store) as db:
        runs = db.execute("SELECT run_uuid, name, status FROM runs").fetchall()
        assert sorted(name for _, name, _ in runs) == sorted(f"run-{i}" for i in range(WRITERS))
        for run_id, _, status in runs:
            assert status == "FINISHED"
            steps = db.execute(
                "SELECT key, COUNT(DISTINCT step) FROM metrics WHERE run_uuid = ? GROUP BY key",
                (run_id,),
            ).fetchall()
            assert dict(steps) == {"loss": EPOCHS, "z_std": EPOCHS}
            artifacts = store.parent / "artifacts" / run_id / "artifacts"
            assert len(list(artifacts.glob("metrics-*.json"))) == 1


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
