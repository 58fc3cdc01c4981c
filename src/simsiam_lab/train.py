"""SimSiam pretraining: SGD with lr = base_lr * batch / 256, warm-up then cosine decay.

A run directory ends with checkpoint.pt (the final, or last finite, weights) and history.json
(one record per epoch), written atomically at the end; while it trains, state.pt lets a killed
run resume.
A non-finite loss ends the run with status "diverged" rather than an error, so a pipeline
can go on and report the row as unstable (the paper's Table 3d).
"""

from __future__ import annotations

import contextlib
import math
import pickle
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed
from .batches import Views, batch_source
from .config import ComputeConfig, RunConfig, training_config
from .data import FileIndex, Split, open_split
from .errors import ConfigError, DataError
from .evaluate import monitor_probe, z_std
from .loss import SimSiamLoss
from .model import SimSiam
from .rundir import STEP, STEP_LOSS, RunDir, atomic_write, atomic_write_json
from .schedule import learning_rate, scaled_lr
from .target import Batch, Target, build_target


def build_model(cfg: RunConfig) -> SimSiam:
    return SimSiam(cfg.model)


def build_criterion(cfg: RunConfig) -> SimSiamLoss:
    loss = cfg.loss
    return SimSiamLoss(loss.similarity, loss.stop_gradient, loss.symmetric)


def fix_pred_lr_schedule(step: int, warmup: int, lr: float, peak: float) -> float:
    """The `fix_pred_lr` predictor's lr: it warms up with the encoder, then stays at the peak."""
    return lr if step < warmup else peak


def set_learning_rates(
    opt: torch.optim.Optimizer, step: int, total: int, warmup: int, peak: float
) -> float:
    """This step's lr on every param group (a `fix_pred_lr` group holds the peak after
    warm-up); returns the schedule's."""
    lr = learning_rate(step, total, warmup, peak)
    for group in opt.param_groups:
        fixed = group["fix_pred_lr"]
        group["lr"] = fix_pred_lr_schedule(step, warmup, lr, peak) if fixed else lr
    return lr


def peak_lr(cfg: RunConfig) -> float:
    """The paper's linear scaling rule: lr = base_lr * batch / 256."""
    return scaled_lr(cfg.optim.base_lr, cfg.optim.batch_size)


def build_optimizer(model: SimSiam, cfg: RunConfig) -> torch.optim.SGD:
    optim = cfg.optim
    if optim.freeze_predictor:
        model.predictor.requires_grad_(False)
    head = {id(p) for p in model.predictor.parameters()}
    groups = [
        {"params": [p for p in model.parameters() if id(p) not in head], "fix_pred_lr": False},
        {
            "params": [p for p in model.predictor.parameters() if p.requires_grad],
            "fix_pred_lr": optim.fix_pred_lr,
        },
    ]
    return torch.optim.SGD(
        [g for g in groups if g["params"]],
        lr=peak_lr(cfg),
        momentum=optim.momentum,
        weight_decay=optim.weight_decay,
    )


def _as_is(views: Views) -> Views:
    return views


def _channels_last(views: Views) -> Views:
    x1, x2 = (x.contiguous(memory_format=torch.channels_last) for x in views)
    return x1, x2


def view_format(compute: ComputeConfig) -> Callable[[Views], Views]:
    """What the views go through before the step: NHWC when the model is channels_last."""
    return _channels_last if compute.channels_last else _as_is


def fast_path(
    cfg: RunConfig, model: SimSiam, dev: torch.device
) -> tuple[Callable[[Views], Views], torch.dtype | None]:
    """Apply the `compute` switches to the model; returns the view formatter and autocast dtype."""
    compute = cfg.compute
    if compute.channels_last:
        model.to(memory_format=torch.channels_last)
    if compute.compile:
        model.compile()  # in place: state_dict keys stay those of the eager model
    return view_format(compute), distributed.autocast_dtype(compute.precision, dev)


def sgd_step(
    model: nn.Module,
    criterion: SimSiamLoss,
    target: Target,
    opt: torch.optim.Optimizer,
    views: list[Views],
    idx: torch.Tensor,
    step: int,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on one or more pairs of views; returns the detached loss and first z.

    `model` is the SimSiam or its DDP wrapper.
    """
    loss = torch.zeros((), device=idx.device)
    for x1, x2 in views:
        with torch.autocast(x1.device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            p1, p2, z1, z2 = model(x1, x2)
            t1, t2 = target((z1, z2), Batch(x1, x2, idx, step))
        # The similarity in fp32: a cosine of bf16 vectors is too coarse near -1.
        loss = loss + criterion(p1.float(), p2.float(), t1.float(), t2.float()) / len(views)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), z1.detach()


def atomic_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


class Stopwatch:
    """Seconds a run has trained, over every process that worked on it: a resumed run is
    credited with what its killed predecessors saved in state.pt, and keeps the first one's
    start (Unix time), so that a report can give the real elapsed time beside the sum."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self.started_at = time.time()

    def credit(self, seconds: float, started_at: float | None) -> None:
        self._start -= seconds
        self.started_at = started_at or self.started_at

    def elapsed(self) -> float:
        return time.perf_counter() - self._start


def _epoch_record(
    epoch: int, loss: float, std: float, dim: int, lr: float, step: int, losses: list[float]
) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "loss": loss,
        "z_std": std,
        "z_std_ratio": std * math.sqrt(dim),
        "lr": lr,
        STEP: step,
        STEP_LOSS: losses,
    }


def pretrain(
    cfg: RunConfig,
    data_dir: Path,
    out_dir: Path,
    log_epoch=lambda record: None,
    keep_state: bool = False,
) -> dict[str, Any]:
    """Train one config into out_dir; returns the run's summary (status, wall time, finals).

    The declared outputs (checkpoint.pt, history.json) are written only at the end; while
    training, out_dir/state.pt holds everything needed to resume after a kill, and a rerun of
    the same config picks it up and ends with the weights an uninterrupted run would have.
    `keep_state`: leave state.pt for the caller to remove once it has recorded the run, so
    that a failure while recording (a full disk, the tracking store) costs no training: a
    rerun resumes at the last epoch and only records.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = distributed.device()
    if dev.type == "cuda":  # fixed shapes: cuDNN picks its fastest kernels, as main_simsiam.py
        torch.backends.cudnn.benchmark = True
    elif cfg.compute.channels_last:
        safe_cpu_threads()
    rank, world = distributed.init_from_env(dev)
    try:
        check_data_parallel(cfg, world)
        torch.manual_seed(cfg.seed)
        train, test = open_split(data_dir, "train"), open_split(data_dir, "test")
        model = build_model(cfg).to(dev)
        clock = Stopwatch()
        if reason := scale_mismatch(cfg, len(train.labels)):
            # Not a bad config (Table 2's batch 4096 on a small profile): the pipeline goes on
            # and the report says why the row was not run at this scale.
            status, history, steps = "skipped", [], 0
            final = {"model": model.state_dict(), "epoch": 0}
        else:
            log = log_epoch if rank == 0 else lambda record: None
            status, history, steps, final = _train(cfg, model, train, test, out_dir, log, clock)
        if rank == 0:
            run = RunDir(out_dir)
            atomic_save(final, run.checkpoint)
            atomic_write_json(history, run.history)
            if not keep_state:
                run.state.unlink(missing_ok=True)
    finally:
        distributed.shutdown()
    finite = [r for r in history if "loss" in r and math.isfinite(r["loss"])]
    return {
        "status": status,
        "reason": reason,
        "epochs_completed": len(finite),
        "steps": steps,
        "wall_s": round(clock.elapsed(), 2),
        "started_at": round(clock.started_at, 1),
        "finished_at": round(time.time(), 1),
        "device": str(dev),
        "processes": world,
        "final_loss": finite[-1]["loss"] if finite else None,
        "final_z_std_ratio": finite[-1]["z_std_ratio"] if finite else None,
    }


def safe_cpu_threads(say: Callable[[str], None] = print) -> int:
    """Torch's CPU threads, rounded down to a power of two where they are not one (said in one
    line): torch 2.14.1's oneDNN crashes (a segfault or an abort) in the backward pass of
    channels_last convolutions at some thread counts. Measured on a 2-core AMD EPYC (AVX512),
    a width-8 ResNet-18: 3, 6 and 7 threads crash, 1, 2, 4, 5, 8, 12 and 16 run."""
    threads = torch.get_num_threads()
    safe = 1 << (threads.bit_length() - 1)
    if safe != threads:
        torch.set_num_threads(safe)
        say(
            f"torch threads: {safe}, not {threads} (a power of two: at 3, 6 or 7 threads "
            "torch's channels_last backward pass crashes on a CPU)"
        )
    return safe


def scale_mismatch(cfg: RunConfig, n_images: int) -> str | None:
    """Why this profile's data cannot test the run's config, or None when it can."""
    optim = cfg.optim
    batch = optim.batch_size
    if batch > n_images:
        return f"batch {batch} > {n_images} training images"
    steps = optim.epochs * (n_images // batch)
    if steps < optim.min_steps:
        return (
            f"{steps} SGD steps ({optim.epochs} epochs of {n_images // batch}) < the "
            f"profile's optim.min_steps = {optim.min_steps}: too few to test a claim"
        )
    return None


def save_encoder(checkpoint: Path, out_dir: Path) -> Path:
    """The trained backbone's state_dict alone, from a run's checkpoint, as out_dir/encoder.pt:
    what a downstream task loads into build_model(cfg).backbone, the torchvision ResNet the
    config builds, without SimSiam's projector and predictor."""
    model = load_tensors(checkpoint, "cpu")["model"]
    prefix = "backbone."
    encoder = {k.removeprefix(prefix): v for k, v in model.items() if k.startswith(prefix)}
    path = out_dir / "encoder.pt"
    torch.save(encoder, path)
    return path


def initial_weights(cfg: RunConfig) -> dict[str, torch.Tensor]:
    """The weights pretraining starts from (seeded as it is)."""
    torch.manual_seed(cfg.seed)
    return build_model(cfg).state_dict()


def load_tensors(path: Path, dev: torch.device | str) -> Any:
    """A file this project wrote with torch.save (state.pt, checkpoint.pt), read as tensors and
    plain values only: run directories travel (shared disks, copied results), and a pickle
    that names any other object (code) is refused in one line, never run."""
    try:
        return torch.load(path, map_location=dev, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise
        named = [line for line in str(err).splitlines() if "GLOBAL" in line]
        why = named[0].strip() if named else "objects other than tensors and plain values"
        raise DataError(
            f"{path}: refused, it is not a file this project writes ({why}); nothing in it "
            "was run. Delete it (a state.pt: the run then starts over)"
        ) from None


def _read_state(path: Path, dev: torch.device | str) -> dict[str, Any] | None:
    """state.pt's contents; None when it is absent or unreadable (cut short by a full disk or
    copied half-way): an interrupted run with no usable state starts over. A state that holds
    anything but tensors and plain values is refused (load_tensors)."""
    try:
        return load_tensors(path, dev)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError):
        return None


def _load_state(out_dir: Path, cfg: RunConfig, dev: torch.device) -> dict[str, Any] | None:
    """The resumable state of an interrupted run of this very config, if there is one."""
    state = _read_state(RunDir(out_dir).state, dev)
    return state if state is not None and _same_training(state, cfg) else None


def _same_training(state: dict[str, Any], cfg: RunConfig) -> bool:
    # Evaluation settings may change between a kill and its resume: they are not the run's.
    return training_config(state.get("config", {})) == cfg.training()


def check_resumable(out_dir: Path, cfg: RunConfig, say: Callable[[str], None] = print) -> bool:
    """Whether out_dir holds an interrupted run of cfg to resume. An unreadable state.pt is
    moved aside (said in one line, through `say`) so that the run starts over instead of
    failing on every rerun; the state of another config is refused, since training here would
    discard it."""
    path = RunDir(out_dir).state
    if not path.is_file():
        return False
    state = _read_state(path, "cpu")
    if state is None:
        aside = path.with_name(path.name + ".unreadable")
        path.replace(aside)
        say(f"{path}: unreadable, moved to {aside.name}; training starts over")
        return False
    if not _same_training(state, cfg):
        raise ConfigError(
            f"{path} holds an interrupted run of another config; to resume it, rerun that "
            f"config with --out {out_dir}; to train this one, pick another --out or delete {path}"
        )
    return True


def check_data_parallel(cfg: RunConfig, world: int) -> None:
    if world == 1:
        return
    batch = cfg.optim.batch_size
    if batch % world:
        raise ConfigError(
            f"optim.batch_size {batch} does not split into {world} processes: "
            f"use a multiple of {world} (the global batch is kept, each process takes 1/{world})"
        )
    if cfg.target.mode == "moving_average":
        raise ConfigError(
            "target.mode moving_average keeps one vector per image in one process: "
            "run it without torchrun"
        )


def _train(
    cfg: RunConfig,
    model: SimSiam,
    train: Split | FileIndex,
    test: Split | FileIndex,
    out_dir: Path,
    log_epoch,
    clock: Stopwatch,
) -> tuple[str, list[dict[str, float]], int, dict[str, Any]]:
    """The SGD loop; returns (status, per-epoch history, steps, final checkpoint).

    Under torchrun every process walks the same global batches and trains on its 1/N of each.
    """
    dev = next(model.parameters()).device
    rank, world = distributed.rank_and_world()
    gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
    source = batch_source(cfg, train, dev, rank, world)
    optim, dim = cfg.optim, cfg.model.dim
    criterion = build_criterion(cfg)
    opt = build_optimizer(model, cfg)
    peak = peak_lr(cfg)
    steps_per_epoch = source.steps_per_epoch
    total = optim.epochs * steps_per_epoch
    warmup = round(optim.warmup_fraction * total)
    monitor = monitor_probe(cfg, train, test)
    every = cfg.monitor.knn_every
    target = build_target(cfg, model, len(train.labels), steps_per_epoch, dev)
    fmt, dtype = fast_path(cfg, model, dev)

    history: list[dict[str, float]] = []
    step, first_epoch = 0, 1
    if state := _load_state(out_dir, cfg, dev):
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        target.load_state_dict(state["target"])
        gen.set_state(state["generator"].cpu())
        history, step, first_epoch = state["history"], state["step"], state["epoch"] + 1
        clock.credit(state.get("wall_s", 0.0), state.get("started_at"))
        # A kill can land between saving an epoch and logging it: replay, the logger dedupes.
        for record in history:
            log_epoch(record)
    elif every and rank == 0:
        history.append({"epoch": 0, "knn": monitor(model)})
        log_epoch(history[-1])
    net = distributed.data_parallel(model, dev) if world > 1 else model
    for epoch in range(first_epoch, optim.epochs + 1):
        net.train()
        std_sum = torch.zeros((), device=dev)
        losses = []
        for idx, pairs in source.epoch(epoch, gen):
            lr = set_learning_rates(opt, step, total, warmup, peak)
            views = [fmt(pair) for pair in pairs]
            loss, z1 = sgd_step(net, criterion, target, opt, views, idx, step, dtype)
            # Kept on the device: one host sync per epoch, not per step.
            losses.append(loss)
            std_sum += z_std(z1)
            step += 1
        # z's std is each process's shard's, averaged: close to, not exactly, the global batch's.
        *step_losses, std = distributed.mean_over_ranks(torch.stack([*losses, std_sum])).tolist()
        record = _epoch_record(
            epoch, statistics.fmean(step_losses), std / steps_per_epoch, dim, lr, step, step_losses
        )
        if not math.isfinite(record["loss"]):
            # The last finite weights are kept, not the NaN ones.
            last = _load_state(out_dir, cfg, dev)
            weights = last["model"] if last else initial_weights(cfg)
            history.append(record)
            log_epoch(record)
            return "diverged", history, step, {"model": weights, "epoch": epoch - 1}
        if every and rank == 0 and (epoch % every == 0 or epoch == optim.epochs):
            record["knn"] = monitor(model)
        history.append(record)
        if rank == 0:
            atomic_save(
                {
                    "config": cfg.to_dict(),  # a dict: state.pt outlives a renamed class
                    "epoch": epoch,
                    "step": step,
                    "history": history,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "target": target.state_dict(),
                    "generator": gen.get_state(),
                    "wall_s": clock.elapsed(),
                    "started_at": clock.started_at,
                },
                RunDir(out_dir).state,
            )
        log_epoch(record)
    return "ok", history, step, {"model": model.state_dict(), "epoch": optim.epochs}
