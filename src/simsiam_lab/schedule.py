"""The learning-rate rules of pretraining and of the linear probes: the paper's linear scaling
rule, a linear warm-up, and cosine decay."""

from __future__ import annotations

import math


def scaled_lr(base_lr: float, batch: int) -> float:
    """The paper's linear scaling rule, for pretraining and the linear probe alike."""
    return base_lr * batch / 256


def cosine_decay(peak: float, progress: float) -> float:
    """The lr at `progress` (0 to 1) of a cosine decay from `peak` to 0."""
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def learning_rate(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return cosine_decay(peak, (step - warmup) / max(1, total - warmup))
