"""Prepare a dataset once: decoded into uint8 NCHW arrays that training and evaluation load
directly, or, when those would not fit in memory, an index of its files (path and label) that
they stream from (stream.py).

Sources: an ImageFolder tree or an archive of one, read in place (datasource.py), or a
torchvision CIFAR download.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from PIL import Image

from .config import DataConfig, Dataset, Loader, digest
from .datasource import (
    ENV_VAR,
    KNOWN_CLASS_COUNTS,
    Source,
    class_list_identity,
    decode,
    fit,
    layout,
    open_source,
    read_class_list,
    resolve_source,
    source_identity,
)
from .errors import DataError, reason
from .progress import progress

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "test")
CIFAR10_CLASSES = sorted(
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
)
FORMAT = "npy uint8 NCHW"
INDEX_FORMAT = "file index: relative path and label per image"
# In-memory data may take this share of the host's RAM (and of the GPU's memory, when training
# on one); the rest is for the model, the loader, and whatever else the machine runs.
MEMORY_SHARE = 0.5

T = TypeVar("T")


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 Nx3xHxW
    labels: torch.Tensor  # int64 N
    classes: list[str]


@dataclass(frozen=True)
class FileIndex:
    """A split on the streaming path: image files read where they lie, decoded when used."""

    source: Path  # the ImageFolder tree or .zip that `files` are relative to
    files: list[str]
    labels: torch.Tensor  # int64 N
    classes: list[str]
    stored_size: int  # evaluation's resize (shorter side) and centre crop, as prepare's


MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """A prepared directory's manifest.json: what `prepare` made, from what, and how. Training
    checks it against its config, MLflow records it as the run's dataset input, and a report
    names the data and its test images from it."""

    dataset: Dataset
    source: str  # the source's resolved path, or "torchvision" for a download
    source_sha256: str
    stored_size: int
    classes: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> images
    train_per_class: int | None
    test_per_class: int | None
    subset_seed: int
    loader: Loader
    memory_limit_gb: float
    class_list: str | None
    class_list_sha256: str | None
    format: str  # FORMAT (decoded arrays) or INDEX_FORMAT (a file index, streamed)

    @classmethod
    def read(cls, prepared_dir: Path) -> Manifest:
        path = Path(prepared_dir) / MANIFEST
        try:
            found = json.loads(path.read_text())
            return cls(**{field.name: found[field.name] for field in fields(cls)})
        except FileNotFoundError:
            raise DataError(
                f"{path} not found; run `simsiam prepare` to create {prepared_dir}"
            ) from None
        except (OSError, ValueError) as e:
            raise DataError(f"{path} is unreadable ({reason(e)}); re-run `simsiam prepare`") from e
        except (KeyError, TypeError) as e:
            raise DataError(
                f"{path} lacks {e} (written by an older version); re-run `simsiam prepare`"
            ) from None

    def write(self, directory: Path) -> None:
        (Path(directory) / MANIFEST).write_text(json.dumps(asdict(self), indent=2) + "\n")

    def images(self, split: str) -> int:
        return sum(self.counts[split].values())

    @property
    def streamed(self) -> bool:
        return self.format == INDEX_FORMAT

    def check(self, data: DataConfig, prepared_dir: Path) -> None:
        """Is this what a resolved config's data section asks for? A mismatch means a stale
        directory: the error names the key and says to prepare again."""
        path = Path(prepared_dir) / MANIFEST
        if self.source_sha256 != data.source_sha256:
            raise DataError(
                f"{path}: prepared from {self.source} ({str(self.source_sha256)[:12]}), but the "
                f"config's data source is now {data.source or '$SIMSIAM_DATA'} "
                f"({str(data.source_sha256)[:12]}); re-run `simsiam prepare` for this profile"
            )
        # Every setting; the fingerprint above stands for the source.
        expected = data.settings() | {"class_list_sha256": data.class_list_sha256}
        for key, value in expected.items():
            if getattr(self, key) != value:
                raise DataError(
                    f"{path}: {key} = {getattr(self, key)!r} but the config asks for "
                    f"{value!r}; re-run `simsiam prepare` for this profile"
                )


def prepared_identity(data: DataConfig) -> str:
    """What `prepare` makes from a resolved data section, as a short hash: the source by its
    content (not its path) and every key `prepare` reads. A build tool that keys the prepared
    directory by it never deletes one set's prepared data to make another's."""
    return digest(data.prepared() | {"source": None})  # the same bytes elsewhere: the same data


def check_source(spec: DataConfig) -> None:
    """What `prepare` would refuse about a CIFAR copy's layout and classes, checked before
    anything runs, so that a wrong source costs nothing. Only for the datasets with a known
    class count: they are small enough to list at planning, while an ImageNet archive is
    listed once, by `prepare`."""
    if spec.dataset not in KNOWN_CLASS_COUNTS or (source := resolve_source(spec.source)) is None:
        return
    tree = layout(open_source(Path(source)), source)
    _check_class_count(spec, sorted(tree["train"]), source)


def prepare(spec: DataConfig, out_dir: Path, download_root: Path | None = None) -> Manifest:
    """Decode the source once into out_dir/{train,test}_{images,labels}.npy and manifest.json.

    Returns the manifest. out_dir appears only complete: it is built in a temporary sibling
    and renamed into place, so a build tool never mistakes a failed run's output for a result.
    """
    source = resolve_source(spec.source)
    if source is None and spec.dataset not in KNOWN_CLASS_COUNTS:
        raise DataError(
            f"dataset {spec.dataset} needs a source; set data.source or {ENV_VAR} "
            "to an archive or ImageFolder tree"
        )
    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    try:
        if source is None:
            root = Path(download_root) if download_root else out_dir.parent / "downloads"
            classes, arrays = _from_torchvision(spec, root)
        else:
            classes, arrays = _from_tree(spec, open_source(Path(source)), source)
        streamed = any(isinstance(images, list) for images, _ in arrays.values())
        manifest = Manifest(
            **spec.settings(),
            source=str(Path(source).resolve()) if source else "torchvision",
            # The config's, where it has one: hashing a large archive again costs minutes.
            source_sha256=spec.source_sha256 or source_identity(spec.dataset, spec.source),
            classes=classes,
            counts={
                split: {c: int((labels == i).sum()) for i, c in enumerate(classes)}
                for split, (_, labels) in arrays.items()
            },
            class_list_sha256=class_list_identity(spec.class_list),
            format=INDEX_FORMAT if streamed else FORMAT,
        )
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for split, (images, labels) in arrays.items():
            if streamed:
                (tmp / f"{split}_files.txt").write_text("".join(f"{n}\n" for n in images))
            else:
                np.save(tmp / f"{split}_images.npy", images)
            np.save(tmp / f"{split}_labels.npy", labels)
        manifest.write(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def open_split(prepared_dir: Path, split: str) -> Split | FileIndex:
    """One split of a prepared directory, as its manifest's format says: in memory, or the
    index of files that the streaming path decodes as it goes."""
    _check_split(split)
    manifest = Manifest.read(Path(prepared_dir))
    if not manifest.streamed:
        return _load_arrays(Path(prepared_dir), split, manifest.classes)
    names = Path(prepared_dir) / f"{split}_files.txt"
    try:
        files = names.read_text().splitlines()
        labels = np.load(Path(prepared_dir) / f"{split}_labels.npy")
    except (OSError, ValueError) as e:
        raise DataError(
            f"{prepared_dir} is unreadable ({reason(e)}); re-run `simsiam prepare`"
        ) from e
    if labels.shape != (len(files),):
        raise DataError(
            f"{names}: {len(files)} files but {len(labels)} labels; re-run `simsiam prepare`"
        )
    import torch  # torch takes seconds to import: not where a build tool plans

    return FileIndex(
        Path(manifest.source),
        files,
        torch.from_numpy(labels),
        manifest.classes,
        manifest.stored_size,
    )


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"split {split!r} is unknown; use one of {', '.join(SPLITS)}")


def load_split(prepared_dir: Path, split: str) -> Split:
    """One split of a prepared directory as tensors, with the class names its labels index."""
    _check_split(split)
    prepared_dir = Path(prepared_dir)
    return _load_arrays(prepared_dir, split, Manifest.read(prepared_dir).classes)


def _load_arrays(prepared_dir: Path, split: str, classes: list[str]) -> Split:
    """A split's decoded arrays as tensors; `classes`: the manifest's, which the labels index."""
    paths = [prepared_dir / name for name in (f"{split}_images.npy", f"{split}_labels.npy")]
    if missing := [p for p in paths if not p.is_file()]:
        raise DataError(f"{missing[0]} not found; run `simsiam prepare` to create {prepared_dir}")
    try:
        images, labels = (np.load(p) for p in paths)
    except (OSError, ValueError) as e:
        raise DataError(
            f"{prepared_dir} is unreadable ({reason(e)}); re-run `simsiam prepare`"
        ) from e
    if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != (len(images),):
        raise DataError(
            f"{prepared_dir}: {split} arrays have shapes {images.shape}/{labels.shape}, "
            f"expected Nx3xHxW uint8 and N labels; re-run `simsiam prepare`"
        )
    import torch

    return Split(torch.from_numpy(images), torch.from_numpy(labels), classes)


# ---------------------------------------------------------------------------- decoding


def _from_tree(
    spec: DataConfig, source: Source, label: str
) -> tuple[list[str], dict[str, tuple[np.ndarray | list[str], np.ndarray]]]:
    """Per split (images, labels): decoded arrays, or on the streaming path the file names."""
    tree = layout(source, label)
    _check_class_count(spec, sorted(tree["train"]), label)
    tree = {split: _restrict(by_class, spec, label) for split, by_class in tree.items()}
    classes = sorted(tree["train"])
    chosen = {split: _select(tree[split], spec, split, label) for split in SPLITS}
    counts = {split: len(items) for split, items in chosen.items()}
    if _data_path(spec, counts) == "stream":
        if not source.random_access:
            raise DataError(
                f"{label}: the streaming data path reads images one at a time, which a tar "
                "archive cannot do; extract it first and point data.source or "
                f"{ENV_VAR} at the folder (or use a .zip)"
            )
        return classes, {
            split: ([name for _, name in items], _labels(items)) for split, items in chosen.items()
        }
    return classes, {split: _decode_all(spec, source, chosen[split], split) for split in SPLITS}


def _decode_all(
    spec: DataConfig, source: Source, chosen: list[tuple[int, str]], split: str
) -> tuple[np.ndarray, np.ndarray]:
    size = spec.stored_size
    rows = {name: i for i, (_, name) in enumerate(chosen)}
    images = np.empty((len(chosen), 3, size, size), np.uint8)
    decoding = progress(source.read(list(rows)), total=len(rows), desc=split, unit="img")
    for name, data in decoding:
        images[rows[name]] = decode(data, size, source.where(name))
    return images, _labels(chosen)


def _labels(chosen: list[tuple[int, T]]) -> np.ndarray:
    return np.array([c for c, _ in chosen], np.int64)


def _from_torchvision(
    spec: DataConfig, root: Path
) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    from torchvision import datasets  # slow import, needed only on this path

    factory = datasets.CIFAR10 if spec.dataset == "cifar10" else datasets.CIFAR100
    classes, arrays = [], {}
    for split in SPLITS:
        try:
            ds = factory(root=str(root), train=split == "train", download=True)
        except (OSError, RuntimeError) as e:
            raise DataError(
                f"no local copy of {spec.dataset} and download failed ({reason(e)}); set "
                f"{ENV_VAR} to an archive or ImageFolder tree, e.g. "
                f"{ENV_VAR}=../shared/datasets/cifar10-jpeg.tar.gz"
            ) from e
        targets = np.asarray(ds.targets)
        by_class = {c: list(np.flatnonzero(targets == i)) for i, c in enumerate(ds.classes)}
        by_class = _restrict(by_class, spec, f"torchvision {spec.dataset}")
        classes = sorted(by_class)
        chosen = _select(by_class, spec, split, f"torchvision {spec.dataset}")
        hwc = ds.data[np.array([i for _, i in chosen], np.int64)]
        if hwc.shape[1:3] == (spec.stored_size, spec.stored_size):
            images = np.ascontiguousarray(hwc.transpose(0, 3, 1, 2))
        else:
            images = np.stack([fit(Image.fromarray(a), spec.stored_size) for a in hwc])
        arrays[split] = images, _labels(chosen)
    if _data_path(spec, {split: len(labels) for split, (_, labels) in arrays.items()}) == "stream":
        raise DataError(
            f"data.loader = {spec.loader}: the streaming data path reads image files, which the "
            f"torchvision download of {spec.dataset} is not; use data.loader: memory, or an "
            "ImageFolder tree as the source"
        )
    return classes, arrays


def _check_class_count(spec: DataConfig, classes: list[str], label: str) -> None:
    expected = KNOWN_CLASS_COUNTS.get(spec.dataset)
    fix = f"point the source at a copy of {spec.dataset}, or use dataset imagefolder"
    if expected is not None and len(classes) != expected:
        raise DataError(
            f"{label} has {len(classes)} classes but {spec.dataset} has {expected}; {fix}"
        )
    # Ten classes are not CIFAR-10: a dataset is reported and tracked under the name it has.
    if spec.dataset == "cifar10" and sorted(c.lower() for c in classes) != CIFAR10_CLASSES:
        raise DataError(
            f"{label} has classes {', '.join(sorted(classes)[:4])}, ..., not CIFAR-10's "
            f"({', '.join(CIFAR10_CLASSES[:4])}, ...); {fix}"
        )


def _restrict(by_class: dict[str, T], spec: DataConfig, label: str) -> dict[str, T]:
    """The classes data.class_list names (all when it is null)."""
    if spec.class_list is None:
        return by_class
    wanted = read_class_list(spec.class_list)
    if missing := [c for c in wanted if c not in by_class]:
        raise DataError(
            f"{label}: {len(missing)} of the {len(wanted)} classes in data.class_list = "
            f"{spec.class_list} are not in the data ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}); point the source at a copy that has them"
        )
    return {c: by_class[c] for c in wanted}


# ---------------------------------------------------------------------------- data path


def host_memory() -> int:
    """Bytes of RAM this process may use: the machine's, or its cgroup's limit if lower."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    with contextlib.suppress(OSError, ValueError):
        total = min(total, int(Path("/sys/fs/cgroup/memory.max").read_text()))  # "max": none
    return total


def device_memory(dev: torch.device | int = 0) -> int | None:
    """Bytes of memory on the GPU training would use; None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(dev).total_memory


def choose_loader(
    loader: str,
    limit_gb: float,
    total_bytes: int,
    train_bytes: int,
    ram: int,
    gpu: int | None,
) -> tuple[str, str]:
    """("memory" | "stream", the line saying why). `auto` decides by the data alone, so that
    the same config trains on the same path on every machine (the path is part of what a run
    trained on): in memory when the decoded arrays of `total_bytes` (train and test) take at
    most `limit_gb` (data.memory_limit_gb), else streamed. In memory, they must also fit in
    MEMORY_SHARE of this machine's RAM (and the training split of its GPU's memory): a dataset
    that does not is refused here, not by an out-of-memory kill later."""
    if loader == "stream":
        return "stream", "data path: streaming (data.loader: stream)"
    if loader == "auto" and total_bytes > limit_gb * 1e9:
        return "stream", (
            f"data path: streaming, the decoded images would take {gigabytes(total_bytes)}, more "
            f"than data.memory_limit_gb = {limit_gb:g}"
        )
    limits = [(total_bytes, ram, "RAM")] + ([(train_bytes, gpu, "GPU memory")] if gpu else [])
    for need, have, what in limits:
        if need > MEMORY_SHARE * have:
            raise DataError(
                f"data.loader = {loader}: the decoded images take {gigabytes(need)}, more than "
                f"{MEMORY_SHARE:.0%} of this machine's {gigabytes(have)} {what}; use "
                "data.loader: stream"
                + (" (or a lower data.memory_limit_gb)" if loader == "auto" else "")
            )
    return "memory", f"data path: in-memory, {gigabytes(total_bytes)} of {gigabytes(ram)} RAM"


def _data_path(spec: DataConfig, counts: dict[str, int]) -> str:
    per_image = 3 * spec.stored_size**2
    path, why = choose_loader(
        spec.loader,
        spec.memory_limit_gb,
        per_image * sum(counts.values()),
        per_image * counts["train"],
        host_memory(),
        device_memory(),
    )
    print(why, flush=True)
    return path


def gigabytes(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def _select(
    by_class: dict[str, Sequence[T]], spec: DataConfig, split: str, label: str
) -> list[tuple[int, T]]:
    """(label, item) pairs in class order; a seeded stratified subset of up to n a class when
    the spec asks (the manifest's counts say what was taken)."""
    n = getattr(spec, f"{split}_per_class")
    # Seeded per split, so changing test_per_class leaves the train subset as it was.
    rng = np.random.default_rng([spec.subset_seed, SPLITS.index(split)])
    chosen = []
    for index, cls in enumerate(sorted(by_class)):
        items = by_class[cls]
        if n is not None and len(items) > n:  # up to n: a smaller class is taken whole
            items = [items[i] for i in np.sort(rng.choice(len(items), n, replace=False))]
        chosen.extend((index, item) for item in items)
    return chosen
