"""The streaming data path: images decoded from their original files in DataLoader workers.

Every random draw of a sample is a function of (seed, epoch, global index) and each epoch's
order of (seed, epoch), so batches do not depend on the number of workers or processes, and a
run resumed at an epoch boundary sees the batches an uninterrupted run would have.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from .augment import Augmentation, photometric, sample_crop_params
from .data import FileIndex
from .datasource import archive_name, fit, open_rgb
from .errors import DataError

__all__ = [
    "ENV_WORKERS",
    "PROBE",
    "StoredImages",
    "TrainCrops",
    "derived_seed",
    "epoch_order",
    "loader",
    "rank_batches",
    "stored_batches",
]

ENV_WORKERS = "SIMSIAM_WORKERS"
# Separate streams of randomness, so that no two draws share a seed; PROBE: the linear probe's.
_ORDER, _CROP, PROBE = 0, 1, 2


def derived_seed(*key: int) -> int:
    """A 64-bit seed mixed from a key of integers (SeedSequence: nearby keys, unrelated seeds)."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0])


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The epoch's permutation of the n training images."""
    return torch.randperm(
        n, generator=torch.Generator().manual_seed(derived_seed(seed, _ORDER, epoch))
    )


def rank_batches(
    n: int,
    batch: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world: int = 1,
    drop_last: bool = True,
) -> list[list[tuple[int, int]]]:
    """Keys (epoch, global index) of this process's rows of each global batch of the epoch: rank
    r of N takes rows [r * batch / N, (r + 1) * batch / N), as the in-memory path slices its
    order; pretraining drops an incomplete last batch, as the paper's loader does."""
    order, local = epoch_order(seed, epoch, n).tolist(), batch // world
    return [
        [(epoch, i) for i in order[start + rank * local : start + (rank + 1) * local]]
        for start in range(0, n - batch + 1 if drop_last else n, batch)
    ]


class _Reader:
    """Bytes of an indexed file, from a tree or a .zip (opened once per worker process)."""

    def __init__(self, source: Path) -> None:
        self.source, self.is_tree = source, source.is_dir()
        self._zip: tuple[int, zipfile.ZipFile, dict[str, zipfile.ZipInfo]] | None = None

    def __call__(self, name: str) -> bytes:
        try:
            if self.is_tree:
                return (self.source / name).read_bytes()
            return self._archive(name)
        except (OSError, KeyError, zipfile.BadZipFile) as e:
            raise DataError(
                f"cannot read {name} from {self.source} ({type(e).__name__}: {e}); the data "
                "moved or changed since `simsiam prepare`: re-run it"
            ) from e

    def _archive(self, name: str) -> bytes:
        # A ZipFile shares its file offset with forked copies: each process opens its own.
        if self._zip is None or self._zip[0] != os.getpid():
            archive = zipfile.ZipFile(self.source)
            members = {archive_name(i.filename): i for i in archive.infolist()}
            self._zip = os.getpid(), archive, members
        _, archive, members = self._zip
        return archive.read(members[name])

    def image(self, name: str) -> Image.Image:
        return open_rgb(self(name), f"{name} in {self.source}")


def _chw(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img).transpose(2, 0, 1).copy())


class TrainCrops(Dataset):
    """Item (epoch, index) -> (views, index): RandomResizedCrop and flip drawn by
    augment.sample_crop_params over the full decoded image, resized to `size`, as uint8
    (views, 3, size, size); with `finished`, also colour, grayscale, blur and normalisation
    (augment.photometric), drawn from the same generator: float32, the views a step takes."""

    def __init__(
        self,
        index: FileIndex,
        size: int,
        cfg: Augmentation,
        views: int,
        seed: int,
        finished: bool = False,
    ) -> None:
        self.index, self.size, self.cfg, self.views, self.seed = index, size, cfg, views, seed
        self.finished = finished
        self.read = _Reader(index.source)

    def __len__(self) -> int:
        return len(self.index.files)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, i = key
        img = self.read.image(self.index.files[i])
        gen = torch.Generator().manual_seed(derived_seed(self.seed, _CROP, epoch, i))
        params = sample_crop_params(self.views, img.height, img.width, self.cfg, gen)
        crops = torch.stack([self._view(img, params, v) for v in range(self.views)])
        return (photometric(crops, self.cfg, gen) if self.finished else crops), i

    def _view(self, img: Image.Image, params: dict[str, torch.Tensor], v: int) -> torch.Tensor:
        # The parameters are whole pixels as fractions of the side: round back to pixels.
        x0, y0, w, h = (
            round(params[k][v].item() * side)
            for k, side in (
                ("x0", img.width),
                ("y0", img.height),
                ("w", img.width),
                ("h", img.height),
            )
        )
        # Crop then resize, as torchvision's RandomResizedCrop (PIL's bilinear antialiases).
        box = (x0, y0, x0 + w, y0 + h)
        crop = img.resize((self.size, self.size), Image.Resampling.BILINEAR, box)
        if params["flip"][v]:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return _chw(crop)


class StoredImages(Dataset):
    """Item index -> uint8 (3, stored_size, stored_size): the image as `simsiam prepare` would
    have stored it (shorter side resized, centre-cropped), for evaluation."""

    def __init__(self, index: FileIndex) -> None:
        self.index, self.read = index, _Reader(index.source)

    def __len__(self) -> int:
        return len(self.index.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = fit(self.read.image(self.index.files[i]), self.index.stored_size)
        return torch.from_numpy(image.copy())  # a writable array, as torch wants


def workers() -> int:
    """DataLoader workers: $SIMSIAM_WORKERS, else this process's share of the cores (torchrun's
    LOCAL_WORLD_SIZE processes on this host share them) less one for the training loop, up to
    8. Not a config key: results do not depend on it, so it must not change a run's hash."""
    if env := os.environ.get(ENV_WORKERS):
        if not env.isdigit():
            raise DataError(f"{ENV_WORKERS}={env}: use a whole number of workers >= 0")
        return int(env)
    local = os.environ.get("LOCAL_WORLD_SIZE", "1")
    share = len(os.sched_getaffinity(0)) // (int(local) if local.isdigit() and local != "0" else 1)
    return max(1, min(8, share - 1))


def _single_thread(_: int) -> None:
    # A worker's tensors are tiny; torch's thread pool in every worker would oversubscribe.
    torch.set_num_threads(1)


def loader(
    dataset: Dataset, batches, num_workers: int | None = None, keep_workers: bool = False
) -> DataLoader:
    """Batches of `dataset` in the given order (key lists, a batch sampler, or a batch size);
    `keep_workers`: the same workers serve every pass over the loader."""
    n = workers() if num_workers is None else num_workers
    order = {"batch_size": batches} if isinstance(batches, int) else {"batch_sampler": batches}
    return DataLoader(
        dataset,
        **order,
        num_workers=n,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=_single_thread if n else None,
        persistent_workers=keep_workers and n > 0,
    )


class _EpochKeys(Sampler):
    """The batch keys of the epoch last set: iterated in the main process, so that one
    DataLoader with persistent workers serves a different order every epoch."""

    def __init__(self, keys_of: Callable[[int], list[list]]) -> None:
        self.keys_of, self.keys = keys_of, []

    def set_epoch(self, epoch: int) -> None:
        self.keys = self.keys_of(epoch)

    def __iter__(self) -> Iterator[list]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class EpochLoader:
    """`dataset` batched by `keys_of(epoch)`, epoch after epoch, through one DataLoader whose
    workers start once, not once an epoch (each start forks the process and opens its own .zip
    reader). Every draw is keyed by (seed, epoch, image), so keeping them changes no result."""

    def __init__(
        self, dataset: Dataset, keys_of: Callable[[int], list[list]], num_workers: int | None = None
    ) -> None:
        self.keys = _EpochKeys(keys_of)
        self.loader = loader(dataset, self.keys, num_workers, keep_workers=True)

    def __call__(self, epoch: int) -> Iterator:
        self.keys.set_epoch(epoch)
        return iter(self.loader)


def stored_batches(
    split: FileIndex, batch_size: int, num_workers: int | None = None
) -> Iterator[torch.Tensor]:
    """The split's images at their stored size, in index order, batch by batch."""
    yield from loader(StoredImages(split), batch_size, num_workers)
