"""The baseline's sections as the library's types: tests build a network as production does, from
params/baseline.yaml (the one place for defaults), with overrides."""

from __future__ import annotations

from pathlib import Path

import yaml

from simsiam_lab.augment import CIFAR_STATS, AugmentConfig
from simsiam_lab.data import DataSpec
from simsiam_lab.model import ModelConfig

BASELINE = Path(__file__).parents[1] / "params" / "baseline.yaml"


def model_config(**overrides) -> ModelConfig:
    return ModelConfig.from_dict(yaml.safe_load(BASELINE.read_text())["model"] | overrides)


def cifar_augment(**overrides) -> AugmentConfig:
    """The CIFAR profiles' augmentation (crop scale from 0.2, no blur, CIFAR statistics), as
    augment_config makes it for them."""
    mean, std = CIFAR_STATS
    return AugmentConfig(
        **{"crop_scale": (0.2, 1.0), "blur_p": 0.0, "mean": mean, "std": std} | overrides
    )


def data_spec(**fields) -> DataSpec:
    """The baseline's data section as `prepare` reads it (no fingerprint yet), with `fields`."""
    data = yaml.safe_load(BASELINE.read_text())["data"] | {"source_sha256": None}
    return DataSpec.of(data | fields)
