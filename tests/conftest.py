import pytest
import torch

from simsiam_lab.model import ModelConfig, SimSiam


@pytest.fixture
def small_simsiam():
    """A seeded CIFAR-stem ResNet-18 SimSiam small enough for unit tests; kwargs are switches."""

    def build(width: int = 8, dim: int = 32, **switches) -> SimSiam:
        torch.manual_seed(0)
        cfg = ModelConfig(
            backbone="resnet18",
            width=width,
            cifar_stem=True,
            dim=dim,
            projector_layers=2,
            predictor_hidden_dim=max(4, dim // 4),
        )
        return SimSiam(ModelConfig(**(cfg.__dict__ | switches)))

    return build
