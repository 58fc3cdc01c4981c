"""Data-parallel pretraining: two CPU processes under torchrun train as one process does."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).parents[1]
# Two processes reduce sums in another order than one: the losses and weights of the first steps
# agree to float32 rounding, far below any training signal.
LOSS_TOL, WEIGHT_TOL = 1e-5, 5e-5  # measured: 5e-8 and 5e-6


def _tiny_profile(tmp_path: Path) -> Path:
    params = tmp_path / "params"
    shutil.copytree(ROOT / "params", params)
    profiles = yaml.safe_load((params / "profiles.yaml").read_text())
    profiles["ddp"] = {
        "description": "two-process test",
        "overrides": {
            "data": {
                "dataset": "cifar10",
                "image_size": 16,
                "stored_size": 16,
                "train_per_class": 16,
                "test_per_class": 4,
            },
            "model": {
                "backbone": "resnet18",
                "width": 8,
                "cifar_stem": True,
                "dim": 32,
                "projector_layers": 2,
                "predictor_hidden_dim": 8,
            },
            # 48 images, batch 48: one step per epoch, so each epoch's loss is one step's.
            "optim": {"epochs": 4, "batch_size": 48, "base_lr": 0.05},
            "augment": {"blur_p": 0.0},
            "monitor": {"knn_every": 0},
        },
    }
    (params / "profiles.yaml").write_text(yaml.safe_dump(profiles, sort_keys=False))
    return params


@pytest.mark.slow
def test_two_cpu_processes_train_as_one_with_the_same_global_batch(tmp_path: Path, write_prepared):
    params = _tiny_profile(tmp_path)
    data = write_prepared(tmp_path / "prepared", 3, 16, 4, size=16)
    simsiam = shutil.which("simsiam")
    pretrain = [
        simsiam,
        "--params",
        str(params),
        "--threads",
        "1",
        "pretrain",
        "--profile",
        "ddp",
        "--row",
        "table3:c",
        "--data",
        str(data),
        "--out",
    ]
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "--no-python",
    ]
    for cmd in ([*pretrain, str(tmp_path / "one")], [*torchrun, *pretrain, str(tmp_path / "two")]):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr

    one, two = (json.loads((tmp_path / run / "history.json").read_text()) for run in ("one", "two"))
    losses = [[r["loss"] for r in history] for history in (one, two)]
    assert len(losses[0]) == 4 and losses[1] == pytest.approx(losses[0], abs=LOSS_TOL)
    assert json.loads((tmp_path / "two" / "pretrain.json").read_text())["processes"] == 2
    w1, w2 = (
        torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)["model"]
        for run in ("one", "two")
    )
    assert w1.keys() == w2.keys()
    for key in w1:
        if w1[key].is_floating_point():
            torch.testing.assert_close(w2[key], w1[key], atol=WEIGHT_TOL, rtol=1e-3, msg=key)
    with sqlite3.connect(tmp_path / "mlflow.db") as db:  # rank 1 records nothing
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2
