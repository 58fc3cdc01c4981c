"""Comparison claims (better, not_worse, similar, loss_above): a t interval of the difference of
two rows' means, its margin in points and as a share of the learned gain, and its power."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from typing import Any

from ..claims import Claim
from ..study import Table
from .results import RowResult
from .sequential import DECIDED, WAITING, Design, Sequential, sequence_json, sequential_verdict
from .stability import FINAL_WINDOW_LOSS
from .stats import Interval, decide, flips_at, margin_range, pooled_std
from .verdict import ALPHA, NOT_TESTABLE, POWER, Verdict, fmt_interval, fmt_trials


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
        learned over random init (9.4 points here): 0.14 points'."""
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
        """' (9.9% of the gain)' beside a margin in points, where the gain is known."""
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
    """The verdict over every margin >= 0, e.g. 'inconclusive below 0.93 (9.9% of the gain),
    reproduced above'."""
    p1, p2, first, between, last = margin_range(kind, interval)
    if p2 <= 0:
        return f"{last} at every margin"
    parts = [f"{first} below {p1:.2f}{margin.of_gain(p1)}"] if p1 > 0 else []
    if p2 > max(p1, 0):
        parts.append(f"{between} {'to' if parts else 'below'} {p2:.2f}{margin.of_gain(p2)}")
    return f"by margin: {', '.join(parts)}, {last} above"


def resolution(y: RowResult, diffs: list[float]) -> dict[str, float | int | None]:
    """What the measurement resolves, beside a claim's margin: one linear probe's binomial SE
    on the test images at the reference row's accuracy, and the seed SD of the difference."""
    acc, images = y.mean("linear_acc"), y.trials[0].metrics.get("test_images")
    probe_se = None if acc is None or not images else math.sqrt(acc * (100 - acc) / images)
    return {
        "probe_se": probe_se,
        "test_images": images,
        "seed_sd": statistics.stdev(diffs) if len(diffs) > 1 else None,
        "accuracy": acc,
    }


@dataclass(frozen=True)
class Untestable:
    text: str  # why, and what would make it testable
    seeds: int  # the seeds a row it would need at the paired SD seen


def untestable(
    margin: float, found: dict[str, float | int | None], design: Design
) -> Untestable | None:
    """Why a `similar` claim cannot be reproduced at this scale, or None: two probes differ by
    at least their own binomial noise (SD √2 times the probe's SE) whatever the seeds, so the
    interval on the whole budget is at least that wide; a margin inside it is finer than the
    instrument. Says what would make it testable."""
    se, images = found["probe_se"], found["test_images"]
    if not se or not images:
        return None
    budget, bound = design.looks[-1], design.t_bounds[-1]
    floor_sd = math.sqrt(2) * se
    narrowest = bound * floor_sd / math.sqrt(budget)
    if margin > narrowest:
        return None
    sd = max(found["seed_sd"] or floor_sd, floor_sd)
    seeds = math.ceil(design.seeds_needed("similar", 0.0, sd, margin))
    share = se**2 * images  # p(1 − p) in points²
    needed = math.ceil(share * (bound * math.sqrt(2) / (margin * math.sqrt(budget))) ** 2)
    return Untestable(
        f"not testable at this scale: its margin {margin:.2f} points is inside the narrowest "
        f"interval {budget} seeds can give ({narrowest:.2f}: two probes differ by √2 times their "
        f"binomial SE of {se:.2f} points on {images:,} test images, whatever the seeds); it "
        f"would need about {seeds:,} seeds a row at the paired SD seen ({sd:.2f}), or over "
        f"{needed:,} test images, or a scale whose effects are larger than this margin",
        seeds,
    )


def compare(
    claim: Claim, rows: dict[str, RowResult], alpha: float, looks: tuple[int, ...]
) -> Verdict:
    """A comparison claim's verdict: X against Y paired by seed, under the group-sequential
    design at the claim's one-sided `alpha` over its looks, against its margin, and only where
    the rows learned and the margin is no finer than the instrument."""
    x, y = rows[claim.row], rows[claim.other]
    what = compared(claim.kind)
    margin = claim_margin(claim, rows) or Margin(0.0, None, None)
    design = Design(looks=looks, alpha=alpha)
    level = 1 - 2 * alpha
    digits = what.digits
    evidence = (
        f"{what.label} {x.id} {fmt_trials(x, what.metric, digits)} vs "
        f"{y.id} {fmt_trials(y, what.metric, digits)}"
    )
    xs, ys = x.by_seed(what.metric), y.by_seed(what.metric)
    diffs = [xs[seed] - ys[seed] for seed in sorted(set(xs) & set(ys))]
    first = design.looks[0]
    if len(diffs) < first:
        waiting = {"looks": 0, "seeds": len(diffs), "stopped": WAITING, "next_seeds": first}
        return Verdict(
            "inconclusive",
            evidence + f"; needs {first} seeds that both rows trained (the design's first look)",
            sequence=waiting,
        )
    found = sequential_verdict(what.rule, diffs, margin.points or 0.0, design)
    interval = found.interval
    sd = statistics.stdev(diffs[: found.seeds])
    detects = design.detects(sd)
    instrument = resolution(y, diffs[: found.seeds])
    evidence += f": {fmt_interval(interval, level, digits)}, margin " + (
        f"{margin.points:.2f}{what.unit}{margin.of_gain(margin.points)}"
        if margin.points is not None
        else f"{margin.share:.1%} of a gain {y.id} does not show"
    )
    if what.needs_learning and instrument["probe_se"] is not None:
        evidence += (
            f" (the instrument: one probe's binomial SE {instrument['probe_se']:.2f}, the "
            f"paired seed SD {sd:.2f})"
        )
    evidence += (
        f"; {found.stopped} at look {found.looks} of {len(design.looks)}, {found.seeds} seeds"
        f"; the design detects {detects:.{digits}f}{what.unit} {POWER:.0%} of the time on its "
        f"{design.looks[-1]}-seed budget"
    )
    if found.stopped != DECIDED and found.seeds_needed is not None:
        evidence += f"; at this estimate and SD it would need about {_seeds(found)} seeds"
    base = Verdict(
        "inconclusive",
        evidence,
        interval,
        margin.points,
        level,
        detects=detects,
        sequence=sequence_json(found, design),
        resolution=instrument,
        diffs=diffs,
    )
    if margin.points is None:
        return replace(
            base,
            evidence=evidence + f"; {y.id} learned nothing over its random init here, so a "
            "margin declared as a share of its gain has no size",
            sequence=None,
        )
    rule = what.rule
    if rule == "similar" and (why := untestable(margin.points, instrument, design)) is not None:
        stopped = {"stopped": NOT_TESTABLE, "next_seeds": None, "seeds_needed": why.seeds}
        return replace(
            base,
            result=NOT_TESTABLE,
            evidence=evidence + f"; {why.text}",
            sequence=base.sequence | stopped,
        )
    learned = ([x, y] if rule == "similar" else [x]) if what.needs_learning else []
    for row in learned:
        gain = row.gain_over_init(ALPHA)
        if gain is None or gain.lo <= 0:
            shown = "no interval" if gain is None else f"{gain.estimate:+.1f} [{gain.lo:+.1f}, …]"
            return replace(
                base,
                evidence=evidence + f"; {row.id} not shown to beat its random init "
                f"(linear gain {shown})",
            )
    flip = flips_at(rule, interval, margin.points)

    def nudge(at: float) -> float:  # a hair past the flip, away from the chosen margin
        return 1e-9 if at > margin.points else -1e-9

    return replace(
        base,
        result=found.result,
        sensitivity=_by_margin(rule, interval, margin),
        flips_at=flip,
        flips_to=None if flip is None else decide(rule, interval, flip + nudge(flip)),
    )


def _seeds(found: Sequential) -> str:
    needed = found.seeds_needed or math.inf
    return f"{math.ceil(needed):,}" if math.isfinite(needed) else "infinitely many"


def power(
    table: Table, rows: dict[str, RowResult], claims: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """What this table's accuracy comparisons can detect: the range, over its claims, of the
    true difference each claim's design detects POWER of the time on its budget, beside the
    seed std pooled over the rows shown to learn (a description of the noise, not a test).
    None where no comparison made an interval."""
    detects = [c["power"] for c in claims if c["power"] is not None and c["kind"] != "loss_above"]
    if not detects:
        return None
    # Rows shown to learn: a failed row's spread (Table 1's frozen predictor) is not the noise
    # a comparison of working variants meets.
    trained = [
        rows[r]
        for r in table.rows
        if rows[r].status == "ok"
        and (gain := rows[r].gain_over_init(ALPHA)) is not None
        and gain.lo > 0
    ]
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
