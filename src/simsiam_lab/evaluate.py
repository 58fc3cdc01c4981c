"""Frozen-feature evaluation: weighted kNN, a linear probe, and the collapse diagnostic."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


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
    for _ in range(epochs):
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
