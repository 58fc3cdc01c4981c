"""Where the target z that the predictor's output is pulled towards comes from (paper §5.2).

`live` is SimSiam itself: the network's own z, behind the loss's stop-gradient. `snapshot` is the
k-step alternation of the paper's hypothesis (a copy of the network refreshed every k SGD steps;
k = 1 is SimSiam again). `moving_average` keeps one vector per image,
eta_x <- m * eta_x + (1 - m) * F(T'(x)), the paper's proof of concept without a predictor.
"""

from __future__ import annotations

import copy
from typing import Protocol

import torch
from torch import nn

from .config import Config
from .model import SimSiam

Pair = tuple[torch.Tensor, torch.Tensor]


class Target(Protocol):
    def __call__(
        self,
        model: SimSiam,
        x1: torch.Tensor,
        x2: torch.Tensor,
        z: Pair,
        idx: torch.Tensor,
        step: int,
    ) -> Pair: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class LiveTarget:
    def __call__(self, model, x1, x2, z, idx, step) -> Pair:
        return z

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class SnapshotTarget:
    def __init__(self, model: SimSiam, refresh_every: int) -> None:
        self.refresh_every = refresh_every
        self.net = nn.Sequential(copy.deepcopy(model.backbone), copy.deepcopy(model.projector))
        self.net.requires_grad_(False)

    def state_dict(self) -> dict:
        return self.net.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state)

    @torch.no_grad()
    def __call__(self, model, x1, x2, z, idx, step) -> Pair:
        if step % self.refresh_every == 0:
            self.net[0].load_state_dict(model.backbone.state_dict())
            self.net[1].load_state_dict(model.projector.state_dict())
        # Train mode, as the live network: BN normalises with the batch's own statistics.
        self.net.train(model.training)
        return self.net(x1), self.net(x2)


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

    @torch.no_grad()
    def __call__(self, model, x1, x2, z, idx, step) -> Pair:
        z2 = z[1].detach().float()
        old = self.memory[idx]
        # An image's first visit starts its average at the current output rather than at 0.
        new = torch.where(self.seen[idx, None], self.momentum * old + (1 - self.momentum) * z2, z2)
        self.memory[idx] = new
        self.seen[idx] = True
        return z[0].detach(), new


def build_target(
    cfg: Config, model: SimSiam, n_images: int, steps_per_epoch: int, device: torch.device
) -> Target:
    target = cfg["target"]
    if target["mode"] == "snapshot":
        every = target["refresh_every"]
        return SnapshotTarget(model, steps_per_epoch if every == "epoch" else every)
    if target["mode"] == "moving_average":
        return MovingAverageTarget(n_images, cfg["model"]["dim"], target["momentum"], device)
    return LiveTarget()
