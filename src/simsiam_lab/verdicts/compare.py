"""Comparison claims (better, not_worse, similar, loss_above): a t interval of the difference of
two rows' means, its margin in points and as a share of the learned gain, and its power."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..claims import Claim
from ..study import Table
from .results import RowResult
from .stability import FINAL_WINDOW_LOSS
from .stats import (
    Interval,
    claim_p_value,
    decide,
    detectable_difference,
    difference_interval,
    flips_at,
    margin_range,
    pooled_std,
)
from .verdict import ALPHA, POWER, Verdict, fmt_interval, fmt_trials


@dataclass(frozen=True)
class Margin:
    """A comparison's margin in accuracy points, and as a share of what its reference row (its
    `than` or `to`) learned over its random init: the unit that carries across scales. A table
    declares one of the two (claims.MARGINS); the other is computed at the profile."""

    points: float | None  # None: declared as a share of a gain this profile's runs do not show
    share: float | None  # None: no reference gain to take a share of
    reference_gain: float | None  # the reference row's linear gain over random init, paired
    declared: str | None = None  # which of claims.MARGINS the table gave; None: none

    def describe(self) -> str:
        """The margin as declared, then in the other unit: '1.5% of what its reference row
        learned over random init (9.9 points here): 0.15 points'."""
        gain = self.reference_gain
        if self.declared == "margin_of_gain":
            text = f"{self.share:.1%} of what its reference row learned over random init"
            if self.points is None:
                return text + ", which it does not show here"
            return text + f" ({gain:.1f} points here): {self.points:.2f} points"
        text = f"{self.points:g} points"
        if not gain:
            return text
        return text + f", {self.share:.1%} of the {gain:.1f} points its reference row learned here"

    def of_gain(self, points: float) -> str:
        """' (9.4% of the gain)' beside a margin in points, where the gain is known."""
        if not self.reference_gain:
            return ""
        return f" ({points / self.reference_gain:.1%} of the gain)"


def claim_margin(claim: Claim, rows: dict[str, RowResult]) -> Margin | None:
    """None for a claim that compares no accuracies (collapse, instability, the loss)."""
    if not claim.compares or not compared(claim.kind).needs_learning:
        return None
    if claim.margin is None and claim.margin_of_gain is None:  # a `better` claim's own 0
        return Margin(0.0, None, None)
    gain = rows[claim.other].gain_over_init(ALPHA)
    reference = gain.estimate if gain is not None and gain.estimate > 0 else None
    if claim.margin_of_gain is not None:
        share = float(claim.margin_of_gain)
        return Margin(
            None if reference is None else share * reference, share, reference, "margin_of_gain"
        )
    points = float(claim.margin)
    return Margin(points, None if reference is None else points / reference, reference, "margin")


@dataclass(frozen=True)
class Compared:
    """What a comparison claim compares, and how: the metric, its label and printed digits,
    the decision rule it follows (stats' better, not_worse or similar) and whether its rows
    must have learned over their random init (not where the claim is about a failure)."""

    metric: str
    label: str
    digits: int
    unit: str
    rule: str
    needs_learning: bool


def compared(kind: str) -> Compared:
    if kind == "loss_above":  # §4.2: the frozen predictor's loss "remains high"
        return Compared(FINAL_WINDOW_LOSS, "final loss", 3, "", "better", needs_learning=False)
    return Compared("linear_acc", "linear", 1, " points", kind, needs_learning=True)


def comparison_count(claims: list[Claim]) -> int:
    return sum(claim.compares for claim in claims)


def _by_margin(kind: str, interval: Interval, margin: Margin) -> str:
    """The verdict over every margin >= 0, e.g. 'inconclusive below 0.93 (9.4% of the gain),
    reproduced above'."""
    p1, p2, first, between, last = margin_range(kind, interval)
    if p2 <= 0:
        return f"{last} at every margin"
    parts = [f"{first} below {p1:.2f}{margin.of_gain(p1)}"] if p1 > 0 else []
    if p2 > max(p1, 0):
        parts.append(f"{between} {'to' if parts else 'below'} {p2:.2f}{margin.of_gain(p2)}")
    return f"by margin: {', '.join(parts)}, {last} above"


def compare(claim: Claim, rows: dict[str, RowResult], alpha: float) -> Verdict:
    """A comparison claim's verdict: X's mean against Y's over their trials, at the claim's
    one-sided `alpha`, against its margin, and only where the rows learned."""
    x, y = rows[claim.row], rows[claim.other]
    what = compared(claim.kind)
    margin = claim_margin(claim, rows) or Margin(0.0, None, None)
    level = 1 - 2 * alpha
    digits = what.digits
    evidence = (
        f"{what.label} {x.id} {fmt_trials(x, what.metric, digits)} vs "
        f"{y.id} {fmt_trials(y, what.metric, digits)}"
    )
    interval = difference_interval(x.by_seed(what.metric), y.by_seed(what.metric), alpha)
    if interval is None:
        return Verdict("inconclusive", evidence + "; needs at least 2 trials of each row")
    detects = detectable_difference(interval, alpha, POWER)
    evidence += f": {fmt_interval(interval, level, digits)}, margin " + (
        f"{margin.points:.2f}{what.unit}{margin.of_gain(margin.points)}"
        if margin.points is not None
        else f"{margin.share:.1%} of a gain {y.id} does not show"
    )
    evidence += f"; this test detects {detects:.{digits}f}{what.unit} {POWER:.0%} of the time"
    found = Verdict("inconclusive", evidence, interval, margin.points, level, detects=detects)
    if margin.points is None:
        return replace(
            found,
            evidence=evidence + f"; {y.id} learned nothing over its random init here, so a "
            "margin declared as a share of its gain has no size",
        )
    rule = what.rule
    learned = ([x, y] if rule == "similar" else [x]) if what.needs_learning else []
    for row in learned:
        gain = row.gain_over_init(ALPHA)
        if gain is None or gain.lo <= 0:
            shown = "no interval" if gain is None else f"{gain.estimate:+.1f} [{gain.lo:+.1f}, …]"
            return replace(
                found,
                evidence=evidence + f"; {row.id} not shown to beat its random init "
                f"(linear gain {shown})",
            )
    flip = flips_at(rule, interval, margin.points)

    def nudge(at: float) -> float:  # a hair past the flip, away from the chosen margin
        return 1e-9 if at > margin.points else -1e-9

    return replace(
        found,
        result=decide(rule, interval, margin.points),
        sensitivity=_by_margin(rule, interval, margin),
        p_value=claim_p_value(rule, interval, margin.points),
        flips_at=flip,
        flips_to=None if flip is None else decide(rule, interval, flip + nudge(flip)),
    )


def power(
    table: Table, rows: dict[str, RowResult], claims: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """What this table's accuracy comparisons can detect: the range, over its claims, of the
    true difference each claim's own test (paired where paired, at the table's level) detects
    POWER of the time, beside the seed std pooled over the rows that trained without collapse
    (a description of the noise, not a test). None where no comparison made an interval."""
    detects = [c["power"] for c in claims if c["power"] is not None and c["kind"] != "loss_above"]
    if not detects:
        return None
    trained = [rows[r] for r in table.rows if rows[r].status == "ok"]
    pooled = pooled_std([r.values("linear_acc") for r in trained])
    low, high = f"{min(detects):.1f}", f"{max(detects):.1f}"
    return {
        "detects": [min(detects), max(detects)],
        "detects_text": f"{low} points" if low == high else f"{low} to {high} points",
        "claims": len(detects),
        "power": POWER,
        "seed_std": None if pooled is None else pooled[0],
        "df": None if pooled is None else pooled[1],
    }
