"""The SimSiam implementations we are measured against.

On the backbone our model uses, two steps: `LightlySimSiam` is lightly's published recipe (its
heads and loss, the backbone's pooled features, z detached in forward); `ReferenceSimSiam` is
written from the paper's §3 and App. A, in the structure of facebookresearch/simsiam builder.py:
3-layer projector with BN on every fc (the output BN without affine), 2-layer bottleneck
predictor, symmetric negative cosine with stop-gradient. Both run as their users run them: fp32,
eager, NCHW.

For an epoch, one loop: `OfficialStyleLoop`, main_simsiam.py's training loop over a JPEG tree
with its PIL augmentation in DataLoader workers, driving our model.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from simsiam_lab.target import LiveTarget
from simsiam_lab.train import sgd_step


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


# ---------------------------------------------------------------------------- official-style loop
# facebookresearch/simsiam main_simsiam.py, CIFAR-sized: JPEGs decoded and augmented with PIL in
# DataLoader workers, two crops per image, batches copied to the GPU, one SGD step each.


def official_augmentation(size: int, mean, std):
    """main_simsiam.py's augmentation at `size` px, blur left out as the paper's App. D leaves it
    out on CIFAR (tests/test_benchmarks.py checks it against the paper and our Augmentation)."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.RandomResizedCrop(size, scale=(0.2, 1.0)),
            transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            transforms.RandomGrayscale(p=0.2),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean=list(mean), std=list(std)),
        ]
    )


class TwoCropsTransform:
    """Two independent random crops of one image (simsiam/loader.py)."""

    def __init__(self, base_transform) -> None:
        self.base_transform = base_transform

    def __call__(self, x):
        return [self.base_transform(x), self.base_transform(x)]


def official_loader(root, batch: int, workers: int, size: int, mean, std, pin_memory: bool):
    """torchvision ImageFolder over a JPEG tree, shuffled, in `workers` persistent processes."""
    from torch.utils.data import DataLoader
    from torchvision import datasets

    dataset = datasets.ImageFolder(
        str(root), TwoCropsTransform(official_augmentation(size, mean, std))
    )
    return DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=workers > 0,
    )


class OfficialStyleLoop:
    """main_simsiam.py's train(): per batch, copy both crops to the device (non_blocking),
    forward, loss, `loss.item()` (its AverageMeter reads the loss every step), backward, SGD.
    The model, its memory format, autocast dtype and optimizer are the caller's (ours, from the
    same config), so the loops differ in where the views come from."""

    def __init__(self, model, opt, criterion, loader, dev: torch.device, fmt, dtype) -> None:
        self.model, self.opt, self.criterion, self.loader = model, opt, criterion, loader
        self.dev, self.fmt, self.dtype = dev, fmt, dtype
        self.no_index = torch.empty(0, dtype=torch.long, device=dev)  # a live target reads none

    def step(self, x1: torch.Tensor, x2: torch.Tensor) -> float:
        """Our `sgd_step` (main_simsiam.py's criterion is our loss: builder.py's detached z is
        our stop-gradient), then the loss read on the host, as its AverageMeter does."""
        views = [(x1, x2)]
        loss, _ = sgd_step(
            self.model, self.criterion, LiveTarget(), self.opt, views, self.no_index, 0, self.dtype
        )
        return loss.item()

    def to_device(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = (x.to(self.dev, non_blocking=True) for x in images)
        return self.fmt((x1, x2))

    def epoch(self) -> dict:
        """One pass over the loader; data_wait_s is main_simsiam.py's data_time summed: the
        time the training process sat blocked on the loader for its next batch."""
        self.model.train()
        images = steps = 0
        wait = loss_sum = 0.0
        end = time.perf_counter()
        for crops, _ in self.loader:
            wait += time.perf_counter() - end
            x1, x2 = self.to_device(crops)
            loss_sum += self.step(x1, x2)
            images += len(x1)
            steps += 1
            end = time.perf_counter()
        return {
            "images": images,
            "steps": steps,
            "data_wait_s": wait,
            "loss": loss_sum / max(1, steps),
        }
