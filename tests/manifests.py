"""Manifests as `simsiam prepare` writes them, for tests that need one without preparing."""

from dataclasses import replace

from simsiam_lab.data import FORMAT, Manifest

# Two classes of CIFAR-10 at its stored size, prepared whole, in memory.
SMALL = Manifest(
    dataset="cifar10",
    source="/data/cifar10.tar.gz",
    source_sha256="0123456789abcdef" * 4,
    stored_size=32,
    classes=["a", "b"],
    counts={"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}},
    train_per_class=None,
    test_per_class=None,
    subset_seed=0,
    loader="auto",
    memory_limit_gb=16.0,
    class_list=None,
    class_list_sha256=None,
    format=FORMAT,
)


def manifest(**fields) -> Manifest:
    """SMALL with these fields instead."""
    return replace(SMALL, **fields)
