"""Where the target z that the predictor's output is pulled towards comes from (paper §5.2).

`live` is SimSiam itself: the network's own z, behind the loss's stop-gradient. `snapshot` is the
k-step alternation of the paper's hypothesis (a copy of the network refreshed every k SGD steps;
k = 1 is SimSiam again). `moving_average` keeps one vector per image,
eta_x <- m * eta_x + (1 - m) * F(T'(x)), the paper's proof of concept without a predictor.

A target maps the network's own (z1, z2) and the step's `Batch` to the pair the predictor is pulled
to. Where gradients stop is the loss's decision alone (loss.stop_gradient): a target computes
nothing that a gradient could reach but the live z it passes on.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from .config import RunConfig
from .model import SimSiam

Pair = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Batch:
    """What a target may read of an SGD step besides z: the two views, the images' indices in
    the training set, and the step's number (from 0)."""

    x1: torch.Tensor
    x2: torch.Tensor
    idx: torch.Tensor
    step: int


class Target(Protocol):
    def __call__(self, z: Pair, batch: Batch) -> Pair: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class LiveTarget:
    def __call__(self, z: Pair, batch: Batch) -> Pair:
        return z

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class SnapshotTarget:
    """A copy of `model`'s encoder, refreshed from it every `refresh_every` steps."""

    def __init__(self, model: SimSiam, refresh_every: int) -> None:
        self.model, self.refresh_every = model, refresh_every
        self.net = nn.Sequential(copy.deepcopy(model.backbone), copy.deepcopy(model.projector))
        self.net.requires_grad_(False)

    def state_dict(self) -> dict:
        return self.net.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state)

    @torch.no_grad()
    def __call__(self, z: Pair, batch: Batch) -> Pair:
        if batch.step % self.refresh_every == 0:
            self.net[0].load_state_dict(self.model.backbone.state_dict())
            self.net[1].load_state_dict(self.model.projector.state_dict())
        # Train mode, as the live network: BN normalises with the batch's own statistics.
        self.net.train(self.model.training)
        return self.net(batch.x1), self.net(batch.x2)


class MovingAverageTarget:
    def __init__(self, n_images: int, dim: int, momentum: float, device: torch.device) -> None:
        self.momentum = momentum
        self.memory = torch.zeros(n_images, dim, device=device)
        self.seen = torch.zeros(n_images, dtype=torch.bool, device=device)

    def state_dict(self) -> dict:
        return {"memory": self.memory, "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.memory.copy_(state["memory"])
        self.seen.copy_(state["seen"])

    def __call__(self, z: Pair, batch: Batch) -> Pair:
        idx = batch.idx
        with torch.no_grad():  # the memory is a running average, outside the graph
            z2 = z[1].float()
            old = self.memory[idx]
            # An image's first visit starts its average at the current output rather than at 0.
            new = torch.where(
                self.seen[idx, None], self.momentum * old + (1 - self.momentum) * z2, z2
            )
            self.memory[idx] = new
            self.seen[idx] = True
        # z1 as it is: the asymmetric loss this target needs never reads it.
        return z[0], new


def build_target(
    cfg: RunConfig, model: SimSiam, n_images: int, steps_per_epoch: int, device: torch.device
) -> Target:
    target = cfg.target
    if target.mode == "snapshot":
        every = target.refresh_every
        return SnapshotTarget(model, steps_per_epoch if every == "epoch" else every)
    if target.mode == "moving_average":
        return MovingAverageTarget(n_images, cfg.model.dim, target.momentum, device)
    return LiveTarget()
