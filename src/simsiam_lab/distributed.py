"""Where a process runs (its GPU), and data-parallel pretraining under torchrun.

`torchrun --nproc_per_node N simsiam pretrain ...` splits each batch of `optim.batch_size` images
into N equal shards, so the global batch, the lr (scaled by the global batch) and every BN
statistic are those of a single-process run. PyTorch's SyncBatchNorm only runs on GPUs, so on
CPUs (gloo) the same all-reduced statistics come from `GlobalBatchNorm`.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from filelock import FileLock, Timeout
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .errors import PlacementError


@functools.cache
def device() -> torch.device:
    """The GPU this process trains on, else the CPU.

    Under torchrun a process takes its LOCAL_RANK's GPU. Otherwise, on a host with several GPUs,
    `snakemake --resources gpu=N` runs N jobs at once: each takes the first GPU that no other
    process holds (a lock file per GPU, held until the process exits), unless
    CUDA_VISIBLE_DEVICES already pins it.
    """
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    count = torch.cuda.device_count()
    if count == 1 or "CUDA_VISIBLE_DEVICES" in os.environ:
        return torch.device("cuda", 0)
    locks = Path(tempfile.gettempdir()) / "simsiam-gpus"
    locks.mkdir(exist_ok=True)
    for i in range(count):
        lock = FileLock(str(locks / f"gpu{i}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue
        _HELD.append(lock)
        torch.cuda.set_device(i)
        return torch.device("cuda", i)
    raise PlacementError(
        f"all {count} GPUs are held by other simsiam processes (locks in {locks}); run "
        f"Snakemake with --resources gpu={count} so it starts no more jobs than GPUs"
    )


_HELD: list[FileLock] = []  # GPU locks live as long as the process


def init_from_env(dev: torch.device) -> tuple[int, int]:
    """(rank, world size); starts the process group when torchrun launched several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dist.get_rank(), world


def rank_and_world() -> tuple[int, int]:
    if not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    if not dist.is_initialized():
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / dist.get_world_size()


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the batch over all processes.

    The sums are all-reduced with a differentiable all-reduce, so gradients flow through the
    global mean and variance as they do through a single process's BN.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        xf = x.float()  # statistics in fp32, also under bf16 autocast
        count = xf.new_full((x.shape[1],), x.numel() / x.shape[1])
        sums = dist_fn.all_reduce(torch.stack([xf.sum(dims), (xf * xf).sum(dims), count]))
        mean, total = sums[0] / sums[2], sums[2]
        var = sums[1] / total - mean * mean
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * (var * total / (total - 1)).detach())
            self.num_batches_tracked += 1
        shape = [1, -1] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def _to_global_bn(module: nn.Module) -> nn.Module:
    if isinstance(module, _BatchNorm):
        bn = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine)
        # The same tensors, not copies: the optimizer already holds these parameters.
        bn.weight, bn.bias = module.weight, module.bias
        bn.running_mean, bn.running_var = module.running_mean, module.running_var
        bn.num_batches_tracked = module.num_batches_tracked
        return bn
    for name, child in module.named_children():
        setattr(module, name, _to_global_bn(child))
    return module


def data_parallel(model: nn.Module, dev: torch.device) -> nn.Module:
    """The model with global-batch BN, wrapped in DDP (parameter names are unchanged)."""
    if dev.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[dev.index])
    return nn.parallel.DistributedDataParallel(_to_global_bn(model))


def autocast_dtype(precision: str, dev: torch.device) -> torch.dtype | None:
    """The dtype to autocast the step to; `auto` is bf16 on CUDA only, as CPUs without
    native bf16 units run it slower than fp32 (benchmarks/run.py measures both)."""
    if precision == "bf16" or (precision == "auto" and dev.type == "cuda"):
        return torch.bfloat16
    return None
