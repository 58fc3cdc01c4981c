"""The baseline's sections as the library's types: tests build a network as production does, from
params/baseline.yaml (the one place for defaults), with overrides."""

from __future__ import annotations

from pathlib import Path

import yaml

from simsiam_lab.augment import CIFAR_STATS, Augmentation
from simsiam_lab.config import DataConfig, ModelConfig, RunConfig, deep_merge

BASELINE = Path(__file__).parents[1] / "params" / "baseline.yaml"


def model_config(**overrides) -> ModelConfig:
    return ModelConfig.of(yaml.safe_load(BASELINE.read_text())["model"] | overrides)


def cifar_augment(**overrides) -> Augmentation:
    """The CIFAR profiles' augmentation (crop scale from 0.2, no blur, CIFAR statistics), as
    augmentation makes it for them."""
    mean, std = CIFAR_STATS
    return Augmentation(
        **{"crop_scale": (0.2, 1.0), "blur_p": 0.0, "mean": mean, "std": std} | overrides
    )


def data_config(**fields) -> DataConfig:
    """The baseline's data section, as `prepare` reads it before any fingerprint, with `fields`."""
    return DataConfig.of(yaml.safe_load(BASELINE.read_text())["data"] | fields)


def run_config(**sections) -> RunConfig:
    """The baseline as a run config (no fingerprints), with sections merged in:
    run_config(seed=1, optim={"batch_size": 64})."""
    return RunConfig.of(deep_merge(yaml.safe_load(BASELINE.read_text()), sections, "test"))
