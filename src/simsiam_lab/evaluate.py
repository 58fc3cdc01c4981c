"""Frozen-feature evaluation: weighted kNN, a linear probe, and the collapse diagnostic."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .augment import Augmentation, augment, augmentation, deterministic_view
from .config import MONITOR_PER_CLASS, RunConfig
from .data import FileIndex, Split
from .distributed import autocast_dtype
from .model import SimSiam, eval_mode
from .progress import progress
from .schedule import cosine_decay, scaled_lr
from .stream import PROBE, EpochLoader, TrainCrops, derived_seed, rank_batches, stored_batches

Data = Split | FileIndex  # in memory, or files on the streaming path
Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]  # (normalised views, labels) on the device


def z_std(z: torch.Tensor) -> torch.Tensor:
    """Std over the batch of l2-normalised z, averaged over channels (paper, Figure 2 middle):
    0 for a collapsed (constant) output, about 1/sqrt(d) for an isotropic Gaussian one. A
    tensor on z's device, so that a training loop sums it without a host sync a step."""
    return F.normalize(z.float(), dim=1).std(dim=0).mean()


def collapse_std(z: torch.Tensor) -> float:
    return z_std(z).item()


def top_direction_share(z: torch.Tensor) -> float:
    """Share of z's variance along its first principal direction: 1 when every output lies on
    one line through the mean, the form collapse takes when BN keeps z from being constant."""
    centred = z.double() - z.double().mean(dim=0)
    var = torch.linalg.svdvals(centred).square()
    return 1.0 if var.sum() == 0 else (var[0] / var.sum()).item()


def stored_images(split: Data, batch_size: int = 512) -> Iterator[torch.Tensor]:
    """A split's uint8 images at their stored size, in order, batch by batch: sliced from memory
    or decoded by the streaming path's workers."""
    if isinstance(split, FileIndex):
        return stored_batches(split, batch_size)
    return (split.images[i : i + batch_size] for i in range(0, len(split.images), batch_size))


@torch.no_grad()
def extract_features(
    backbone: nn.Module, images: Iterable[torch.Tensor], preprocess
) -> torch.Tensor:
    """Backbone features of batches of uint8 images with BN in eval mode; the caller's mode is
    restored."""
    device = next(backbone.parameters()).device
    with eval_mode(backbone):
        return torch.cat([backbone(preprocess(batch.to(device))).float() for batch in images])


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


def top1(preds: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (%) of predicted labels, to two decimals."""
    return round(100.0 * (preds == labels).float().mean().item(), 2)


@dataclass(frozen=True)
class ProbeSchedule:
    """How a linear probe trains: epochs, the (already scaled) lr, batch size, weight decay,
    and the seed of its init and order."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    seed: int

    @classmethod
    def of(cls, cfg: RunConfig) -> ProbeSchedule:
        ev = cfg.eval
        lr = scaled_lr(ev.linear_lr, ev.linear_batch_size)
        return cls(ev.linear_epochs, lr, ev.linear_batch_size, ev.linear_weight_decay, cfg.seed)


def linear_probe_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    schedule: ProbeSchedule,
) -> float:
    """Top-1 of a linear classifier trained on cached frozen features of un-augmented images
    (SGD, cosine lr): the fast `cached` probe, not the paper's protocol (main_lincls.py trains
    with LARS at batch 4096 on randomly cropped and flipped images; see `linear_probe: paper`).

    Features are standardised with the training set's statistics so that one lr suits every
    network, trained or at random init.
    """
    epochs, lr, batch_size = schedule.epochs, schedule.lr, schedule.batch_size
    weight_decay, seed = schedule.weight_decay, schedule.seed
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
    train: Data,
    test: Data,
    aug: Augmentation,
    size: int,
    schedule: ProbeSchedule,
    dtype: torch.dtype | None = None,
) -> float:
    """Top-1 (%) under main_lincls.py's protocol: a linear layer (init N(0, 0.01)) on the frozen
    backbone in eval mode, LARC over SGD (momentum 0.9) with a per-epoch cosine lr, trained on
    RandomResizedCrop(size) (scale 0.08 to 1) and flip views, tested on the centre crop."""
    epochs, lr, batch_size = schedule.epochs, schedule.lr, schedule.batch_size
    weight_decay, seed = schedule.weight_decay, schedule.seed
    device = next(backbone.parameters()).device
    train_aug = replace(
        aug, crop_scale=(0.08, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, flip_p=0.5
    )
    with eval_mode(backbone):
        views = _probe_views(train, train_aug, size, batch_size, seed, device)

        @torch.no_grad()
        def features(x: torch.Tensor) -> torch.Tensor:
            ctx = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
            with ctx:
                return backbone(x).float()

        dim = features(torch.zeros(2, 3, size, size, device=device)).shape[1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            classifier = nn.Linear(dim, len(train.classes)).to(device)
            nn.init.normal_(classifier.weight, std=0.01)
            nn.init.zeros_(classifier.bias)
        sgd = torch.optim.SGD(
            classifier.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay
        )
        opt = LARC(sgd)
        for epoch in progress(range(epochs), desc="linear probe (paper)", unit="epoch"):
            for group in sgd.param_groups:
                group["lr"] = cosine_decay(lr, epoch / epochs)
            for x, y in views(epoch):
                loss = F.cross_entropy(classifier(features(x)), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        correct, seen = 0, 0
        with torch.no_grad():
            for images in stored_images(test, batch_size):
                x = deterministic_view(centre_crop(images, size).to(device), aug)
                preds = classifier(features(x)).argmax(dim=1).cpu()
                correct += int((preds == test.labels[seen : seen + len(images)]).sum())
                seen += len(images)
        return round(100.0 * correct / len(test.labels), 2)


def _probe_views(
    train: Data, aug: Augmentation, size: int, batch_size: int, seed: int, device: torch.device
) -> Callable[[int], Batches]:
    """The linear probe's training batches of an epoch, in a seeded order: cropped from the
    stored images on the device, or from the full images in the streaming path's workers."""
    if isinstance(train, FileIndex):
        seed = derived_seed(seed, PROBE)  # not the crops pretraining drew
        crops = TrainCrops(train, size, aug, 1, seed)
        batches = EpochLoader(
            crops, lambda epoch: rank_batches(len(crops), batch_size, seed, epoch, drop_last=False)
        )

        def streamed(epoch: int) -> Batches:
            for x, idx in batches(epoch):
                yield deterministic_view(x[:, 0].to(device), aug), train.labels[idx].to(device)

        return streamed
    gen = torch.Generator(device=device).manual_seed(seed)

    def in_memory(epoch: int) -> Batches:
        order = torch.randperm(len(train.images), generator=gen, device=device).cpu()
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            views = augment(train.images[idx].to(device), size, aug, gen)
            yield views, train.labels[idx].to(device)

    return in_memory


def eval_view(cfg: RunConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """Evaluation's view of uint8 images at their stored size (`data.test_view`): the central
    image_size pixels, as the paper's resize-256 centre-crop-224, or the whole image resized."""
    aug, size = augmentation(cfg), cfg.data.image_size
    if cfg.data.test_view == "centre_crop":
        return lambda x: deterministic_view(centre_crop(x, size), aug)
    return lambda x: deterministic_view(x, aug, size)


def encode(model: SimSiam, cfg: RunConfig, split: Data, projected: bool = False) -> torch.Tensor:
    """Frozen features of a split, preprocessed as at evaluation (no augmentation): the
    backbone's, or with `projected` z itself (backbone then projector) for the collapse check."""
    net = nn.Sequential(model.backbone, model.projector) if projected else model.backbone
    return extract_features(net, stored_images(split), eval_view(cfg))


@dataclass
class KnnProbe:
    """Weighted kNN on frozen backbone features, the test split queried against the train split:
    the paper's training-time monitor, the random-init control and the evaluation's kNN."""

    cfg: RunConfig
    train: Data
    test: Data

    def features(self, model: SimSiam) -> tuple[torch.Tensor, torch.Tensor]:
        return encode(model, self.cfg, self.train), encode(model, self.cfg, self.test)

    def accuracy(
        self, features: tuple[torch.Tensor, torch.Tensor], k: int, temperature: float
    ) -> float:
        bank, queries = features
        labels = self.train.labels.to(bank.device)
        preds = knn_predict(bank, labels, queries, len(self.train.classes), k, temperature)
        return top1(preds, self.test.labels.to(bank.device))

    def __call__(self, model: SimSiam) -> float:
        """The monitor, at the monitor's k and temperature."""
        monitor = self.cfg.monitor
        return self.accuracy(self.features(model), monitor.knn_k, monitor.knn_temperature)


MONITOR_SEED = 0  # the monitor's subset: the same images for every run, so curves compare


def monitor_probe(cfg: RunConfig, train: Data, test: Data) -> KnnProbe:
    """The kNN monitor of pretraining: over the splits themselves when they are in memory; on
    the streaming path, over a fixed subset of each (MONITOR_PER_CLASS), decoded once."""
    if not isinstance(train, FileIndex):
        return KnnProbe(cfg, train, test)
    subsets = [
        _decoded_subset(s, MONITOR_PER_CLASS[n]) for s, n in ((train, "train"), (test, "test"))
    ]
    return KnnProbe(cfg, *subsets)


def _decoded_subset(split: FileIndex, per_class: int) -> Split:
    """Up to `per_class` images of each class, the same ones every time, decoded into memory."""
    gen = torch.Generator().manual_seed(MONITOR_SEED)
    chosen = []
    for label in range(len(split.classes)):
        members = (split.labels == label).nonzero().flatten()
        if len(members) > per_class:
            members = members[torch.randperm(len(members), generator=gen)[:per_class]].sort().values
        chosen.append(members)
    idx = torch.cat(chosen).tolist()
    subset = replace(split, files=[split.files[i] for i in idx], labels=split.labels[idx])
    return Split(torch.cat(list(stored_images(subset))), subset.labels, split.classes)


def frozen_accuracies(model: SimSiam, cfg: RunConfig, probe: KnnProbe) -> dict[str, float]:
    """kNN and linear top-1 (%) of the frozen backbone: for the trained network and, with the
    same code, for its random init (the control every accuracy is read against)."""
    ev, schedule = cfg.eval, ProbeSchedule.of(cfg)
    features = probe.features(model)
    train, test = probe.train, probe.test
    if ev.linear_probe == "paper":
        dtype = autocast_dtype(cfg.compute.precision, next(model.parameters()).device)
        linear = paper_linear_probe_accuracy(
            model.backbone,
            train,
            test,
            augmentation(cfg),
            cfg.data.image_size,
            schedule,
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
            schedule,
        )
    return {"knn": probe.accuracy(features, ev.knn_k, ev.knn_temperature), "linear": linear}


def evaluation_metrics(
    model: SimSiam, cfg: RunConfig, train: Data, test: Data, initial: dict[str, torch.Tensor]
) -> dict[str, float]:
    """What `evaluate` records of a trained model: its kNN and linear accuracy, the same for
    the weights it started from (`initial`), z's top-direction share on the test images and
    their count (the collapse rule's standard errors). The model keeps its trained weights."""
    probe = KnnProbe(cfg, train, test)
    trained_weights = {k: v.clone() for k, v in model.state_dict().items()}
    trained = frozen_accuracies(model, cfg, probe)
    model.load_state_dict(initial)
    at_init = frozen_accuracies(model, cfg, probe)
    model.load_state_dict(trained_weights)
    return (
        {f"{k}_acc": v for k, v in trained.items()}
        | {f"random_init_{k}": v for k, v in at_init.items()}
        | {
            "z_top_share": top_direction_share(encode(model, cfg, test, projected=True)),
            "test_images": len(test.labels),
        }
    )
