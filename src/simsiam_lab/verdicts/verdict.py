"""A claim's verdict, the error rates it is decided at, and how its numbers are printed."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from .results import RowResult
from .stats import Interval

# "not testable": a comparison whose margin is finer than the instrument at this scale can
# resolve (compare.untestable), counted apart from the inconclusive.
NOT_TESTABLE = "not testable"
VERDICTS = ("reproduced", "not reproduced", "inconclusive", NOT_TESTABLE)
NOT_TRAINED = "not trained at this scale"  # why a claim whose row the profile skips stopped
NOT_TESTED = "its row does not test the claim at this scale"  # refresh_longer_than unmet
NOT_JUDGED = "not judged"  # every claim's verdict at a profile with `verdicts: false`
ALPHA = 0.05  # one-sided error rate of the study's comparison claims together
POWER = 0.8  # for the smallest difference a table's seed noise can resolve


@dataclass(frozen=True)
class Verdict:
    result: str  # reproduced | not reproduced | inconclusive
    evidence: str
    interval: Interval | None = None
    margin: float | None = None
    level: float | None = None  # two-sided confidence of the interval
    # A comparison whose rows beat their random init: the margin at which its verdict changes
    flips_at: float | None = None
    flips_to: str | None = None  # the verdict past flips_at
    detects: float | None = None  # the difference its own test detects with POWER probability
    # The verdict at every margin, or each threshold that would change it: for the evidence line
    sensitivity: str | None = None
    rate_bound: tuple[float, float] | None = None  # a collapse claim's rate, exact binomial
    # A collapse claim's thresholds that would change its verdict: rule value, where, to what.
    thresholds: dict[str, dict[str, Any]] | None = None
    # Where the claim's looks stand: taken, seeds spent, why it stopped, the next look's seeds
    # (sequential.sequence_json, votes.rate_sequence); None where no test was run.
    sequence: dict[str, Any] | None = None
    # A comparison's instrument beside its margin: the probe's binomial SE and the seed SD of
    # the difference (compare.resolution), and whether its margin is testable at this scale.
    resolution: dict[str, Any] | None = None
    diffs: list[float] | None = None  # a comparison's paired differences, in seed order


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


def fmt_values(values: list[float | None], digits: int) -> str:
    found = [v for v in values if v is not None]
    if not found:
        return "–"
    mean = fmt(statistics.fmean(found), digits)
    return mean if len(found) < 2 else f"{mean} ± {fmt(statistics.stdev(found), digits)}"


def fmt_trials(row: RowResult, metric: str, digits: int = 1) -> str:
    return fmt_values(row.values(metric), digits)


def fmt_interval(interval: Interval, level: float, digits: int = 1) -> str:
    lo, hi = f"{interval.lo:+.{digits}f}", f"{interval.hi:+.{digits}f}"
    return f"Δ {interval.estimate:+.{digits}f}, {level:.1%} CI [{lo}, {hi}] ({interval.test})"
