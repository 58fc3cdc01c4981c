"""The SimSiam steps we are measured against, on the backbone our model uses.

`LightlySimSiam` is lightly's published recipe (its heads and loss, the backbone's pooled
features, z detached in forward); `ReferenceSimSiam` is written from the paper's §3 and App. A,
in the structure of facebookresearch/simsiam builder.py: 3-layer projector with BN on every fc
(the output BN without affine), 2-layer bottleneck predictor, symmetric negative cosine with
stop-gradient. Both run as their users run them: fp32, eager, NCHW.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LightlySimSiam(nn.Module):
    def __init__(self, backbone: nn.Module, feat_dim: int, dim: int, pred_dim: int) -> None:
        from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead

        super().__init__()
        self.backbone = backbone
        self.projection_head = SimSiamProjectionHead(feat_dim, dim, dim)
        self.prediction_head = SimSiamPredictionHead(dim, pred_dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.projection_head(self.backbone(x).flatten(start_dim=1))
        return z.detach(), self.prediction_head(z)


def lightly_loss(model: LightlySimSiam, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    from lightly.loss import NegativeCosineSimilarity

    criterion = NegativeCosineSimilarity()
    z1, p1 = model(x1)
    z2, p2 = model(x2)
    return 0.5 * (criterion(p1, z2) + criterion(p2, z1))


class ReferenceSimSiam(nn.Module):
    def __init__(self, backbone: nn.Module, feat_dim: int, dim: int, pred_dim: int) -> None:
        super().__init__()
        self.encoder = backbone
        self.projector = nn.Sequential(
            nn.Linear(feat_dim, dim, bias=False),
            nn.BatchNorm1d(dim),
            nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False),
            nn.BatchNorm1d(dim),
            nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False),
            nn.BatchNorm1d(dim, affine=False),
        )
        self.predictor = nn.Sequential(
            nn.Linear(dim, pred_dim, bias=False),
            nn.BatchNorm1d(pred_dim),
            nn.ReLU(inplace=True),
            nn.Linear(pred_dim, dim),
        )

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z1, z2 = self.projector(self.encoder(x1)), self.projector(self.encoder(x2))
        return self.predictor(z1), self.predictor(z2), z1.detach(), z2.detach()


def reference_loss(model: ReferenceSimSiam, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    p1, p2, z1, z2 = model(x1, x2)
    return -0.5 * (F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean())
