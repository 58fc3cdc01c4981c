"""Where training ends and whether it was stable, read from the per-step loss (history.json's
`step_loss`, one list an epoch).

- The final loss: the median of the last `FINAL_WINDOW` of SGD steps (at least `MIN_STEPS`),
  what the collapse rule reads. A median of steps, not the last epoch's mean: it is where the
  loss ended, and a single odd batch does not move it. Runs that predate the per-step loss
  fall back to their last epoch's mean, and say so.
- Unstable (the paper's Table 3d): a trial diverged (a non-finite loss ended it), its loss
  rose (the last epoch's mean more than `rise` above the lowest epoch's), or it oscillated:
  its step noise over the second half of training more than `noise_factor` times its
  reference row's for the same seed. Step noise is the root mean square of successive
  differences over √2 (von Neumann's estimator): the step-to-step scatter of the loss, which a
  slow trend does not inflate. The reference is the row the claim compares with, so the
  batch-sampling scatter every run has is divided out.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass
from typing import Any

from ..rundir import STEP_LOSS

FINAL_WINDOW = 0.05  # the share of SGD steps the final loss is read over
MIN_STEPS = 10  # the fewest steps a final loss or a step noise is read from
UNSTABLE, STABLE, UNKNOWN = "unstable", "stable", "not measured"
# The final loss, beside a trial's recorded metrics (whose `final_loss` is the last epoch's mean)
FINAL_WINDOW_LOSS = "final_window_loss"


def step_losses(history: list[dict[str, Any]]) -> list[float]:
    """Every SGD step's loss in order; empty for a history that predates them."""
    return [loss for record in history for loss in record.get(STEP_LOSS, [])]


def final_loss(history: list[dict[str, Any]]) -> tuple[float, str] | None:
    """Where the loss ended and how it was read, e.g. (-0.93, 'median of the last 47 steps');
    the last epoch's mean for a history without step losses; None for an empty one."""
    steps = step_losses(history)
    if len(steps) >= MIN_STEPS:
        window = max(MIN_STEPS, math.ceil(FINAL_WINDOW * len(steps)))
        return statistics.median(steps[-window:]), f"median of the last {window} steps"
    epochs = [r["loss"] for r in history if "loss" in r]
    return (epochs[-1], "last epoch's mean") if epochs else None


def step_noise(history: list[dict[str, Any]]) -> float | None:
    """The loss's step-to-step scatter over the second half of training (von Neumann's
    estimator); None with fewer than MIN_STEPS steps there or a non-finite one."""
    steps = step_losses(history)
    half = steps[len(steps) // 2 :]
    if len(half) < MIN_STEPS or not all(math.isfinite(v) for v in half):
        return None
    steps_apart = itertools.pairwise(half)
    return math.sqrt(statistics.fmean((b - a) ** 2 for a, b in steps_apart) / 2)


def why_no_step_noise(history: list[dict[str, Any]]) -> str:
    """Why step_noise is None for this history, in words."""
    steps = step_losses(history)
    if not steps:
        return "a run that predates the per-step loss"
    half = steps[len(steps) // 2 :]
    if len(half) < MIN_STEPS:
        return f"its second half holds {len(half)} SGD steps, fewer than the {MIN_STEPS} it needs"
    return "a non-finite step loss in its second half"


def loss_rise(history: list[dict[str, Any]]) -> float | None:
    """The last epoch's mean loss above the lowest epoch's; None without a finite epoch."""
    epochs = [r["loss"] for r in history if math.isfinite(r.get("loss", math.nan))]
    return epochs[-1] - min(epochs) if epochs else None


@dataclass(frozen=True)
class Rule:
    rise: float  # unstable when the loss ends more than this above its lowest epoch
    noise_factor: float  # ... or its step noise is more than this times the reference's


# 2: the paper's (d) "is unstable and the loss oscillates" (§4.4) of a run that fails to
# converge, not a scatter a few percent above the reference's: oscillating is read as at least
# twice the reference's step-to-step scatter, this project's choice. A claim tests the ratio
# against it (votes.instability_verdict).
RULE = Rule(rise=0.1, noise_factor=2.0)


@dataclass(frozen=True)
class Signals:
    """What the instability rule reads of one trial (as collapse.Signals, for the collapse rule)."""

    seed: int
    diverged: bool
    rise: float | None
    noise: float | None
    reference_noise: float | None  # the reference row's for the same seed

    @classmethod
    def of(
        cls, seed: int, status: str, history: list[dict[str, Any]], reference: float | None
    ) -> Signals:
        return cls(seed, status == "diverged", loss_rise(history), step_noise(history), reference)

    @property
    def noise_ratio(self) -> float | None:
        if self.noise is None or not self.reference_noise:
            return None
        return self.noise / self.reference_noise

    def outcome(self, rule: Rule) -> str:
        ratio = self.noise_ratio
        rose = self.rise is not None and self.rise > rule.rise
        if self.diverged or rose or (ratio is not None and ratio > rule.noise_factor):
            return UNSTABLE
        return UNKNOWN if ratio is None else STABLE
