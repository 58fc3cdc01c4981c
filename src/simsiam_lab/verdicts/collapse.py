"""Collapse as the paper means it (§4.1): a degenerate solution, the loss at its minimum and an
output that carries nothing, judged per trial from three signals that hold on any dataset, and
how far a claim's verdict hangs on each signal's threshold.

- loss at its minimum: the final loss (the median of the last steps: stability.final_loss)
  within `loss_gap` of the lowest a batch can reach. The
  affine-free BN that ends the projector keeps each channel's batch variance at 1, so the most
  nearly constant batch is identical outputs but for one image; when the image set apart differs
  between the two views, the cosine loss is -1 + 4/B.
- degenerate output: std(z)·√d no higher than `floor ** std_position`, between the BN floor
  2/√B of such a batch (position 1) and the isotropic 1 (position 0); or at least `share` of z's
  variance along one direction (the outputs on one line).
- carries nothing: the linear accuracy no more than `gain_z` standard errors above the same
  network's at random init, on the same test images (two binomial proportions).

The BN floor and the loss bound -1 + 4/B hold only where z ends in an affine-free BN
(`floored`): a head without one (Table 3a) or with the affine (whose scale can shrink) has no
floor, and its loss's lowest is the similarity's own (-1 for the cosine).

A trial collapsed when every signal it has says so, and did not when its loss is above the
minimum and its output is not degenerate (a model that learned nothing without reaching the
degenerate solution failed to train: Table 1b); any other mix is a disagreement. A claim is a
rate over its trials, tested exactly against a collapse rate of one half over the looks
(sequential.RateDesign), with each disagreeing trial counted against whichever side is shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from ..config import RunConfig
from ..loss import SIMILARITIES, batch_norm_std_floor
from .sequential import LOOKS, RateDesign, RateSequential, rate_verdict
from .stability import FINAL_WINDOW_LOSS
from .stats import threshold_flips

# A collapse (or instability) claim is a rate: shown above or below one half, one-sided 0.05 at
# each end over the looks. One half: "collapses" is read as "collapses more often than not".
RATE_ALPHA, RATE = 0.05, 0.5


def rate_design(looks: tuple[int, ...]) -> RateDesign:
    return RateDesign(looks=looks, alpha=RATE_ALPHA, rate=RATE)


COLLAPSED, NOT_COLLAPSED, DISAGREE = "collapsed", "not collapsed", "signals disagree"


# The lowest loss without the BN floor: identical outputs (the cross-entropy has none derived).
UNFLOORED_LOWEST = {"cosine": -1.0}


def lowest_loss(similarity: str, batch: int, floored: bool = True) -> float | None:
    """The lowest loss a batch of B reaches under a similarity (loss.SIMILARITIES), through an
    affine-free BN on z where `floored`; None where none is derived, and the loss signal is
    absent and the other two decide."""
    if not floored:
        return UNFLOORED_LOWEST.get(similarity)
    lowest = SIMILARITIES[similarity].lowest
    return None if lowest is None else lowest(batch)


def has_floor(config: RunConfig) -> bool:
    """Whether z ends in an affine-free BN, the premise of the BN floor and the loss bound."""
    model = config.model
    return model.projector_output_bn and not model.projector_output_bn_affine


@dataclass(frozen=True)
class Thresholds:
    loss_gap: float  # the final loss counts as at its minimum within this much of it
    std_position: float  # degenerate: std(z)·√d <= floor ** position (0: 1, 1: the BN floor)
    share: float  # ... or at least this share of z's variance along one direction
    gain_z: float  # learned nothing: gain over random init within this many standard errors

    def std_bound(self, batch: int) -> float:
        return batch_norm_std_floor(batch) ** self.std_position


RULE = Thresholds(loss_gap=0.02, std_position=0.5, share=0.99, gain_z=NormalDist().inv_cdf(0.95))
# Where a verdict's sensitivity is looked for: each threshold's sensible range.
RANGES = {
    "loss_gap": (0.0, 0.5),
    "std_position": (0.0, 1.0),
    "share": (0.5, 1.0),
    "gain_z": (0.0, 5.0),
}


@dataclass(frozen=True)
class Signals:
    """One finished trial's measurements that the rule reads."""

    batch: int
    loss_gap: float | None  # final loss minus the lowest one (None: no lowest for its loss)
    ratio: float | None  # final std(z)·√d, in training mode
    share: float | None  # top-direction share of z's variance on the test images
    gain: float | None  # linear accuracy minus random init's, in points
    gain_z: float | None  # ... in standard errors of that difference

    @classmethod
    def of(cls, config: RunConfig, metrics: dict[str, Any]) -> Signals:
        batch = config.optim.batch_size
        lowest = lowest_loss(config.loss.similarity, batch, has_floor(config))
        loss = metrics.get(FINAL_WINDOW_LOSS, metrics.get("final_loss"))
        gap = None if lowest is None or loss is None else loss - lowest
        gain, gain_z = None, None
        trained, init = metrics.get("linear_acc"), metrics.get("random_init_linear")
        if trained is not None and init is not None:
            gain = trained - init
            n = metrics.get("test_images")
            if n:
                se = math.sqrt(sum(a / 100 * (1 - a / 100) for a in (trained, init)) / n) * 100
                gain_z = gain / se if se > 0 else math.copysign(math.inf, gain)
        return cls(
            batch, gap, metrics.get("final_z_std_ratio"), metrics.get("z_top_share"), gain, gain_z
        )

    def votes(self, th: Thresholds) -> dict[str, bool | None]:
        """Each signal's say: True for collapse, None where the trial lacks the measurement."""
        flat = None if self.ratio is None else self.ratio <= th.std_bound(self.batch)
        on_a_line = None if self.share is None else self.share >= th.share
        return {
            "loss at its minimum": None if self.loss_gap is None else self.loss_gap <= th.loss_gap,
            "degenerate output": None
            if flat is None and on_a_line is None
            else bool(flat or on_a_line),
            "learned nothing": None if self.gain_z is None else self.gain_z <= th.gain_z,
        }

    def outcome(self, th: Thresholds) -> str:
        votes = self.votes(th)
        known = [v for v in votes.values() if v is not None]
        if votes["degenerate output"] is None:
            return DISAGREE
        if all(known):
            return COLLAPSED
        loss = votes["loss at its minimum"]
        healthy = loss is False or (loss is None and votes["learned nothing"] is False)
        return NOT_COLLAPSED if not votes["degenerate output"] and healthy else DISAGREE

    def crossing(self, threshold: str) -> float | None:
        """The value of a Thresholds field at which this trial's vote on it changes: its own
        measurement, or for the std bound the position whose bound is its std(z)·√d."""
        if threshold != "std_position":
            return getattr(self, threshold)
        if not self.ratio:
            return None
        return math.log(self.ratio) / math.log(batch_norm_std_floor(self.batch))

    def disagreement(self, th: Thresholds) -> str:
        """Which signals say collapse and which do not, e.g. 'degenerate output, learned
        nothing; not: loss at its minimum (0.017 above its bound)'."""
        votes = self.votes(th)
        said = [k for k, v in votes.items() if v]
        denied = [k for k, v in votes.items() if v is False]
        if "loss at its minimum" in denied:
            i = denied.index("loss at its minimum")
            denied[i] += f" ({self.loss_gap - th.loss_gap:.3f} above its bound)"
        return f"{', '.join(said) or 'none'}; not: {', '.join(denied) or 'none'}"


def rate_test(
    kind: str, trials: list[Signals], th: Thresholds = RULE, looks: tuple[int, ...] = LOOKS
) -> RateSequential:
    """A collapse claim over its trials in seed order: the exact test of its collapse rate
    against one half, look by look (sequential.RateDesign)."""
    events = {COLLAPSED: True, NOT_COLLAPSED: False}
    outcomes = [events.get(t.outcome(th)) for t in trials]
    return rate_verdict(kind == "collapsed", outcomes, rate_design(looks))


def claim_result(
    kind: str, trials: list[Signals], th: Thresholds = RULE, looks: tuple[int, ...] = LOOKS
) -> str:
    return rate_test(kind, trials, th, looks).result


def _breakpoints(name: str, trials: list[Signals]) -> list[float]:
    """The values of one threshold at which a trial's vote changes."""
    points = [t.crossing(name) for t in trials]
    return [p for p in points if p is not None and math.isfinite(p)]


@dataclass(frozen=True)
class Flip:
    """Where one threshold would change a claim's verdict: at `at`, to `to`."""

    threshold: str
    rule: float
    at: float
    to: str

    def reading(self, batch: int) -> tuple[str, float, float]:
        """(name, rule, at) in the unit a reader checks: the std bound as std(z)·√d."""
        if self.threshold != "std_position":
            return self.threshold, self.rule, self.at
        floor = batch_norm_std_floor(batch)
        return "std_bound", floor**self.rule, floor**self.at


def flips(
    kind: str, trials: list[Signals], th: Thresholds = RULE, looks: tuple[int, ...] = LOOKS
) -> list[Flip]:
    """For each threshold on its own, the nearest value in its range at which the claim's
    verdict changes; thresholds that change nothing in their range are left out."""
    found = threshold_flips(
        lambda rule: claim_result(kind, trials, rule, looks),
        th,
        lambda name: _breakpoints(name, trials),
        RANGES,
    )
    return [Flip(name, getattr(th, name), at, to) for name, (at, to) in found.items()]


NAMES = {
    "loss_gap": "loss gap",
    "std_bound": "std(z)·√d bound",
    "share": "top share",
    "gain_z": "gain bound (SE)",
}


def describe_flip(flip: Flip, batch: int) -> str:
    name, rule, at = flip.reading(batch)
    return f"{flip.to} at {NAMES[name]} {at:.3f} (rule {rule:.3f})"
