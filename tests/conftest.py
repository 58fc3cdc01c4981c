import os
from pathlib import Path

import numpy as np
import pytest
import torch
from baseline import model_config
from manifests import manifest

from simsiam_lab.config import ModelConfig
from simsiam_lab.datasource import source_identity
from simsiam_lab.model import SimSiam

# Torch threads for every test, where set. Training is bit-exact only at one thread count, so CI
# runs the tests that assert a training's outcome at two (`.ci/run`: `pytest -m trains -n 0`).
THREADS = "SIMSIAM_TEST_THREADS"


def pytest_configure(config):
    """Under pytest-xdist, each worker's torch takes its share of the cores, not all of them:
    on 2 cores, the quick check took 118 s with two threads a worker, 80 s with one. Without
    workers (-n 0) it takes them all; SIMSIAM_TEST_THREADS=N sets N either way (each rounded
    down to a power of two)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    threads = int(os.environ.get(THREADS) or max(1, (os.cpu_count() or 1) // workers))
    # A power of two: torch's channels_last backward pass crashes at 3, 6 and 7 threads on a
    # CPU (train.safe_cpu_threads), which 6 or 14 cores over two workers would give.
    torch.set_num_threads(1 << (threads.bit_length() - 1))


@pytest.fixture
def small_simsiam():
    """A seeded CIFAR-stem ResNet-18 SimSiam small enough for unit tests; kwargs are switches."""

    def build(width: int = 8, dim: int = 32, **switches) -> SimSiam:
        torch.manual_seed(0)
        cfg = model_config(
            backbone="resnet18",
            width=width,
            cifar_stem=True,
            dim=dim,
            projector_layers=2,
            predictor_hidden_dim=max(4, dim // 4),
        )
        return SimSiam(ModelConfig(**(cfg.__dict__ | switches)))

    return build


@pytest.fixture
def write_prepared():
    """Writes a directory as `simsiam prepare` does for CIFAR-10, with random images."""

    def write(out: Path, classes: int, train_per_class: int, test_per_class: int, size: int = 32):
        out.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        names = [f"c{i}" for i in range(classes)]
        per_class = {"train": train_per_class, "test": test_per_class}
        for split, n in per_class.items():
            labels = np.repeat(np.arange(classes), n).astype(np.int64)
            images = rng.integers(0, 256, (len(labels), 3, size, size), dtype=np.uint8)
            np.save(out / f"{split}_images.npy", images)
            np.save(out / f"{split}_labels.npy", labels)
        manifest(
            source="random images",
            source_sha256=source_identity("cifar10", None),  # what the configs resolve to
            stored_size=size,
            classes=names,
            counts={split: dict.fromkeys(names, n) for split, n in per_class.items()},
            train_per_class=train_per_class,
            test_per_class=test_per_class,
        ).write(out)
        return out

    return write
