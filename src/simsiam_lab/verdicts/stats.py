"""Intervals and decisions behind the verdicts: a t interval of a mean, how a comparison's
verdict depends on its margin, exact binomial bounds of a rate, and where a rule's thresholds
would change a verdict. Every interval here is two-sided at `1 - 2 * alpha`, so each of its
ends is a one-sided test at `alpha`: a claim read off one end (better, not worse) or both
(similar: two one-sided tests) is decided at `alpha`. (Comparisons are decided over seeds in
looks: sequential.py.)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any


def _t_quantile(q: float, df: float) -> float:
    """Student's t quantile. scipy.stats takes a second to import: only when a verdict is
    computed, not in every job that imports the report module for a plot (pretrain, dvc.yaml's
    check, Snakemake's planning)."""
    from scipy import stats

    return float(stats.t.ppf(q, df))


@dataclass(frozen=True)
class Interval:
    """An estimate with its interval, standard error and degrees of freedom; `test` names how
    it was made, e.g. 'paired t, 3 seeds'."""

    estimate: float
    lo: float
    hi: float
    test: str
    se: float
    df: float


def _t_interval(estimate: float, se: float, df: float, alpha: float, test: str) -> Interval:
    half = _t_quantile(1 - alpha, df) * se if se > 0 else 0.0
    return Interval(estimate, estimate - half, estimate + half, test, se, df)


def mean_interval(values: list[float], alpha: float, test: str = "t") -> Interval | None:
    """One-sample t interval of the mean; None below 2 values."""
    if len(values) < 2:
        return None
    se = statistics.stdev(values) / math.sqrt(len(values))
    return _t_interval(statistics.fmean(values), se, len(values) - 1, alpha, test)


def pooled_std(groups: list[list[float]]) -> tuple[float, int] | None:
    """Within-group standard deviation pooled over groups of at least 2, and its df."""
    groups = [g for g in groups if len(g) >= 2]
    df = sum(len(g) - 1 for g in groups)
    if df == 0:
        return None
    ss = sum(statistics.variance(g) * (len(g) - 1) for g in groups)
    return math.sqrt(ss / df), df


def margin_range(kind: str, interval: Interval) -> tuple[float, float, str, str, str]:
    """How a comparison's verdict depends on its margin m >= 0: the two margins p1 <= p2
    that cut the axis, and the verdicts below p1, between, above p2 (an interval that decides
    nothing either way at any margin has p1 < 0, and so no first region)."""
    lo, hi = interval.lo, interval.hi
    if kind == "better":  # reproduced while lo > m, not reproduced once hi < m
        return lo, hi, "reproduced", "inconclusive", "not reproduced"
    if kind == "not_worse":  # not reproduced while hi < −m, reproduced once lo > −m
        return -hi, -lo, "not reproduced", "inconclusive", "reproduced"
    return max(lo, -hi), max(-lo, hi), "not reproduced", "inconclusive", "reproduced"


def decide(kind: str, interval: Interval, margin: float) -> str:
    """A comparison's verdict at `margin`: the region of margin_range that `margin` falls in."""
    p1, p2, below, between, above = margin_range(kind, interval)
    return below if margin < p1 else above if margin > p2 else between


def flips_at(kind: str, interval: Interval, margin: float) -> float | None:
    """The margin nearest to `margin` at which the comparison's verdict would change; None
    where no margin >= 0 changes it."""
    p1, p2, *_ = margin_range(kind, interval)
    if margin < p1:
        return p1
    if margin > p2:
        return p2 if p2 > 0 else None
    ends = [p for p in (p1, p2) if p > 0]
    return min(ends, key=lambda p: abs(p - margin)) if ends else None


def rate_bound(k: int, n: int, alpha: float) -> tuple[float, float]:
    """The exact (Clopper–Pearson) two-sided 1 − 2·alpha interval of a rate seen k of n times:
    each end is a one-sided bound at alpha (3 of 3 collapsed: the collapse rate is at least
    0.37 at alpha 0.05)."""
    from scipy import stats

    ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
    return float(ci.low), float(ci.high)


def threshold_flips(
    decide: Callable[[Any], str],
    rule: Any,
    points: Callable[[str], list[float]],
    ranges: dict[str, tuple[float, float]],
) -> dict[str, tuple[float, str]]:
    """Where a rule's thresholds (the fields of the frozen dataclass `rule`) would change the
    verdict `decide(rule)`: for each threshold on its own, the breakpoint nearest its value
    within its range, as {name: (breakpoint, the verdict past it)}. `points(name)` lists the
    values at which some trial's vote on that threshold changes."""
    now = decide(rule)
    found = {}
    for field in fields(rule):
        value, (lo, hi) = getattr(rule, field.name), ranges[field.name]
        changes = []
        for point in points(field.name):
            for near in (point - 1e-9, point + 1e-9):
                to = decide(replace(rule, **{field.name: near}))
                if lo <= near <= hi and to != now:
                    changes.append((abs(near - value), point, to))
        if changes:
            _, at, to = min(changes)
            found[field.name] = (at, to)
    return found
