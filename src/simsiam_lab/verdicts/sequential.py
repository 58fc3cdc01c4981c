"""Seeds added in stages while a comparison claim can still be decided: a group-sequential design.

A claim's rows train seeds in looks (3 seeds, then 5, 8, 12, up to a profile's budget). At each
look the paired difference X − Y over the seeds so far makes a repeated confidence interval
(Jennison & Turnbull 2000, ch. 9): the t interval whose ends sit at the Lan–DeMets
O'Brien–Fleming alpha-spending boundary of that look, so that over all the looks together each
end errs with probability at most `alpha`. The claim is decided (stats.decide, as in a fixed
design) at the first look whose interval decides it; it stops as futile once the seeds it would
need, were its difference what the seeds so far estimate, exceed the budget by `futility`
times (from the second look on: 3 seeds' SD, at 2 degrees of freedom, is too rough to give up
on); otherwise the next look is taken, until the budget is spent.

The boundaries are those of the normal statistic, whose looks correlate as sqrt(n_i / n_j), and
are carried to each look's t statistic (n − 1 degrees of freedom) by matching one-sided nominal
p-values. At 2 to 11 degrees of freedom that is an approximation: the Monte-Carlo test of the
whole procedure, looks and futility included (tests/test_sequential.py), is what shows that it
holds its error rate and power.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property

from .stats import Interval, decide

LOOKS = (3, 5, 8, 12)  # seeds a row has at each look
DECIDED, FUTILE, SPENT, WAITING = "decided", "futile", "budget spent", "waiting for seeds"


def _normal():
    from scipy import stats  # a second to import: only where a verdict is computed

    return stats.norm


def obrien_fleming_spent(fraction: float, alpha: float) -> float:
    """The one-sided error Lan–DeMets' O'Brien–Fleming-like function has spent by information
    fraction `fraction` (gsDesign's sfLDOF): almost none early, `alpha` at 1."""
    if fraction <= 0:
        return 0.0
    norm = _normal()
    return float(2 - 2 * norm.cdf(norm.ppf(1 - alpha / 2) / math.sqrt(fraction)))


def pocock_spent(fraction: float, alpha: float) -> float:
    """Lan–DeMets' Pocock-like spending (gsDesign's sfLDPocock): alpha·ln(1 + (e − 1)·t), a
    larger share early, so that a large effect is decided at the first look."""
    return alpha * math.log(1 + (math.e - 1) * max(fraction, 0.0))


SPENDING = {"obrien_fleming": obrien_fleming_spent, "pocock": pocock_spent}


def crossing_probabilities(
    upper: Sequence[float], fractions: Sequence[float], lower: Sequence[float] | None = None
) -> list[float]:
    """P(the standardised statistic first crosses `upper` at look k) with no effect, going on
    while it stays between `lower` (−∞ where None) and `upper` at the looks before."""
    import numpy as np
    from scipy.stats import multivariate_normal

    t = np.asarray(fractions, dtype=float)
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    low = [-math.inf] * len(t) if lower is None else list(lower)
    found = []
    for k in range(len(t)):
        stay = multivariate_normal(cov=cov[: k + 1, : k + 1], abseps=1e-8, releps=1e-8)
        found.append(
            float(stay.cdf([*upper[:k], math.inf], lower_limit=[*low[:k], upper[k]], rng=0))
        )
    return found


@cache
def spending_bounds(
    fractions: tuple[float, ...], alpha: float, spending: str = "obrien_fleming"
) -> tuple[float, ...]:
    """The upper boundaries, on the standardised scale, that spend SPENDING[spending] at each
    information fraction (one-sided; a futility stop does not bind them)."""
    from scipy.optimize import brentq

    spent = SPENDING[spending]
    bounds: list[float] = []
    for k, fraction in enumerate(fractions):
        spend = spent(fraction, alpha) - spent(fractions[k - 1] if k else 0.0, alpha)

        def excess(b: float, k: int = k, spend: float = spend) -> float:
            return crossing_probabilities([*bounds, b], fractions[: k + 1])[-1] - spend

        bounds.append(brentq(excess, 0.0, 12.0, xtol=1e-9) if spend > 1e-15 else 12.0)
    return tuple(bounds)


@cache
def t_bounds(looks: tuple[int, ...], alpha: float, spending: str) -> tuple[float, ...]:
    """Each look's boundary for the t statistic of the seeds so far, such that with no effect
    the t statistics first cross it at look k with the probability the spending function gives
    look k. With no effect their joint law is free of the seeds' SD, so one seeded simulation
    of standard normal seeds gives it, the same on every machine. (Matching each look's
    nominal p-value to the normal design's instead errs by 9% of alpha at 2 to 11 degrees of
    freedom: 0.0546 for 0.05 with Pocock spending, in 40,000 simulated studies.)"""
    import numpy as np

    paths = CALIBRATION_PATHS
    seeds = np.random.default_rng(CALIBRATION_SEED).standard_normal((paths, looks[-1]))
    sums, squares = seeds.cumsum(axis=1), (seeds**2).cumsum(axis=1)
    spent, alive, bounds, before = SPENDING[spending], np.ones(paths, bool), [], 0.0
    for n in looks:
        mean = sums[:, n - 1] / n
        t = mean * math.sqrt(n) / np.sqrt((squares[:, n - 1] - n * mean**2) / (n - 1))
        now = spent(n / looks[-1], alpha)
        crossing = round((now - before) * paths)
        before = now
        ranked = np.sort(t[alive])[::-1]  # `crossing` of the paths still going lie above it
        if crossing == 0:
            bounds.append(float(ranked[0]) + 1.0)
        else:
            bounds.append(float(ranked[crossing - 1] + ranked[crossing]) / 2)
        alive &= t < bounds[-1]
    return tuple(bounds)


# The simulation t_bounds is made from: seeded, and large enough that a look spending 0.2% of
# the paths crosses it on about 800 of them.
CALIBRATION_PATHS, CALIBRATION_SEED = 400_000, 20261207


@dataclass(frozen=True)
class Design:
    """The looks (seeds a row has at each; the last is the budget), the one-sided error rate of
    each end of a claim's interval over all of them, and the futility factor."""

    looks: tuple[int, ...] = LOOKS
    alpha: float = 0.05
    spending: str = "pocock"  # a key of SPENDING
    futility: float = 8.0  # stop once the seeds needed exceed 8 budgets (from look 2)
    power: float = 0.8  # the probability `seeds_needed` plans for

    @cached_property
    def bounds(self) -> tuple[float, ...]:
        fractions = tuple(n / self.looks[-1] for n in self.looks)
        return spending_bounds(fractions, self.alpha, self.spending)

    @cached_property
    def t_bounds(self) -> tuple[float, ...]:
        """Each look's boundary for the t statistic of its seeds (t_bounds)."""
        return t_bounds(self.looks, self.alpha, self.spending)

    def interval(self, diffs: Sequence[float], look: int) -> Interval:
        """The repeated confidence interval of the mean difference at a look, from its seeds."""
        n = self.looks[look]
        mean, se = statistics.fmean(diffs[:n]), statistics.stdev(diffs[:n]) / math.sqrt(n)
        half = self.t_bounds[look] * se
        test = f"paired t, {n} seeds, look {look + 1} of {len(self.looks)} (O'Brien–Fleming)"
        return Interval(mean, mean - half, mean + half, test, se, n - 1)

    def detects(self, sd: float) -> float:
        """The difference from the claim's threshold that the last look's test, on the whole
        budget, detects with probability `power` (noncentral t): the power the design states,
        which its early looks can only add to and its futility stop take a little from."""
        from scipy import optimize, stats

        n, bound = self.looks[-1], self.t_bounds[-1]

        def short_of(shift: float) -> float:
            return float(stats.nct.sf(bound, n - 1, shift)) - self.power

        return optimize.brentq(short_of, 0.0, 50.0) * sd / math.sqrt(n)

    def seeds_needed(self, kind: str, estimate: float, sd: float, margin: float) -> float:
        """The seeds a paired test at the last look's level would need to decide the claim with
        probability `power`, were the difference `estimate` and the seed SD `sd` (normal
        approximation); inf where the estimate sits on a decision threshold."""
        distance = _distance(kind, estimate, margin)
        if distance == 0:
            return math.inf
        norm = _normal()
        z = self.bounds[-1] + norm.ppf(self.power)
        return (z * sd / distance) ** 2


def _distance(kind: str, estimate: float, margin: float) -> float:
    """How far the difference lies from the nearest threshold at which the claim's verdict
    changes: the margin for better, −margin for not worse, ±margin for similar."""
    if kind == "better":
        return abs(estimate - margin)
    if kind == "not_worse":
        return abs(estimate + margin)
    return abs(abs(estimate) - margin)


@dataclass(frozen=True)
class Sequential:
    """A comparison claim's verdict under the design, and why it stopped where it did."""

    result: str  # reproduced | not reproduced | inconclusive
    stopped: str  # DECIDED, FUTILE, SPENT or WAITING (the next look's seeds are not in)
    looks: int  # looks taken
    seeds: int  # seeds the verdict rests on
    interval: Interval | None
    seeds_needed: float | None  # at the last look taken, from its estimate and SD


def sequential_verdict(
    kind: str, diffs: Sequence[float], margin: float, design: Design
) -> Sequential:
    """The claim decided from its paired differences in seed order, look by look: the first
    look that decides it, a futile look, the budget's end, or the next look still to train."""
    found = Sequential("inconclusive", WAITING, 0, len(diffs), None, None)
    for look, n in enumerate(design.looks):
        if len(diffs) < n:
            return found
        interval = design.interval(diffs, look)
        result = decide(kind, interval, margin)
        sd = interval.se * math.sqrt(n)
        needed = design.seeds_needed(kind, interval.estimate, sd, margin)
        last = look == len(design.looks) - 1
        if result != "inconclusive":
            stopped = DECIDED
        elif last:
            stopped = SPENT
        elif look > 0 and needed > design.futility * design.looks[-1]:
            stopped = FUTILE
        else:
            found = Sequential(result, WAITING, look + 1, n, interval, needed)
            continue
        return Sequential(result, stopped, look + 1, n, interval, needed)
    return found


@dataclass(frozen=True)
class Operating:
    """What the procedure does over simulated studies: how often each verdict, and the seeds a
    row trains on average."""

    reproduced: float
    not_reproduced: float
    futile: float
    mean_seeds: float
    studies: int


def simulate(
    design: Design,
    kind: str,
    difference: float,
    sd: float,
    margin: float,
    studies: int,
    seed: int = 0,
) -> Operating:
    """The whole procedure, looks and futility included, run on `studies` simulated claims
    whose paired seed differences are normal with mean `difference` and SD `sd`."""
    import numpy as np

    rng = np.random.default_rng(seed)
    draws = rng.normal(difference, sd, (studies, design.looks[-1]))
    found = [sequential_verdict(kind, list(row), margin, design) for row in draws]
    return Operating(
        reproduced=sum(f.result == "reproduced" for f in found) / studies,
        not_reproduced=sum(f.result == "not reproduced" for f in found) / studies,
        futile=sum(f.stopped == FUTILE for f in found) / studies,
        mean_seeds=sum(f.seeds for f in found) / studies,
        studies=studies,
    )
