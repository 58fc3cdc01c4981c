"""Speed of our SimSiam beside its peers, in one process, on one device, with the same seeds.

    python benchmarks/run.py [--quick [--with-dvc]] [--device cpu|cuda] [--data ARCHIVE]
    python benchmarks/run.py --epoch [--device cpu|cuda] [--data ARCHIVE]   # what gpu.sh runs
    python benchmarks/run.py --render                # reports/benchmarks.md again from its .json

Writes reports/benchmarks.md and reports/benchmarks.json; the last stdout line is that JSON.
Every throughput is the median over repeats, contenders interleaved so drift hits all alike.
`--epoch` times whole epochs of the `cifar10` profile, our loop beside main_simsiam.py's
DataLoader loop, and puts them into the existing report beside its other sections (a CUDA run
without --epoch measures them too); on a CPU it runs a reduced version that tests can afford.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from itertools import pairwise
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from jinja2 import Environment, FileSystemLoader

from simsiam_lab.augment import augmentation, photometric, two_views
from simsiam_lab.batches import MemoryBatches, StreamBatches
from simsiam_lab.config import RunConfig
from simsiam_lab.data import Split, load_split, open_split, prepare
from simsiam_lab.distributed import autocast_dtype
from simsiam_lab.evaluate import knn_predict, top1
from simsiam_lab.model import ResNetTrunk
from simsiam_lab.stream import ENV_WORKERS, EpochLoader, TrainCrops, rank_batches
from simsiam_lab.study import Params
from simsiam_lab.target import LiveTarget, build_target
from simsiam_lab.train import (
    build_criterion,
    build_model,
    build_optimizer,
    fast_path,
    peak_lr,
    pretrain,
    set_learning_rates,
    sgd_step,
    view_format,
)

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # the tests' project copier
from peers import (
    LightlySimSiam,
    OfficialStyleLoop,
    ReferenceSimSiam,
    lightly_loss,
    official_loader,
    reference_loss,
)
from project import copy_project, use_dvc_profile

ROOT = Path(__file__).parents[1]
ARCHIVE = "cifar10-jpeg.tar.gz"
SLOW_STEP_S = 20.0
OFF = {"channels_last": False, "precision": "fp32", "compile": False}
# A benchmark prepares the whole tree it made, whatever subset the profile's data section takes.
WHOLE_TREE = {
    "train_per_class": None,
    "test_per_class": None,
    "subset_seed": 0,
    "class_list": None,
    "source_sha256": None,
}


@dataclass(frozen=True)
class Scale:
    batch: int
    warmup: int
    steps: int  # per timed repeat
    repeats: int
    knn_repeats: int


QUICK = {"cpu": Scale(64, 2, 2, 3, 2), "cuda": Scale(512, 10, 10, 5, 3)}
FULL = {"cpu": Scale(256, 2, 3, 5, 3), "cuda": Scale(512, 20, 20, 7, 5)}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn: Callable[[], object], dev: torch.device, n: int) -> float:
    sync(dev)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    sync(dev)
    return time.perf_counter() - start


def study_config() -> RunConfig:
    """The CIFAR-10 profile with the paper's ImageNet heads, which lightly's heads hard-code."""
    cfg = Params(ROOT / "params").resolve("cifar10")
    heads = {"projector_layers": 3, "dim": 2048, "predictor_hidden_dim": 512}
    return cfg.merged({"model": heads}, "benchmark")


def our_step(cfg: RunConfig, compute: dict, views, dev: torch.device) -> Callable[[], object]:
    cfg = cfg.merged({"compute": compute}, "benchmark")
    torch.manual_seed(0)
    model = build_model(cfg).to(dev)
    fmt, dtype = fast_path(cfg, model, dev)
    criterion = build_criterion(cfg)
    opt = build_optimizer(model, cfg)
    idx = torch.arange(len(views[0]), device=dev)
    pair = [fmt(views)]
    return lambda: sgd_step(model, criterion, LiveTarget(), opt, pair, idx, 0, dtype)


def peer_step(cfg: RunConfig, peer: str, views, dev: torch.device) -> Callable[[], object]:
    torch.manual_seed(0)
    m = cfg.model
    backbone = ResNetTrunk(m.backbone, m.width, m.cifar_stem)
    cls, loss_fn = (
        (LightlySimSiam, lightly_loss) if peer == "lightly" else (ReferenceSimSiam, reference_loss)
    )
    model = cls(backbone, backbone.out_dim, m.dim, m.predictor_hidden_dim).to(dev)
    o = cfg.optim
    opt = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=o.momentum, weight_decay=o.weight_decay
    )

    def step() -> None:
        loss = loss_fn(model, *views)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def contenders(cfg: RunConfig, dev: torch.device, with_compile: bool) -> dict[str, dict | str]:
    default = asdict(cfg.compute)
    ours: dict[str, dict | str] = {
        "lightly (fp32, eager)": "lightly",
        "builder.py reference (fp32, eager)": "reference",
        "ours, all switches off": OFF,
        "ours + channels_last": OFF | {"channels_last": True},
        "ours + bf16 autocast": OFF | {"precision": "bf16"},
    }
    if with_compile:
        ours["ours + torch.compile"] = OFF | {"compile": True}
    ours[f"ours, defaults ({_describe(default, dev)})"] = default
    return ours


def _describe(compute: dict, dev: torch.device) -> str:
    on = [k for k in ("channels_last", "compile") if compute[k]]
    return ", ".join([*on, "bf16" if autocast_dtype(compute["precision"], dev) else "fp32"])


def bench_train_step(cfg: RunConfig, dev: torch.device, scale: Scale, with_compile: bool) -> dict:
    gen = torch.Generator(device=dev).manual_seed(0)
    size = cfg.data.image_size
    images = torch.randint(0, 256, (scale.batch, 3, size, size), dtype=torch.uint8, device=dev)
    views = two_views(images, size, augmentation(cfg), gen)
    steps, warmup_s, rates, slow = {}, {}, {}, set()
    for name, spec in contenders(cfg, dev, with_compile).items():
        make = peer_step if isinstance(spec, str) else our_step
        steps[name] = make(cfg, spec, views, dev)
        warmup_s[name] = timed(steps[name], dev, 1)  # compiles, if it compiles
        second = timed(steps[name], dev, 1)
        rates[name] = []
        if second > SLOW_STEP_S:  # an order of magnitude off the pace: that step is its figure
            slow.add(name)
            rates[name].append(scale.batch / second)
        else:
            timed(steps[name], dev, max(0, scale.warmup - 2))
    for _ in range(scale.repeats):
        for name in [n for n in steps if n not in slow]:
            rates[name].append(scale.batch * scale.steps / timed(steps[name], dev, scale.steps))
    return {
        name: {
            "images_per_s": statistics.median(r),
            "spread": (min(r), max(r)),
            "warmup_s": warmup_s[name],
            "timed_steps": 1 if name in slow else len(r) * scale.steps,
        }
        for name, r in rates.items()
    }


def bench_data_path(cfg: RunConfig, dev: torch.device, scale: Scale) -> dict:
    """Prepared uint8 on the device -> two augmented, formatted views, as the training loop does."""
    size, stored = cfg.data.image_size, cfg.data.stored_size
    fmt = view_format(cfg.compute)
    n = scale.batch * 8
    images = torch.randint(0, 256, (n, 3, stored, stored), dtype=torch.uint8, device=dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    aug = augmentation(cfg)

    def views() -> None:
        idx = torch.randint(0, n, (scale.batch,), device=dev, generator=gen)
        fmt(two_views(images[idx], size, aug, gen))

    timed(views, dev, 2)
    rates = [scale.batch * 10 / timed(views, dev, 10) for _ in range(max(3, scale.repeats))]
    return {"images_per_s": statistics.median(rates), "spread": (min(rates), max(rates))}


def bench_knn(dev: torch.device, repeats: int) -> dict:
    gen = torch.Generator(device=dev).manual_seed(0)
    bank = torch.randn(50_000, 512, device=dev, generator=gen)
    queries = torch.randn(10_000, 512, device=dev, generator=gen)
    labels = torch.randint(0, 10, (50_000,), device=dev, generator=gen)
    query_labels = torch.randint(0, 10, (10_000,), device=dev, generator=gen)

    def knn() -> None:
        top1(knn_predict(bank, labels, queries, 10, 200, 0.1), query_labels)

    times = [timed(knn, dev, 1) for _ in range(repeats)]
    return {"seconds": statistics.median(times), "spread": (min(times), max(times))}


def _wall(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{tail}")
    return time.perf_counter() - start


def bench_pipeline(data: Path, with_dvc: bool) -> dict:
    """Smoke Table 3 through Snakemake, one job at a time, and the time that is not the jobs'."""
    env = dict(os.environ, SIMSIAM_DATA=str(data.resolve()))
    env.pop("MLFLOW_TRACKING_URI", None)
    threads = str(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "snakemake"
        copy_project(project)
        wall = _wall(
            [
                "snakemake",
                "--cores",
                threads,
                "reports/table3.md",
                "--config",
                "profile=smoke",
                f"threads={threads}",
            ],
            project,
            env,
        )
        jobs = [
            float(tsv.read_text().splitlines()[1].split("\t")[0])
            for tsv in (project / "logs" / "smoke" / "benchmark").rglob("*.tsv")
        ]
        out = {
            "table3_wall_s": wall,
            "jobs": len(jobs),
            "jobs_s": sum(jobs),
            "snakemake_overhead_per_job_s": (wall - sum(jobs)) / len(jobs),
        }
        if with_dvc:
            project = Path(tmp) / "dvc"
            copy_project(project)
            use_dvc_profile(project, "smoke")
            dvc_wall = _wall(["dvc", "repro", "report-table3"], project, env)
            # Same commands as Snakemake's jobs: what DVC adds is its wall minus theirs.
            out |= {
                "dvc_table3_wall_s": dvc_wall,
                "dvc_overhead_per_stage_s": (dvc_wall - sum(jobs)) / len(jobs),
            }
        return out


# ---------------------------------------------------------------------------- an epoch


@dataclass(frozen=True)
class EpochScale:
    repeats: int  # timed epochs of each loop, interleaved, after one warm-up epoch each
    probe_steps: int  # batches timed for the augmentation alone and for the step alone
    per_class: int | None = None  # training (and test) images a class taken; None: all
    workers: int | None = None  # the DataLoader's; None: one per CPU core this process may use
    overrides: dict | None = None  # on the cifar10 profile: a network and batch a CPU affords


# A CPU cannot afford an epoch of the real profile (about 45 min on 2 cores): the same code on a
# tiny network, batch and subset, so that the epoch section and the DataLoader peer are tested.
TINY = {"model": {"width": 8, "dim": 64, "predictor_hidden_dim": 16}, "optim": {"batch_size": 32}}
EPOCH = {
    "cuda": EpochScale(repeats=3, probe_steps=20),
    "cpu": EpochScale(repeats=1, probe_steps=2, per_class=16, workers=2, overrides=TINY),
}
EPOCH_TARGETS = {"epoch_s": 8.0, "speedup": 1.5}  # issue 13, on an H100


def epoch_config(scale: EpochScale) -> RunConfig:
    """The `cifar10` profile (paper App. D) as pretraining resolves it, reduced on a CPU."""
    cfg = Params(ROOT / "params").resolve("cifar10")
    return cfg.merged(scale.overrides, "benchmark (reduced)") if scale.overrides else cfg


class OurLoop:
    """train.py's loop (`_train`), one process: images in device memory as uint8, a permutation
    per epoch, both views augmented on the device by `two_views`, `sgd_step` with the schedule's
    lr, loss and std(z) summed on the device and read once an epoch. Built from the library's
    own functions in the order `pretrain` calls them, so that it starts from the same weights
    and draws the same batches and views (tests/test_benchmarks.py checks that one epoch ends
    on `pretrain`'s weights); unlike `pretrain` it stops between epochs, so the loops can be
    interleaved, and it skips the per-epoch state.pt (timed by `bench_pretrain`)."""

    def __init__(self, cfg: RunConfig, train: Split, dev: torch.device) -> None:
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg).to(dev)
        self.gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
        self.source = MemoryBatches(cfg, train, dev, rank=0, world=1)
        self.batch = cfg.optim.batch_size
        self.criterion = build_criterion(cfg)
        self.opt = build_optimizer(self.model, cfg)
        self.peak = peak_lr(cfg)
        steps_per_epoch = self.source.steps_per_epoch
        self.total = cfg.optim.epochs * steps_per_epoch
        self.warmup = round(cfg.optim.warmup_fraction * self.total)
        self.target = build_target(cfg, self.model, len(train.labels), steps_per_epoch, dev)
        self.fmt, self.dtype = fast_path(cfg, self.model, dev)
        self.step = self.epochs = 0

    def views(self, idx: torch.Tensor) -> list:
        return [self.fmt(pair) for pair in self.source.views(idx, self.gen)]

    def train_step(self, views: list, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        set_learning_rates(self.opt, self.step, self.total, self.warmup, self.peak)
        out = sgd_step(
            self.model, self.criterion, self.target, self.opt, views, idx, self.step, self.dtype
        )
        self.step += 1
        return out

    def epoch(self) -> dict:
        self.model.train()
        self.epochs += 1
        loss_sum = torch.zeros((), device=self.source.dev)
        std_sum = torch.zeros((), device=self.source.dev)
        for idx, pairs in self.source.epoch(self.epochs, self.gen):
            loss, z1 = self.train_step([self.fmt(pair) for pair in pairs], idx)
            loss_sum += loss
            # Unread here, but _train sums it every step: the timing includes its cost.
            std_sum += F.normalize(z1.float(), dim=1).std(dim=0).mean()
        steps = self.source.steps_per_epoch
        return {"images": steps * self.batch, "steps": steps, "loss": loss_sum.item() / steps}


def _extract(archive: Path, dest: Path, per_class: int | None) -> None:
    """The archive's files, or the first `per_class` of each folder (a class of a split)."""
    taken: Counter[str] = Counter()

    def members(tar: tarfile.TarFile):
        for m in tar:
            folder = m.name.removeprefix("./").rpartition("/")[0]
            if m.isfile() and (per_class is None or taken[folder] < per_class):
                taken[folder] += 1
                yield m

    with tarfile.open(archive, "r:*") as tar:
        tar.extractall(dest, members=members(tar), filter="data")


def epoch_data(
    source: Path, workdir: Path, cfg: RunConfig, per_class: int | None
) -> tuple[Path, Path]:
    """The same images two ways: an ImageFolder tree of JPEGs for the official-style loop (the
    archive extracted into workdir, or a tree as given) and the library's prepared uint8 arrays
    of that tree for ours (`simsiam prepare`'s `data.prepare`). Returns (train folder, prepared)."""
    if source.is_dir():
        if per_class is not None:
            raise SystemExit(f"{source}: a reduced epoch needs the archive, not a tree")
        tree = source
    else:
        tree = workdir / "tree"
        _extract(source, tree, per_class)
    root = tree if (tree / "train").is_dir() else next(tree.glob("*/train")).parent
    prepared = workdir / "prepared"
    prepare(replace(cfg.data, **WHOLE_TREE, source=str(root), loader="auto"), prepared)
    return root / "train", prepared


def _epoch_timed(loop, dev: torch.device) -> tuple[float, dict]:
    sync(dev)
    start = time.perf_counter()
    out = loop.epoch()
    sync(dev)
    return time.perf_counter() - start, out


def official_style(cfg: RunConfig, dev: torch.device, train_tree: Path, workers: int):
    """main_simsiam.py's loop over the JPEG tree, with our model, compute switches and SGD."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(dev)
    fmt, dtype = fast_path(cfg, model, dev)
    aug = augmentation(cfg)
    loader = official_loader(
        train_tree,
        cfg.optim.batch_size,
        workers,
        cfg.data.image_size,
        aug.mean,
        aug.std,
        pin_memory=dev.type == "cuda",
    )
    opt, criterion = build_optimizer(model, cfg), build_criterion(cfg)
    return OfficialStyleLoop(model, opt, criterion, loader, dev, fmt, dtype)


def _parts(loops: dict, dev: torch.device, n: int, size: int) -> dict[str, dict[str, float]]:
    """Seconds a batch, each part alone and synchronised: our augmentation (both views, in the
    step's memory format) and every loop's training step on fixed views of its batch."""
    parts: dict[str, dict[str, float]] = {}
    for name, loop in loops.items():
        if isinstance(loop, OurLoop):
            idx = torch.arange(loop.batch, device=dev)
            augment = partial(loop.views, idx)
            timed(augment, dev, 1)
            parts[name] = {"augment_alone_s": timed(augment, dev, n) / n}
            step = partial(loop.train_step, augment(), idx)
        else:
            gen = torch.Generator().manual_seed(0)
            shape = (loop.loader.batch_size, 3, size, size)
            step = partial(loop.step, *loop.to_device([torch.randn(shape, generator=gen)] * 2))
            parts[name] = {}
        timed(step, dev, 1)
        parts[name]["step_alone_s"] = timed(step, dev, n) / n
    return parts


OFFICIAL = "official-style: ImageFolder + PIL in {} DataLoader workers"
STREAMING = "ours: streaming, as it trains on a CPU (decoded, cropped, finished in workers)"
COMPILED = "ours + torch.compile"


def bench_epoch(
    cfg: RunConfig,
    dev: torch.device,
    train_tree: Path,
    prepared: Path,
    scale: EpochScale,
    with_compile: bool,
) -> dict:
    """Whole epochs of each loop over the same training images, interleaved; then each loop's
    step alone and our augmentation alone, to say where an epoch's time goes."""
    train = load_split(prepared, "train")
    workers = scale.workers or len(os.sched_getaffinity(0))
    ours = f"ours, defaults ({_describe(asdict(cfg.compute), dev)})"
    loops: dict = {ours: OurLoop(cfg, train, dev)}
    if with_compile:
        compiled = cfg.merged({"compute": {"compile": True}}, "benchmark")
        loops[COMPILED] = OurLoop(compiled, train, dev)
    official = OFFICIAL.format(workers)
    loops[official] = official_style(cfg, dev, train_tree, workers)
    first, errors = {}, {}
    for name, loop in list(loops.items()):
        try:  # compiles, starts the workers
            first[name] = _epoch_timed(loop, dev)[0]
        except Exception as e:  # a compiler that fails here is a finding, not the end of the run
            if name != COMPILED:
                raise
            errors[name] = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            del loops[name]
            print(f"epoch       {name}: failed ({errors[name]})", flush=True)
            continue
        print(f"epoch       {name:55s} first {first[name]:7.2f} s", flush=True)
    runs: dict[str, list[tuple[float, dict]]] = {name: [] for name in loops}
    for _ in range(scale.repeats):
        for name, loop in loops.items():
            runs[name].append(_epoch_timed(loop, dev))
    parts = _parts(loops, dev, scale.probe_steps, cfg.data.image_size)

    figures = {}
    for name, timed_runs in runs.items():
        times = [t for t, _ in timed_runs]
        last = timed_runs[-1][1]
        epoch_s, steps = statistics.median(times), last["steps"]
        r = {
            "epoch_s": epoch_s,
            "spread": (min(times), max(times)),
            "first_epoch_s": first[name],
            "timed_epochs": len(times),
            "images": last["images"],  # a timed epoch's, every epoch alike (drop_last)
            "steps": steps,
            "images_per_s": last["images"] / epoch_s,
            "loss": last["loss"],
            **parts[name],
            "step_share": steps * parts[name]["step_alone_s"] / epoch_s,
        }
        if "augment_alone_s" in r:
            r["augment_share"] = steps * r["augment_alone_s"] / epoch_s
        if "data_wait_s" in last:
            r["data_wait_s"] = statistics.median(o["data_wait_s"] for _, o in timed_runs)
            r["data_wait_share"] = statistics.median(o["data_wait_s"] / t for t, o in timed_runs)
        figures[name] = r
        print(
            f"epoch       {name:55s} {epoch_s:7.2f} s  {r['images_per_s']:9.0f} img/s",
            flush=True,
        )
    return {
        "loops": figures,
        "official": official,
        "speedup_vs_official": {
            name: figures[official]["epoch_s"] / r["epoch_s"]
            for name, r in figures.items()
            if name != official
        },
        "compile_measured": COMPILED in figures,
        "errors": errors,
        "workers": workers,
        "train_images": len(train.images),
    }


STREAM_TREE = {"classes": 10, "per_class": 64, "size": 128}  # a generated 128 px ImageFolder


def stream_tree(root: Path, classes: int, per_class: int, size: int) -> Path:
    """train/ (and a small test/) of JPEGs: smooth colour gradients with noise, so that each
    decodes as a photo does, not as a flat colour."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", per_class), ("test", 2)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                ramp = torch.linspace(0, 1, size)
                base = torch.rand(3, 1, 1, generator=gen) * ramp[None, :, None] * ramp[None, None]
                noise = 0.2 * torch.rand(3, size, size, generator=gen)
                pixels = ((base + noise).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return root


def bench_streaming(workdir: Path, workers: int, repeats: int, tree: dict = STREAM_TREE) -> dict:
    """Views of an epoch, without a model: our streaming path as it trains on a CPU (files
    decoded, cropped and finished in DataLoader workers) against main_simsiam.py's ImageFolder
    with PIL transforms in a DataLoader, the same number of workers, on the same generated
    tree, at the folder profile's augmentation (no blur, as official_augmentation); and ours
    laid out as on a GPU (the photometric half batched in the training process), on this CPU."""
    root = stream_tree(workdir / "stream-tree", **tree)
    cfg = RunConfig.of(Params(ROOT / "params").resolve_params("folder"))
    crop = tree["size"] * 7 // 8  # 112 of 128, as 224 of 256
    data = {
        "image_size": crop,
        "stored_size": tree["size"],
        "loader": "stream",
        "train_per_class": None,
        "test_per_class": None,
    }
    cfg = cfg.merged({"data": data}, "benchmark (streaming)")
    prepared = workdir / "stream-prepared"
    prepare(replace(cfg.data, **WHOLE_TREE, source=str(root)), prepared)
    dev = torch.device("cpu")
    train = open_split(prepared, "train")
    with mock.patch.dict(os.environ, {ENV_WORKERS: str(workers)}):  # the loader's workers
        ours = StreamBatches(cfg, train, dev, rank=0, world=1)
    aug = augmentation(cfg)
    batch = cfg.optim.batch_size
    official = official_loader(root / "train", batch, workers, crop, aug.mean, aug.std, False)
    gen = torch.Generator().manual_seed(0)
    # The GPU's layout: the workers crop, the training process finishes the views batched.
    crops = TrainCrops(train, crop, aug, 2, cfg.seed)
    cropped = EpochLoader(crops, partial(rank_batches, len(crops), batch, cfg.seed), workers)

    def our_epoch(epoch: int) -> int:
        return sum(len(idx) for idx, _ in ours.epoch(epoch, gen))

    def official_epoch(epoch: int) -> int:
        return sum(len(labels) for _, labels in official)

    def gpu_layout_epoch(epoch: int) -> int:
        images = 0
        for views, idx in cropped(epoch):
            for v in range(2):
                photometric(views[:, v], aug, gen)
            images += len(idx)
        return images

    loops = {
        STREAMING: our_epoch,
        OFFICIAL.format(workers): official_epoch,
        "ours laid out as on a GPU: the workers crop, the training process finishes": (
            gpu_layout_epoch
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for epoch in range(repeats + 1):  # the first starts the workers: not timed
        for name, run in loops.items():
            start = time.perf_counter()
            images = run(epoch + 1)
            if epoch:
                rates[name].append(images / (time.perf_counter() - start))
    figures = {name: statistics.median(r) for name, r in rates.items()}
    for name, rate in figures.items():
        print(f"streaming   {name:55s} {rate:8.0f} img/s", flush=True)
    ours_name, official_name, gpu_layout = loops
    return {
        "images_per_s": figures,
        "speedup": figures[ours_name] / figures[official_name],
        "gpu_layout_speedup": figures[gpu_layout] / figures[official_name],
        "workers": workers,
        "train_images": tree["classes"] * tree["per_class"],
        "size": tree["size"],
        "crop": crop,
        "batch": batch,
        "repeats": repeats,
    }


def bench_pretrain(cfg: RunConfig, prepared: Path, epochs: int) -> dict:
    """`pretrain` itself for `epochs` epochs (no kNN monitor): an epoch is the time between two
    of its per-epoch records, its state.pt write included; the first is left out."""
    cfg = cfg.merged(
        {"optim": {"epochs": epochs}, "monitor": {"knn_every": 0}}, "benchmark (pretrain)"
    )
    stamps = [time.perf_counter()]
    with tempfile.TemporaryDirectory() as out:
        summary = pretrain(cfg, prepared, Path(out), lambda _: stamps.append(time.perf_counter()))
    times = [b - a for a, b in pairwise(stamps[1:])]
    return {
        "epoch_s": statistics.median(times),
        "spread": (min(times), max(times)),
        "first_epoch_s": stamps[1] - stamps[0],
        "timed_epochs": len(times),
        "images": summary["steps"] // epochs * cfg.optim.batch_size,
        "status": summary["status"],
        "device": summary["device"],
    }


def run_epoch(
    data: Path, dev: torch.device, scale: EpochScale, with_compile: bool, workdir: Path | None
) -> dict:
    cfg = epoch_config(scale)
    if workdir:
        workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="epoch-") as tmp:
        start = time.perf_counter()
        tree, prepared = epoch_data(data, Path(tmp), cfg, scale.per_class)
        manifest = json.loads((prepared / "manifest.json").read_text())
        print(f"epoch       data ready in {time.perf_counter() - start:.0f} s", flush=True)
        out = bench_epoch(cfg, dev, tree, prepared, scale, with_compile)
        out["pretrain"] = bench_pretrain(cfg, prepared, scale.repeats + 1)
        print(f"epoch       pretrain() {out['pretrain']['epoch_s']:.2f} s an epoch", flush=True)
    m = asdict(cfg.model)
    return out | {
        "machine": machine(dev),
        "reduced": scale.overrides is not None or scale.per_class is not None,
        "per_class": scale.per_class,
        "repeats": scale.repeats,
        "probe_steps": scale.probe_steps,
        "source": f"{data.name} (sha256 {str(manifest['source_sha256'])[:12]})",
        "batch": cfg.optim.batch_size,
        "image_size": cfg.data.image_size,
        "model": {k: m[k] for k in ("backbone", "width", "cifar_stem", "projector_layers", "dim")}
        | {"predictor_hidden_dim": m["predictor_hidden_dim"]},
        "compute": asdict(cfg.compute),
        "targets": EPOCH_TARGETS,
    }


def machine(dev: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(dev),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
        info["cuda"] = torch.version.cuda
    try:
        info["lightly"] = version("lightly")
    except PackageNotFoundError:
        info["lightly"] = "not installed"
    return info


def write_report(results: dict, out: Path) -> None:
    """reports/benchmarks.md from the results, and the results as reports/benchmarks.json."""
    env = Environment(loader=FileSystemLoader(Path(__file__).parent), keep_trailing_newline=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = env.get_template("benchmarks.md.j2").render(r=results, cfg=study_config())
    out.write_text(re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n")  # one blank line at most
    out.with_suffix(".json").write_text(json.dumps(results) + "\n")


def previous(out: Path) -> dict:
    """The results the report holds now ({} if none), so one section can be measured anew."""
    try:
        return json.loads(out.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 10 minutes on 2 CPU cores")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    parser.add_argument(
        "--data",
        type=Path,
        default=os.environ.get("SIMSIAM_DATA") or ROOT.parent / "shared" / "datasets" / ARCHIVE,
        help="CIFAR-10 archive (or extracted tree) for the epoch and pipeline sections",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "benchmarks.md")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument(
        "--with-dvc",
        action="store_true",
        help="with --quick, also time smoke Table 3 through DVC (about 2.5 more minutes)",
    )
    parser.add_argument(
        "--epoch",
        action="store_true",
        help="only the epoch section (benchmarks/gpu.sh runs this): the report's other sections "
        "stay as they are; on a CPU, a reduced epoch (tiny network and subset)",
    )
    parser.add_argument("--repeats", type=int, help="timed epochs of each loop (GPU default 3)")
    parser.add_argument(
        "--workdir", type=Path, help="where the epoch section extracts and prepares the data"
    )
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="only the streaming section (about 1 min on 2 cores): the others stay as they are",
    )
    parser.add_argument(
        "--render", action="store_true", help="rewrite the report from its .json, measuring nothing"
    )
    args = parser.parse_args()
    if args.render:
        write_report(previous(args.out), args.out)
        print(args.out)
        return

    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    epoch_scale = EPOCH[dev.type]
    if args.repeats:
        epoch_scale = dataclasses.replace(epoch_scale, repeats=args.repeats)
    with_compile = not args.no_compile

    def epoch() -> dict:
        # Compiling takes minutes on a CPU: the reduced CPU epoch leaves it out.
        return run_epoch(
            args.data, dev, epoch_scale, with_compile and dev.type == "cuda", args.workdir
        )

    def streaming() -> dict:
        with tempfile.TemporaryDirectory() as workdir:
            return bench_streaming(Path(workdir), workers=2, repeats=9)

    if args.streaming:
        results = previous(args.out)
        results["streaming"] = streaming()
        write_report(results, args.out)
        print(f"report: {args.out} and its .json")
        return

    if args.epoch:
        if not Path(args.data).exists():
            sys.exit(f"no CIFAR-10 archive at {args.data}: pass --data")
        results = previous(args.out)
        print(f"machine: {machine(dev)}", flush=True)
        results["epoch"] = epoch()
        write_report(results, args.out)
        report = args.out.read_text()
        print(f"\n{report[report.index('## GPU') :]}\nreport: {args.out} and its .json")
        print(json.dumps(results["epoch"]))
        return

    try:
        import lightly  # noqa: F401
    except ImportError:
        sys.exit("benchmarks need lightly: pip install -e '.[bench]'")

    scale = (QUICK if args.quick else FULL)[dev.type]
    cfg = study_config()
    results: dict = {"machine": machine(dev), "quick": args.quick, "batch": scale.batch}
    print(f"machine: {results['machine']}", flush=True)

    # Compiling a ResNet-18 step takes minutes on 2 cores: --quick leaves it to the full run.
    with_compile = with_compile and not (args.quick and dev.type == "cpu")
    results["compile_measured"] = with_compile
    results["train_step"] = bench_train_step(cfg, dev, scale, with_compile)
    for name, r in results["train_step"].items():
        print(f"train step  {name:45s} {r['images_per_s']:8.1f} img/s", flush=True)
    names = list(results["train_step"])
    ours, lightly_rate = results["train_step"][names[-1]], results["train_step"][names[0]]
    results["train_step_speedup_vs_lightly"] = ours["images_per_s"] / lightly_rate["images_per_s"]

    results["data_path"] = bench_data_path(cfg, dev, scale)
    results["data_path_over_train_step"] = (
        results["data_path"]["images_per_s"] / ours["images_per_s"]
    )
    print(f"data path   {results['data_path']['images_per_s']:.0f} img/s", flush=True)

    results["streaming"] = streaming()
    results["knn_50k_10k_s"] = bench_knn(dev, scale.knn_repeats)["seconds"]
    print(f"kNN 50k x 10k, d=512: {results['knn_50k_10k_s']:.2f} s", flush=True)

    if Path(args.data).exists():
        with_dvc = args.with_dvc or not args.quick
        results["pipeline"] = bench_pipeline(Path(args.data), with_dvc)
        print(f"pipeline    {results['pipeline']}", flush=True)
        if dev.type == "cuda":
            results["epoch"] = epoch()
    else:
        results["pipeline"] = None
        print(f"pipeline    skipped: no data at {args.data} (pass --data)", flush=True)
    if "epoch" not in results and "epoch" in (before := previous(args.out)):
        results["epoch"] = before["epoch"]  # measured elsewhere (gpu.sh): kept

    write_report(results, args.out)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
