"""Eight MLflow writers released at once, and the check that none of their runs, metric steps or
artifacts was lost: the SQLite store's test and the tracking server's share them."""

from __future__ import annotations

import socket
from pathlib import Path

from manifests import SMALL

from simsiam_lab.track import Tracker

WRITERS = 8


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_one_run(uri: str, artifact_dir: str, index: int, steps: int, barrier) -> None:
    barrier.wait(timeout=120)  # all eight create the experiment and a run at once
    tracker = Tracker(uri)
    run_id = tracker.start("simsiam-test", f"run-{index}", {"index": str(index)}, {"seed": index})
    tracker.log_dataset(run_id, SMALL)  # the same dataset from every writer, as jobs do
    for step in range(1, steps + 1):
        tracker.log_metrics(run_id, {"loss": -step / steps, "z_std": 0.1 * index}, step=step)
    artifact = Path(artifact_dir) / f"metrics-{index}.json"
    artifact.write_text(f'{{"index": {index}}}')
    tracker.log_artifact(run_id, artifact)
    tracker.set_tags(run_id, {"status": "ok"})
    tracker.finish(run_id)


def run_writers(ctx, uri: str, artifact_dir: Path, steps: int) -> None:
    """WRITERS processes of the multiprocessing context `ctx`, each writing one run."""
    barrier = ctx.Barrier(WRITERS)
    workers = [
        ctx.Process(target=write_one_run, args=(uri, str(artifact_dir), i, steps, barrier))
        for i in range(WRITERS)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    assert [w.exitcode for w in workers] == [0] * WRITERS


def assert_nothing_lost(uri: str, steps: int) -> list:
    """Every writer's run, finished, with each metric's every step and its one artifact, read
    through MLflow's client; returns the runs."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("simsiam-test").experiment_id
    runs = client.search_runs([experiment], max_results=100)
    assert sorted(r.info.run_name for r in runs) == sorted(f"run-{i}" for i in range(WRITERS))
    for run in runs:
        run_id = run.info.run_id
        assert run.info.status == "FINISHED"
        for key in ("loss", "z_std"):
            found = [m.step for m in client.get_metric_history(run_id, key)]
            assert sorted(found) == list(range(1, steps + 1)), (run_id, key)
        artifacts = [a.path for a in client.list_artifacts(run_id)]
        assert artifacts == [f"metrics-{run.data.params['seed']}.json"]
        assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["cifar10"], run_id
    return runs
