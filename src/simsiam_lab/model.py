"""SimSiam: a torchvision ResNet encoder, an MLP projector and an MLP predictor.

With the default switches the heads have builder.py's layers (facebookresearch/simsiam): its
projector's hidden width is the backbone's feature width, ours is `model.dim`, so the two are the
same network where those are equal (2048 for ResNet-50 at the paper's dim); each BN switch of the
paper's Table 3 (and the predictor of Table 1) is a constructor argument.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from .config import Backbone, ModelConfig

_DEPTHS: dict[Backbone, tuple[type[BasicBlock | Bottleneck], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


class ResNetTrunk(ResNet):
    """torchvision's ResNet with a width knob and an optional CIFAR stem, ending at the pool.

    torchvision hard-codes 64 channels in the first stage; a narrower trunk is what makes a
    2-core CPU study feasible, so the stages are rebuilt with torchvision's own blocks.
    """

    def __init__(self, backbone: Backbone, width: int = 64, cifar_stem: bool = False) -> None:
        block, layers = _DEPTHS[backbone]
        super().__init__(block, layers, zero_init_residual=True)
        self.inplanes = width
        if cifar_stem:
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.out_dim = width * 8 * block.expansion
        self.fc = nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        # Same scheme as torchvision's constructor, re-applied to the rebuilt layers.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)


def mlp(
    dims: list[int], hidden_bn: bool, output_bn: bool, output_bn_affine: bool = True
) -> list[nn.Module]:
    """Linear layers with ReLU between them; a Linear followed by BN has no bias."""
    layers: list[nn.Module] = []
    last = len(dims) - 2
    for i, (d_in, d_out) in enumerate(pairwise(dims)):
        bn = output_bn if i == last else hidden_bn
        layers.append(nn.Linear(d_in, d_out, bias=not bn))
        if bn:
            layers.append(nn.BatchNorm1d(d_out, affine=True if i < last else output_bn_affine))
        if i < last:
            layers.append(nn.ReLU(inplace=True))
    return layers


class ProjectionHead(nn.Sequential):
    """The projector in f: `projector_layers` fc layers of width d on the backbone's pooled
    features, BN on the hidden ones and, by its switches, on the output (Table 3)."""

    def __init__(self, in_dim: int, cfg: ModelConfig) -> None:
        super().__init__(
            *mlp(
                [in_dim] + [cfg.dim] * cfg.projector_layers,
                cfg.projector_hidden_bn,
                cfg.projector_output_bn,
                cfg.projector_output_bn_affine,
            )
        )


class PredictionHead(nn.Sequential):
    """The predictor h: d -> predictor_hidden_dim -> d, a bottleneck, BN on the hidden layer
    and, by its switch, on the output (Table 3)."""

    def __init__(self, cfg: ModelConfig) -> None:
        dims = [cfg.dim, cfg.predictor_hidden_dim, cfg.dim]
        super().__init__(*mlp(dims, cfg.predictor_hidden_bn, cfg.predictor_output_bn))


class SimSiam(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNetTrunk(cfg.backbone, cfg.width, cfg.cifar_stem)
        self.projector = ProjectionHead(self.backbone.out_dim, cfg)
        # Without h (Table 1a), p is z itself.
        self.predictor = PredictionHead(cfg) if cfg.predictor else nn.Identity()

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return p1, p2, z1, z2; the loss decides where gradients stop.

        The views go through separately, as in builder.py, so BN statistics are per view.
        """
        z1 = self.projector(self.backbone(x1))
        z2 = self.projector(self.backbone(x2))
        return self.predictor(z1), self.predictor(z2), z1, z2


@contextmanager
def eval_mode(net: nn.Module) -> Iterator[nn.Module]:
    """`net` in eval mode (BN on its running statistics) for the block, then back in the mode
    the caller had it in."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)
