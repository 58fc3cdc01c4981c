"""Frozen-feature evaluation: weighted kNN, a linear probe, and the collapse diagnostic."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .augment import AugmentConfig, augment, augment_config, normalize
from .config import Config
from .data import Split
from .distributed import autocast_dtype
from .model import SimSiam
from .progress import progress


def collapse_std(z: torch.Tensor) -> float:
    """Std over the batch of l2-normalised z, averaged over channels (paper, Figure 2 middle).

    0 for a collapsed (constant) output; about 1/sqrt(d) for an isotropic Gaussian one.
    """
    return F.normalize(z.float(), dim=1).std(dim=0).mean().item()


def top_direction_share(z: torch.Tensor) -> float:
    """Share of z's variance along its first principal direction: 1 when every output lies on
    one line through the mean, the form collapse takes when BN keeps z from being constant."""
    centred = z.double() - z.double().mean(dim=0)
    var = torch.linalg.svdvals(centred).square()
    return 1.0 if var.sum() == 0 else (var[0] / var.sum()).item()


@torch.no_grad()
def extract_features(
    backbone: nn.Module, images: torch.Tensor, preprocess, batch_size: int = 512
) -> torch.Tensor:
    """Backbone features of uint8 images with BN in eval mode; the caller's mode is restored."""
    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    feats = [
        backbone(preprocess(images[i : i + batch_size].to(device))).float()
        for i in range(0, len(images), batch_size)
    ]
    backbone.train(was_training)
    return torch.cat(feats)


@torch.no_grad()
def knn_predict(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> torch.Tensor:
    """Weighted kNN on cosine similarity: each of the k neighbours votes exp(s / T)."""
    bank = F.normalize(bank, dim=1)
    k = min(k, len(bank))
    preds = []
    for i in range(0, len(queries), chunk):
        sims = F.normalize(queries[i : i + chunk], dim=1) @ bank.T
        top_sim, top_idx = sims.topk(k, dim=1)
        votes = torch.zeros(len(sims), num_classes, device=sims.device)
        votes.scatter_add_(1, bank_labels[top_idx], (top_sim / temperature).exp())
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def knn_accuracy(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    preds = knn_predict(bank, bank_labels, queries, num_classes, k, temperature)
    return round(100.0 * (preds == query_labels).float().mean().item(), 2)


def linear_probe_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    lr: float = 0.1,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> float:
    """Top-1 of a linear classifier trained on cached frozen features of un-augmented images
    (SGD, cosine lr): the fast `cached` probe, not the paper's protocol (main_lincls.py trains
    with LARS at batch 4096 on randomly cropped and flipped images; see `linear_probe: paper`).

    Features are standardised with the training set's statistics so that one lr suits every
    network, trained or at random init.
    """
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        classifier = nn.Linear(train_x.shape[1], num_classes)
    opt = torch.optim.SGD(classifier.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train_x) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * steps_per_epoch))
    for _ in progress(range(epochs), desc="linear probe", unit="epoch"):
        order = torch.randperm(len(train_x), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            loss = F.cross_entropy(classifier(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        preds = classifier(test_x).argmax(dim=1)
    return round(100.0 * (preds == test_y).float().mean().item(), 2)


class LARC:
    """Layer-wise adaptive rate clipping over SGD, as main_lincls.py wraps its optimizer (apex's
    LARC, clip=False): each tensor's gradient, weight decay added, is scaled by
    trust * ||w|| / (||g|| + wd * ||w||) before the SGD step. A tensor whose norm or gradient
    norm is zero (the fc bias at init) takes the plain SGD step."""

    def __init__(self, optimizer: torch.optim.SGD, trust: float = 0.001, eps: float = 1e-8):
        self.optimizer, self.trust, self.eps = optimizer, trust, eps

    @torch.no_grad()
    def step(self) -> None:
        decays = []
        for group in self.optimizer.param_groups:
            wd = group["weight_decay"]
            decays.append(wd)
            for p in group["params"]:
                if p.grad is None:
                    continue
                w_norm, g_norm = p.norm(), p.grad.norm()
                if w_norm > 0 and g_norm > 0:
                    rate = self.trust * w_norm / (g_norm + w_norm * wd + self.eps)
                    p.grad.add_(p, alpha=wd).mul_(rate)
            group["weight_decay"] = 0.0  # applied above, inside the scaling
        self.optimizer.step()
        for group, wd in zip(self.optimizer.param_groups, decays, strict=True):
            group["weight_decay"] = wd

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)


def centre_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The central size x size pixels: the paper's test view of an image stored at 256 px."""
    top, left = (images.shape[-2] - size) // 2, (images.shape[-1] - size) // 2
    return images[..., top : top + size, left : left + size]


def paper_linear_probe_accuracy(
    backbone: nn.Module,
    train_images: torch.Tensor,
    train_y: torch.Tensor,
    test_images: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    aug: AugmentConfig,
    size: int,
    epochs: int = 90,
    lr: float = 1.6,
    batch_size: int = 4096,
    weight_decay: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> float:
    """Top-1 (%) under main_lincls.py's protocol: a linear layer (init N(0, 0.01)) on the frozen
    backbone in eval mode, LARC over SGD (momentum 0.9) with a per-epoch cosine lr, trained on
    RandomResizedCrop(size) (scale 0.08 to 1) and flip views, tested on the centre crop."""
    device = next(backbone.parameters()).device
    train_aug = replace(
        aug, crop_scale=(0.08, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, flip_p=0.5
    )
    was_training = backbone.training
    backbone.eval()
    gen = torch.Generator(device=device).manual_seed(seed)

    @torch.no_grad()
    def features(x: torch.Tensor) -> torch.Tensor:
        ctx = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with ctx:
            return backbone(x).float()

    with torch.no_grad():
        dim = features(normalize(centre_crop(train_images[:2], size).to(device), aug)).shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = nn.Linear(dim, num_classes).to(device)
        nn.init.normal_(classifier.weight, std=0.01)
        nn.init.zeros_(classifier.bias)
    sgd = torch.optim.SGD(classifier.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    opt = LARC(sgd)
    for epoch in progress(range(epochs), desc="linear probe (paper)", unit="epoch"):
        for group in sgd.param_groups:
            group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
        order = torch.randperm(len(train_images), generator=gen, device=device).cpu()
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            views = augment(train_images[idx].to(device), size, train_aug, gen)
            loss = F.cross_entropy(classifier(features(views)), train_y[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(test_images), batch_size):
            x = normalize(centre_crop(test_images[i : i + batch_size], size).to(device), aug)
            preds = classifier(features(x)).argmax(dim=1).cpu()
            correct += int((preds == test_y[i : i + batch_size]).sum())
    backbone.train(was_training)
    return round(100.0 * correct / len(test_images), 2)


def encode(model: SimSiam, cfg: Config, split: Split, projected: bool = False) -> torch.Tensor:
    """Frozen features of a split, preprocessed as at evaluation (no augmentation): the
    backbone's, or with `projected` z itself (backbone then projector) for the collapse check."""
    aug, size = augment_config(cfg), cfg["data"]["image_size"]
    net = nn.Sequential(model.backbone, model.projector) if projected else model.backbone
    return extract_features(net, split.images, lambda x: normalize(x, aug, size))


@dataclass
class KnnProbe:
    """Weighted kNN on frozen backbone features, the test split queried against the train split:
    the paper's training-time monitor, the random-init control and the evaluation's kNN."""

    cfg: Config
    train: Split
    test: Split

    def features(self, model: SimSiam) -> tuple[torch.Tensor, torch.Tensor]:
        return encode(model, self.cfg, self.train), encode(model, self.cfg, self.test)

    def accuracy(
        self, features: tuple[torch.Tensor, torch.Tensor], k: int, temperature: float
    ) -> float:
        bank, queries = features
        dev = bank.device
        return knn_accuracy(
            bank,
            self.train.labels.to(dev),
            queries,
            self.test.labels.to(dev),
            len(self.train.classes),
            k,
            temperature,
        )

    def __call__(self, model: SimSiam) -> float:
        """The monitor, at the monitor's k and temperature."""
        monitor = self.cfg["monitor"]
        return self.accuracy(self.features(model), monitor["knn_k"], monitor["knn_temperature"])


def frozen_accuracies(model: SimSiam, cfg: Config, probe: KnnProbe) -> dict[str, float]:
    """kNN and linear top-1 (%) of the frozen backbone: for the trained network and, with the
    same code, for its random init (the control every accuracy is read against)."""
    ev = cfg["eval"]
    lr = ev["linear_lr"] * ev["linear_batch_size"] / 256
    features = probe.features(model)
    train, test = probe.train, probe.test
    if ev["linear_probe"] == "paper":
        dtype = autocast_dtype(cfg["compute"]["precision"], next(model.parameters()).device)
        linear = paper_linear_probe_accuracy(
            model.backbone,
            train.images,
            train.labels,
            test.images,
            test.labels,
            len(train.classes),
            augment_config(cfg),
            cfg["data"]["image_size"],
            ev["linear_epochs"],
            lr,
            ev["linear_batch_size"],
            ev["linear_weight_decay"],
            cfg["seed"],
            dtype,
        )
    else:
        train_x, test_x = (f.cpu() for f in features)
        linear = linear_probe_accuracy(
            train_x,
            train.labels,
            test_x,
            test.labels,
            len(train.classes),
            ev["linear_epochs"],
            lr,
            ev["linear_batch_size"],
            ev["linear_weight_decay"],
            cfg["seed"],
        )
    return {"knn": probe.accuracy(features, ev["knn_k"], ev["knn_temperature"]), "linear": linear}
