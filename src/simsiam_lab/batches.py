"""Where a training step's views come from: the in-memory uint8 array, augmented in batches on
the device, or image files streamed through DataLoader workers that crop, with the rest of the
augmentation batched on the device. Both walk the same global batches under torchrun: each
process takes its 1/N of every batch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch

from .augment import BatchShard, augmentation, photometric, two_views
from .config import RunConfig
from .data import MEMORY_SHARE, FileIndex, Split, device_memory, gigabytes
from .errors import DataError
from .stream import EpochLoader, TrainCrops, rank_batches

__all__ = ["BatchSource", "Views", "batch_source"]

Views = tuple[torch.Tensor, torch.Tensor]
Step = tuple[torch.Tensor, list[Views]]  # global indices of this process's rows, view pairs


class BatchSource(Protocol):
    steps_per_epoch: int

    def epoch(self, epoch: int, gen: torch.Generator) -> Iterator[Step]:
        """The epoch's steps; `gen` draws the device-side augmentation."""
        ...


class _Layout:
    """What both sources share: the run's global batch and this process's rows of it."""

    def __init__(self, cfg: RunConfig, n: int, dev: torch.device, rank: int, world: int) -> None:
        self.batch, self.dev, self.rank, self.world = cfg.optim.batch_size, dev, rank, world
        self.local = self.batch // world
        self.shard = BatchShard(rank * self.local, self.batch) if world > 1 else None
        self.steps_per_epoch = n // self.batch  # drop_last, as the paper's loader
        self.size, self.pairs = cfg.data.image_size, cfg.loss.pairs
        self.aug = augmentation(cfg)


class MemoryBatches(_Layout):
    """Images held on the device; the epoch's order and every view are drawn from `gen`."""

    def __init__(self, cfg: RunConfig, train: Split, dev: torch.device, rank: int, world: int):
        super().__init__(cfg, len(train.images), dev, rank, world)
        _check_fits(train.images, dev)
        self.images = train.images.to(dev)

    def epoch(self, epoch: int, gen: torch.Generator) -> Iterator[Step]:
        order = torch.randperm(len(self.images), device=self.dev, generator=gen)
        start = self.rank * self.local
        for i in range(self.steps_per_epoch):
            idx = order[i * self.batch + start : i * self.batch + start + self.local]
            yield idx, self.views(idx, gen)

    def views(self, idx: torch.Tensor, gen: torch.Generator) -> list[Views]:
        """The step's view pairs of these images, drawn from `gen`."""
        images = self.images[idx]
        return [two_views(images, self.size, self.aug, gen, self.shard) for _ in range(self.pairs)]


class StreamBatches(_Layout):
    """Files decoded and cropped in workers, by (seed, epoch, index). On a GPU, colour, blur and
    normalisation are drawn from `gen` on the device, for the whole global batch. On a CPU the
    workers finish the views as well, drawn by (seed, epoch, index) as the crops are: in the
    training process that half had one core to itself and set the pace (benchmarks/run.py's
    streaming section times both layouts)."""

    def __init__(self, cfg: RunConfig, train: FileIndex, dev: torch.device, rank: int, world: int):
        super().__init__(cfg, len(train.files), dev, rank, world)
        self.seed, views = cfg.seed, 2 * self.pairs
        self.finished = dev.type == "cpu"
        self.crops = TrainCrops(train, self.size, self.aug, views, self.seed, self.finished)
        self.batches = EpochLoader(self.crops, self._keys)

    def _keys(self, epoch: int) -> list[list[tuple[int, int]]]:
        return rank_batches(len(self.crops), self.batch, self.seed, epoch, self.rank, self.world)

    def epoch(self, epoch: int, gen: torch.Generator) -> Iterator[Step]:
        for crops, idx in self.batches(epoch):
            crops = crops.to(self.dev, non_blocking=True)
            views = [self._finish(crops[:, v], gen) for v in range(2 * self.pairs)]
            yield idx.to(self.dev), list(zip(views[::2], views[1::2], strict=True))

    def _finish(self, crops: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return crops if self.finished else photometric(crops, self.aug, gen, self.shard)


def batch_source(
    cfg: RunConfig, train: Split | FileIndex, dev: torch.device, rank: int, world: int
) -> BatchSource:
    if isinstance(train, FileIndex):
        return StreamBatches(cfg, train, dev, rank, world)
    return MemoryBatches(cfg, train, dev, rank, world)


def _check_fits(images: torch.Tensor, dev: torch.device) -> None:
    """In-memory training keeps the split on the device: refuse, in one line, what would not fit
    (data prepared on a machine with more memory than the GPU it trains on)."""
    if dev.type != "cuda":
        return
    total = device_memory(dev)
    if images.numel() > MEMORY_SHARE * total:
        raise DataError(
            f"the training images take {gigabytes(images.numel())}, more than "
            f"{MEMORY_SHARE:.0%} of the GPU's {gigabytes(total)}; prepare the data again with "
            "data.loader: stream"
        )
