"""Confidence intervals behind the verdicts: a difference of mean accuracies over seeds.

Seeds pair two rows when both rows ran the same seeds (the same seed starts from the same
weights and draws, so pairing removes the noise the rows share); otherwise Welch's interval.
Every interval here is two-sided at `1 - 2 * alpha`, so each of its ends is a one-sided test at
`alpha`: a claim read off one end (better, not worse) or both (similar: two one-sided tests)
is decided at `alpha`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


def _t_quantile(q: float, df: float) -> float:
    """Student's t quantile. scipy.stats takes a second to import: only when a verdict is
    computed, not in every job that imports the report module for a plot (pretrain, dvc.yaml's
    check, Snakemake's planning)."""
    from scipy import stats

    return float(stats.t.ppf(q, df))


@dataclass(frozen=True)
class Interval:
    """An estimate with its interval; `test` names how it was made, e.g. 'paired t, 3 seeds'."""

    estimate: float
    lo: float
    hi: float
    test: str


def _t_interval(estimate: float, se: float, df: float, alpha: float, test: str) -> Interval:
    half = _t_quantile(1 - alpha, df) * se if se > 0 else 0.0
    return Interval(estimate, estimate - half, estimate + half, test)


def mean_interval(values: list[float], alpha: float, test: str = "t") -> Interval | None:
    """One-sample t interval of the mean; None below 2 values."""
    if len(values) < 2:
        return None
    se = statistics.stdev(values) / math.sqrt(len(values))
    return _t_interval(statistics.fmean(values), se, len(values) - 1, alpha, test)


def difference_interval(x: dict[int, float], y: dict[int, float], alpha: float) -> Interval | None:
    """Interval of mean(x) - mean(y), values keyed by seed; None when a row has one value."""
    if len(x) >= 2 and set(x) == set(y):
        diffs = [x[seed] - y[seed] for seed in sorted(x)]
        return mean_interval(diffs, alpha, f"paired t, {len(diffs)} seeds")
    if len(x) < 2 or len(y) < 2:
        return None
    vx, vy = statistics.variance(x.values()) / len(x), statistics.variance(y.values()) / len(y)
    se = math.sqrt(vx + vy)
    # Welch-Satterthwaite degrees of freedom; equal-variance df when both spreads are 0.
    df = (
        (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
        if se > 0
        else len(x) + len(y) - 2
    )
    estimate = statistics.fmean(x.values()) - statistics.fmean(y.values())
    return _t_interval(estimate, se, df, alpha, f"Welch t, {len(x)} vs {len(y)} seeds")


def pooled_std(groups: list[list[float]]) -> tuple[float, int] | None:
    """Within-group standard deviation pooled over groups of at least 2, and its df."""
    groups = [g for g in groups if len(g) >= 2]
    df = sum(len(g) - 1 for g in groups)
    if df == 0:
        return None
    ss = sum(statistics.variance(g) * (len(g) - 1) for g in groups)
    return math.sqrt(ss / df), df


def smallest_resolvable_difference(std: float, n: int, alpha: float, power: float = 0.8) -> float:
    """The difference of two means over n seeds each that a one-sided t test at `alpha`
    detects with probability `power`, for seed noise `std` (unpaired, df 2n - 2)."""
    df = 2 * n - 2
    return (_t_quantile(1 - alpha, df) + _t_quantile(power, df)) * std * math.sqrt(2 / n)
