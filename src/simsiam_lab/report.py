"""Render a paper table beside our measurements, with a computed verdict per claim."""

from __future__ import annotations

import json
import math
import statistics
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import pandas as pd
import yaml

from . import stability
from .collapse import (
    COLLAPSED,
    DISAGREE,
    NAMES,
    NOT_COLLAPSED,
    RULE,
    Signals,
    batch_norm_std_floor,
    claim_result,
    describe_flip,
    flips,
    lowest_loss,
)
from .config import (
    CHECKS,
    EVALUATION,
    LONGER_THAN,
    MARGINS,
    MONITOR_PER_CLASS,
    REFERENCE,
    Config,
    ReportError,
    RunConfig,
    Table,
    claim_kind,
    flatten,
    training_config,
)
from .data import Manifest
from .rundir import CURVES, RunDir
from .stability import FINAL_WINDOW_LOSS
from .stats import (
    Interval,
    claim_p_value,
    decide,
    detectable_difference,
    difference_interval,
    flips_at,
    holm,
    margin_range,
    mean_interval,
    pooled_std,
    rate_bound,
)

if TYPE_CHECKING:  # matplotlib is imported only when a plot is drawn
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.container import BarContainer

VERDICTS = ("reproduced", "not reproduced", "inconclusive")
NOT_JUDGED = "not judged"  # every claim's verdict at a profile with `verdicts: false`
ALPHA = 0.05  # one-sided error rate of a table's comparison claims together (Bonferroni)
POWER = 0.8  # for the smallest difference a table's seed noise can resolve
RULES = [
    "collapsed, as the paper means it: a degenerate solution, with the loss at its minimum and "
    "an output that carries nothing. Each trial is judged on three signals that hold on any "
    f"dataset. Loss at its minimum: the final loss (below) at most {RULE.loss_gap} above "
    "-1 + 4/B (for the cosine loss; the cross-entropy has no such bound and goes without this "
    "signal): the affine-free BN on z keeps each channel's batch variance at 1, so the most "
    "nearly constant batch is identical outputs but for one image, and -1 + 4/B is its loss "
    "when that image differs between the two views. Degenerate output: std(z)·√d at most "
    "√(2/√B), the geometric midpoint between that batch's 2/√B (0.25 at B = 64, 0.09 at the "
    f"paper's 512) and the isotropic 1, or at least {RULE.share:.0%} of z's variance on the "
    "test images along one direction (BN in eval mode). Learned nothing: the linear accuracy "
    f"at most {RULE.gain_z:.3f} standard errors (one-sided 5%) above the same network's at "
    "random init, the two taken as binomial proportions over the test images. A trial "
    "collapsed when every "
    "signal it has says so; it did not when its loss is above the minimum and its output is "
    "not degenerate (a network that learned nothing without reaching the degenerate solution "
    "failed to train, as Table 1b's fixed predictor); any other mix is a disagreement. A "
    "collapse claim is reproduced when every trial agrees with it, not reproduced when every "
    "trial says the opposite, and inconclusive otherwise, with the signals that disagree. Its "
    "evidence ends with each threshold's value at which the verdict would change",
    "unstable (X unstable, against reference Y): a trial diverged (a non-finite loss ended "
    f"it), its last epoch's mean loss ended more than {stability.RULE.rise} above its lowest "
    "epoch's, or its step noise over the second half of training (the root mean square of "
    "successive step losses' differences over √2, which a slow trend does not inflate) is more "
    f"than {stability.RULE.noise_factor:g} times Y's for the same seed. Reproduced when any "
    "trial is unstable, not reproduced when every trial is measured stable, else inconclusive; "
    "its evidence gives the rate's exact binomial interval and each threshold's value at which "
    "the verdict would change",
    "the final loss (the collapse rule's, the loss comparisons'): the median of the last "
    f"{stability.FINAL_WINDOW:.0%} of SGD steps (at least {stability.MIN_STEPS}), where the "
    "loss ended; runs that predate the per-step loss give their last epoch's mean, and the "
    "evidence says which",
    "comparisons use the mean linear accuracy over a row's trials (seeds) and a t interval of "
    "the difference X − Y: paired by seed when both rows ran the same seeds, else Welch's. "
    f"The {ALPHA} one-sided error rate is split evenly over the table's k comparison claims "
    "(Bonferroni), so each interval is two-sided at 1 − 0.1/k and each of its ends is a "
    f"one-sided test at {ALPHA}/k",
    "X loss_above Y (§4.2's 'the loss remains high'): X's final loss above Y's, decided as "
    "'better' on the final loss (margin 0), without the learned condition below: the claim is "
    "about a failure to train",
    "X better than Y (margin m, 0 unless the claim states one): reproduced when the interval "
    "lies above m, not reproduced when it lies below m, else inconclusive. X not worse than Y "
    "(non-inferiority margin m): reproduced above −m, not reproduced below −m. X similar to Y "
    "(equivalence margin m, two one-sided tests): reproduced when the interval lies inside "
    "(−m, m), not reproduced when it lies wholly outside [−m, m]. Each comparison's evidence "
    "ends with its verdict at every margin ('by margin: inconclusive below 0.93, reproduced "
    "above'), so a reader sees how much the verdict hangs on the margin chosen",
    "the family each count controls: a table's comparison claims (Bonferroni within the "
    f"table). The index also counts the whole study's comparison claims under Holm's procedure "
    f"at one-sided {ALPHA} (each claim's p-value from the same t test as its interval). A "
    "collapse claim is a vote of its trials, outside that family: its evidence gives the "
    "collapse rate's exact binomial interval, each end a one-sided 95% bound",
    "improving (the kNN monitor keeps rising, §4.1): the least-squares slope of each trial's "
    "kNN monitor over the second half of training, in points an epoch, and a t interval of "
    f"their mean over the trials, two-sided at {1 - 2 * ALPHA:.0%}: reproduced when it lies above "
    "0, not reproduced when below, else inconclusive. Like a collapse claim it is tested on its "
    f"own, at one-sided {ALPHA}, outside the comparisons' family",
    "the kNN monitor (the curves' third panel, the improving claims): the weighted kNN of the "
    "test split against the training split, every monitor.knn_every epochs; on the streaming "
    f"path, of a fixed subset, {MONITOR_PER_CLASS['test']} test against "
    f"{MONITOR_PER_CLASS['train']} training images a class, decoded once and the same for every "
    "run; the evaluation's kNN and linear probe always use the whole splits",
    "a comparison needs at least 2 trials of each row; with one it is inconclusive",
    "a comparison is inconclusive unless X (and, for similar, Y too) learned: its linear "
    "accuracy lies above the same network's at random init (paired by seed, one-sided at "
    f"{ALPHA}); chance-level accuracy alone says nothing (paper, footnote 4)",
    "a row the profile cannot test is not trained and its claims are inconclusive: a batch "
    "larger than the training set, or fewer SGD steps than the profile's optim.min_steps",
    "power: each comparison's evidence gives the true difference its own test (the same t "
    f"test, paired where paired, at {ALPHA}/k) detects {POWER:.0%} of the time (exact, from the "
    "noncentral t); a table's power line and the index give the range of these over its "
    "comparisons of accuracy, so no figure claims more than a claim's own test",
]


@dataclass(frozen=True)
class RunResult:
    """One trial: its resolved config, final metrics and per-epoch history."""

    config: RunConfig
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    run_dir: Path | None = None  # where it was read from (None: made in memory, by a test)

    @property
    def status(self) -> str:
        return self.metrics["status"]

    @cached_property
    def final(self) -> tuple[float, str] | None:
        """Where the loss ended and how it was read (stability.final_loss)."""
        return stability.final_loss(self.history)

    def __post_init__(self) -> None:
        # The final loss beside the metrics it is compared with, as the collapse rule and the
        # loss comparisons read it.
        self.metrics.setdefault(FINAL_WINDOW_LOSS, None if self.final is None else self.final[0])

    @property
    def signals(self) -> Signals | None:
        """What the collapse rule reads; None for a trial that did not finish training."""
        return Signals.of(self.config, self.metrics) if self.status == "ok" else None

    def collapse(self) -> str | None:
        """collapsed, not collapsed or signals disagree; None for an unfinished trial."""
        signals = self.signals
        return None if signals is None else signals.outcome(RULE)

    @property
    def collapsed(self) -> bool:
        return self.collapse() == COLLAPSED

    @property
    def unstable(self) -> bool:
        """Diverged, or its loss rose (what a trial shows without a reference row's noise)."""
        rise = stability.loss_rise(self.history)
        return self.status == "diverged" or (rise is not None and rise > stability.RULE.rise)


def _read(path: Path, parse: Callable[[str], Any], step: str) -> Any:
    try:
        return parse(path.read_text())
    except FileNotFoundError:
        raise ReportError(
            f"{path}: missing; run `simsiam {step}` for {path.parent} first"
        ) from None
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise ReportError(f"{path}: unreadable ({err}); delete {path.parent} and rerun") from None


def read_trial(run_dir: Path, test_images: int | None = None) -> RunResult:
    """One trial from its run directory: the config it trained and was evaluated with, the
    pretraining's summary with the evaluation's metrics, and its history. `test_images`: what
    the evaluation was measured on, for runs whose metrics predate it."""
    run = RunDir(run_dir)
    config = _read(run.config, yaml.safe_load, "pretrain")
    metrics = _read(run.metrics, json.loads, "evaluate")
    metrics.setdefault("test_images", test_images)
    # Runs evaluated before metrics.json recorded its settings were evaluated as configured.
    evaluation = metrics.pop(EVALUATION, None) or config.get(EVALUATION)
    config = RunConfig.of(training_config(config) | {EVALUATION: evaluation})
    return RunResult(config, metrics, _read(run.history, json.loads, "pretrain"), run.root)


def read_rows(run_dirs: dict[str, list[Path]], test_images: int | None) -> dict[str, RowResult]:
    """A table's rows, each with the trials read from its run directories."""
    return {
        row: RowResult(row, [read_trial(d, test_images) for d in dirs])
        for row, dirs in run_dirs.items()
    }


def runs_table(table: str, rows: dict[str, RowResult]) -> pd.DataFrame:
    """The tidy results table, one line a trial: its table, row and run directory, then its
    metrics (the final loss the collapse rule reads among them), then its config (dotted
    keys): every number a verdict is computed from."""
    return pd.DataFrame.from_records(
        [
            {"table": table, "row": row.id, "run_dir": str(trial.run_dir)}
            | trial.metrics
            | flatten(trial.config.to_dict())
            for row in rows.values()
            for trial in row.trials
        ]
    )


@dataclass(frozen=True)
class RowResult:
    """A table row: one or more trials (seeds) of one config."""

    id: str
    trials: list[RunResult]

    def values(self, metric: str) -> list[float]:
        return [t.metrics[metric] for t in self.trials if t.metrics.get(metric) is not None]

    def by_seed(self, metric: str) -> dict[int, float]:
        return {
            t.config.seed: t.metrics[metric]
            for t in self.trials
            if t.metrics.get(metric) is not None
        }

    def mean(self, metric: str) -> float | None:
        values = self.values(metric)
        return statistics.fmean(values) if values else None

    def std(self, metric: str) -> float | None:
        values = self.values(metric)
        return statistics.stdev(values) if len(values) > 1 else None

    @property
    def collapsed(self) -> bool:
        return all(t.collapsed for t in self.trials)

    @property
    def unstable(self) -> bool:
        return any(t.unstable for t in self.trials)

    @property
    def status(self) -> str:
        if any(t.status == "skipped" for t in self.trials):
            return "skipped"
        if any(t.status == "diverged" for t in self.trials):
            return "diverged"
        if self.unstable:
            return "unstable"
        if self.collapsed:
            return "collapsed"
        outcomes = [t.collapse() for t in self.trials]
        if all(o == NOT_COLLAPSED for o in outcomes):
            return "ok"
        return "some trials collapsed" if COLLAPSED in outcomes else "collapse signals disagree"

    def gain_over_init(self, alpha: float) -> Interval | None:
        """Linear accuracy minus the same network's at random init, paired by seed."""
        trained, init = self.by_seed("linear_acc"), self.by_seed("random_init_linear")
        gains = [trained[s] - init[s] for s in sorted(trained) if s in init]
        return mean_interval(gains, alpha, f"paired t, {len(gains)} seeds")


@dataclass(frozen=True)
class Verdict:
    result: str  # reproduced | not reproduced | inconclusive
    evidence: str
    interval: Interval | None = None
    margin: float | None = None
    level: float | None = None  # two-sided confidence of the interval
    # A comparison whose rows beat their random init: its one-sided p-value, for the study-wide
    # correction, and the margin at which its verdict would change.
    p_value: float | None = None
    flips_at: float | None = None
    flips_to: str | None = None  # the verdict past flips_at
    power: float | None = None  # the difference its own test detects with POWER probability
    # The verdict at every margin, or each threshold that would change it: for the evidence line
    sensitivity: str | None = None
    rate_bound: tuple[float, float] | None = None  # a collapse claim's rate, exact binomial
    # A collapse claim's thresholds that would change its verdict: rule value, where, to what.
    thresholds: dict[str, dict[str, Any]] | None = None


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


# A pause longer than this with no run of a table in progress ends a sitting: the table's runs
# were trained on another day (a re-measured row beside rows reused from before), and the
# calendar time between the sittings is no part of how long the table took. Shorter pauses are
# the pipeline's other tables' runs, scheduled in between (up to 59 min in the cpu study).
SITTING_GAP_S = 3 * 3600


def elapsed(trials: list[dict]) -> str:
    """The wall time a table's runs took, in words: from the first pretraining's start to the
    last evaluation's end, or where they were trained in several sittings, each sitting's."""
    spans = [(m.get("started_at"), m.get("evaluated_at")) for m in trials]
    if not spans or any(None in span for span in spans):
        return "not recorded (these runs predate pretrain.json's start and end times)"
    spans.sort()
    sittings = [list(spans[0])]
    for start, end in spans[1:]:
        if start - sittings[-1][1] > SITTING_GAP_S:
            sittings.append([start, end])
        else:
            sittings[-1][1] = max(sittings[-1][1], end)
    busy = sum(end - start for start, end in sittings) / 60
    if len(sittings) == 1:
        return f"{busy:.1f} min, from the first pretraining's start to the last evaluation's end"
    span = (sittings[-1][1] - spans[0][0]) / 60
    return (
        f"{busy:.1f} min in {len(sittings)} sittings, each from its first pretraining's start "
        f"to its last evaluation's end (pauses of over {SITTING_GAP_S // 3600} h with none of "
        f"its runs in progress left out; {span:.1f} min from the first start to the last end)"
    )


@dataclass(frozen=True)
class Margin:
    """A comparison's margin in accuracy points, and as a share of what its reference row (its
    `than` or `to`) learned over its random init: the unit that carries across scales. A table
    declares one of the two (config.MARGINS); the other is computed at the profile."""

    points: float | None  # None: declared as a share of a gain this profile's runs do not show
    share: float | None  # None: no reference gain to take a share of
    reference_gain: float | None  # the reference row's linear gain over random init, paired
    declared: str | None = None  # which of config.MARGINS the table gave; None: none

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


def claim_margin(check: Config, rows: dict[str, RowResult]) -> Margin | None:
    """None for a claim that compares no accuracies (collapse, instability, the loss)."""
    kind = claim_kind(check)
    other = CHECKS[kind]
    if other is None or not compared(kind).needs_learning:
        return None
    if not any(k in check for k in MARGINS):  # a `better` claim's own 0, in no unit
        return Margin(0.0, None, None)
    gain = rows[check[other]].gain_over_init(ALPHA)
    reference = gain.estimate if gain is not None and gain.estimate > 0 else None
    if "margin_of_gain" in check:
        share = float(check["margin_of_gain"])
        return Margin(
            None if reference is None else share * reference, share, reference, "margin_of_gain"
        )
    points = float(check["margin"])
    return Margin(points, None if reference is None else points / reference, reference, "margin")


def _fmt_trials(row: RowResult, metric: str, digits: int = 1) -> str:
    return _fmt_values(row.values(metric), digits)


def _fmt_interval(interval: Interval, level: float, digits: int = 1) -> str:
    lo, hi = f"{interval.lo:+.{digits}f}", f"{interval.hi:+.{digits}f}"
    return f"Δ {interval.estimate:+.{digits}f}, {level:.1%} CI [{lo}, {hi}] ({interval.test})"


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


def comparison_count(claims: list[Config]) -> int:
    return sum(1 for c in claims if CHECKS[claim_kind(c["check"])] is not None)


def _fmt_values(values: list[float | None], digits: int) -> str:
    found = [v for v in values if v is not None]
    if not found:
        return "–"
    mean = _fmt(statistics.fmean(found), digits)
    return mean if len(found) < 2 else f"{mean} ± {_fmt(statistics.stdev(found), digits)}"


def _collapse_evidence(row: RowResult, signals: list[Signals]) -> str:
    config = row.trials[0].config
    batch = config.optim.batch_size
    evidence = (
        f"{row.id}: {row.status}, std(z)·√d {_fmt_trials(row, 'final_z_std_ratio', 3)} "
        f"(BN floor {batch_norm_std_floor(batch):.3f}, bound {RULE.std_bound(batch):.3f}), "
        f"top-direction share {_fmt_trials(row, 'z_top_share', 4)} (bound {RULE.share}), "
        f"final loss {_fmt_trials(row, FINAL_WINDOW_LOSS, 3)} ({_final_read(row)})"
    )
    if (lowest := lowest_loss(config.loss.similarity, batch)) is not None:
        evidence += f" (bound {lowest + RULE.loss_gap:.3f})"
    gains = [s.gain for s in signals]
    if any(g is not None for g in gains):
        evidence += (
            f", linear gain over random init {_fmt_values(gains, 1)} points "
            f"({_fmt_values([s.gain_z for s in signals], 1)} SE, bound {RULE.gain_z:.2f})"
        )
    return evidence


def _final_read(row: RowResult) -> str:
    """How the trials' final losses were read, e.g. 'median of the last 47 steps'."""
    reads = {t.final[1] for t in row.trials if t.final}
    return " / ".join(sorted(reads)) or "none"


def _collapse_verdict(kind: str, row: RowResult) -> Verdict:
    signals = [t.signals for t in row.trials]
    if row.unstable or None in signals:
        return Verdict("inconclusive", _collapse_evidence(row, [s for s in signals if s]))
    evidence = _collapse_evidence(row, signals)
    outcomes = [s.outcome(RULE) for s in signals]
    collapsed = outcomes.count(COLLAPSED)
    bound = rate_bound(collapsed, len(outcomes), ALPHA)
    evidence += (
        f"; {collapsed} of {len(outcomes)} trials collapsed (collapse rate "
        f"{bound[0]:.2f} to {bound[1]:.2f}, exact binomial, each end one-sided {1 - ALPHA:.0%})"
    )
    disagree = [
        f"seed {t.config.seed}: {s.disagreement(RULE)}"
        for t, s, o in zip(row.trials, signals, outcomes, strict=True)
        if o == DISAGREE
    ]
    if disagree:
        evidence += f"; signals disagree in {len(disagree)} ({'; '.join(disagree)})"
    found = flips(kind, signals)
    batch = row.trials[0].config.optim.batch_size
    sensitivity = "by threshold: " + (
        ", ".join(describe_flip(f, batch) for f in found) if found else "no change in any range"
    )
    return Verdict(
        claim_result(kind, signals),
        evidence,
        rate_bound=bound,
        sensitivity=sensitivity,
        thresholds={
            name: {"rule": rule, "flips_at": at, "to": f.to}
            for f in found
            for name, rule, at in [f.reading(batch)]
        },
    )


def _instability_verdict(row: RowResult, reference: RowResult) -> Verdict:
    noise = {t.config.seed: stability.step_noise(t.history) for t in reference.trials}
    known = [v for v in noise.values() if v is not None]
    typical = statistics.fmean(known) if known else None
    trials = [
        stability.Trial.of(t.config.seed, t.status, t.history, noise.get(t.config.seed) or typical)
        for t in row.trials
    ]
    rule = stability.RULE
    unstable = sum(t.outcome(rule) == stability.UNSTABLE for t in trials)
    bound = rate_bound(unstable, len(trials), ALPHA)
    diverged = sum(t.diverged for t in trials)
    evidence = (
        f"{row.id}: {diverged} of {len(trials)} trials diverged; loss rise over its lowest "
        f"epoch {_fmt_values([t.rise for t in trials], 3)} (rule {rule.rise}); step noise "
        f"{_fmt_values([t.noise for t in trials], 4)} against {reference.id}'s "
        f"{_fmt_values(known, 4)}, ratio {_fmt_values([t.noise_ratio for t in trials], 2)} "
        f"(rule {rule.noise_factor:g}); {unstable} of {len(trials)} trials unstable (rate "
        f"{bound[0]:.2f} to {bound[1]:.2f}, exact binomial, each end one-sided {1 - ALPHA:.0%})"
    )
    if unmeasured := [t.seed for t in trials if t.noise_ratio is None and not t.diverged]:
        evidence += (
            f"; step noise not measured for seed {', '.join(map(str, unmeasured))} (a run "
            "that predates the per-step loss, or its reference's)"
        )
    found = stability.flips(trials)
    sensitivity = "by threshold: " + (
        ", ".join(
            f"{to} at {CHOICES[n]} {at:.3f} (rule {getattr(rule, n):g})"
            for n, (at, to) in found.items()
        )
        or "no change in any range"
    )
    return Verdict(
        stability.claim_result(trials),
        evidence,
        rate_bound=bound,
        sensitivity=sensitivity,
        thresholds={
            n: {"rule": getattr(rule, n), "flips_at": at, "to": to} for n, (at, to) in found.items()
        },
    )


def refresh_steps(row: RowResult) -> int | None:
    """SGD steps between the target's refreshes (1 for SimSiam's own, live target); an
    `epoch` interval is the profile's steps an epoch, None where the run's steps are unknown."""
    config = row.trials[0].config
    if config.target.mode != "snapshot":
        return 1
    every, steps = config.target.refresh_every, row.trials[0].metrics.get("steps")
    if every != "epoch":
        return every
    return None if steps is None else int(steps) // config.optim.epochs


def monitor_slope(trial: RunResult) -> float | None:
    """The kNN monitor's least-squares slope over the second half of training, in points an
    epoch; None with fewer than two monitor points there."""
    half = trial.config.optim.epochs / 2
    points = [(r["epoch"], r["knn"]) for r in trial.history if "knn" in r and r["epoch"] >= half]
    if len(points) < 2:
        return None
    return statistics.linear_regression(*zip(*points, strict=True)).slope


def _monitor_at(row: RowResult, epoch: int) -> str:
    values = [r["knn"] for t in row.trials for r in t.history if r["epoch"] == epoch and "knn" in r]
    return _fmt_values(values, 1)


def _improving_verdict(row: RowResult) -> Verdict:
    trained = [t for t in row.trials if t.status == "ok"]
    slopes = [s for t in trained if (s := monitor_slope(t)) is not None]
    interval = mean_interval(slopes, ALPHA, f"t over {len(slopes)} seeds")
    if interval is None:
        return Verdict(
            "inconclusive",
            f"{row.id}: needs the kNN monitor at 2 or more epochs of the second half of "
            "training, in at least 2 trials (monitor.knn_every)",
        )
    epochs = [r["epoch"] for r in trained[0].history if "knn" in r]
    start = min(e for e in epochs if e >= trained[0].config.optim.epochs / 2)
    level = 1 - 2 * ALPHA
    evidence = (
        f"{row.id}: kNN monitor {_monitor_at(row, epochs[0])} at epoch {epochs[0]}, "
        f"{_monitor_at(row, start)} at {start}, {_monitor_at(row, epochs[-1])} at {epochs[-1]}; "
        f"slope over epochs {start} to {epochs[-1]} {interval.estimate:+.3f} points an epoch, "
        f"{level:.0%} CI [{interval.lo:+.3f}, {interval.hi:+.3f}] ({interval.test})"
    )
    if interval.lo > 0:
        result, flips = "reproduced", interval.lo
        sensitivity = f"by slope required: reproduced up to {interval.lo:+.3f} points an epoch"
    elif interval.hi < 0:
        result, flips = "not reproduced", interval.hi
        sensitivity = f"by slope required: not reproduced down to {interval.hi:+.3f}"
    else:
        result, flips = "inconclusive", None
        sensitivity = "the interval holds 0: the monitor may have stopped improving"
    return Verdict(
        result,
        evidence,
        interval,
        level=level,
        flips_at=flips,
        flips_to=None if flips is None else "inconclusive",
        sensitivity=sensitivity,
    )


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


def verdict(check: dict[str, Any], rows: dict[str, RowResult], alpha: float) -> Verdict:
    """One claim's check, decided from the rows' trials; `alpha` is this claim's one-sided
    share of the table's error rate."""
    named = [rows[v] for k, v in check.items() if k in CHECKS or k in ("than", "to", LONGER_THAN)]
    if skipped := [r for r in named if r.status == "skipped"]:
        reason = skipped[0].trials[0].metrics.get("reason") or "not run at this scale"
        return Verdict("inconclusive", f"{skipped[0].id}: not trained at this scale ({reason})")
    kind = claim_kind(check)
    if LONGER_THAN in check:
        row, other = rows[check[kind]], rows[check[LONGER_THAN]]
        steps, others = refresh_steps(row), refresh_steps(other)
        if steps is None or others is None or steps <= others:
            return Verdict(
                "inconclusive",
                f"{row.id} refreshes its target every {steps or '?'} SGD steps at this scale, "
                f"not less often than {other.id}'s {others or '?'}: the row does not test the "
                "longer interval the claim is about",
            )
    if kind == "improving":
        return _improving_verdict(rows[check[kind]])
    if kind in REFERENCE:
        return _instability_verdict(rows[check[kind]], rows[check[REFERENCE[kind]]])
    if CHECKS[kind] is None:
        return _collapse_verdict(kind, rows[check[kind]])
    x, y = rows[check[kind]], rows[check[CHECKS[kind]]]
    what = compared(kind)
    margin = claim_margin(check, rows) or Margin(0.0, None, None)
    level = 1 - 2 * alpha
    digits = what.digits
    evidence = (
        f"{what.label} {x.id} {_fmt_trials(x, what.metric, digits)} vs "
        f"{y.id} {_fmt_trials(y, what.metric, digits)}"
    )
    interval = difference_interval(x.by_seed(what.metric), y.by_seed(what.metric), alpha)
    if interval is None:
        return Verdict("inconclusive", evidence + "; needs at least 2 trials of each row")
    detects = detectable_difference(interval, alpha, POWER)
    evidence += f": {_fmt_interval(interval, level, digits)}, margin " + (
        f"{margin.points:.2f}{what.unit}{margin.of_gain(margin.points)}"
        if margin.points is not None
        else f"{margin.share:.1%} of a gain {y.id} does not show"
    )
    evidence += f"; this test detects {detects:.{digits}f}{what.unit} {POWER:.0%} of the time"
    found = Verdict("inconclusive", evidence, interval, margin.points, level, power=detects)
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


def _trial_summary(trial: RunResult) -> dict[str, Any]:
    keep = ("status", "knn_acc", "linear_acc", "random_init_knn", "random_init_linear")
    return (
        {"seed": trial.config.seed}
        | {k: trial.metrics.get(k) for k in keep}
        | {
            "collapsed": trial.collapsed,
            "mlflow_run_id": trial.metrics.get("mlflow_run_id"),
        }
    )


# How the index names each choice a verdict can hang on
CHOICES = NAMES | {
    "margin": "margin",
    "slope": "slope required (points an epoch)",
    "rise": "loss rise",
    "noise_factor": "step-noise ratio",
}


def _choices(found: Verdict, kind: str) -> list[dict[str, Any]]:
    """Each choice a verdict was decided with, its value, and the value at which the verdict
    would change (and to what): a threshold of the collapse or instability rule, a
    comparison's margin, the slope an improving claim needs. None changes a verdict that is
    the same over the choice's whole range."""
    if found.thresholds:
        return [{"choice": name} | t for name, t in found.thresholds.items()]
    if found.flips_at is None:
        return []
    name = "slope" if kind == "improving" else "margin"
    rule = 0.0 if kind == "improving" else found.margin
    return [{"choice": name, "rule": rule, "flips_at": found.flips_at, "to": found.flips_to}]


def _paper_difference(table: Table, check: Config) -> float | None:
    """The paper's X − Y for a comparison claim of accuracies, where both rows print one."""
    kind = claim_kind(check)
    if CHECKS[kind] is None or compared(kind).metric != "linear_acc":
        return None
    x, y = table.rows[check[kind]].paper, table.rows[check[CHECKS[kind]]].paper
    numbers = all(isinstance(v, int | float) for v in (x, y))
    return round(x - y, 2) if numbers else None


def _mark(value: Any) -> str:
    if isinstance(value, bool):
        return "✓" if value else ""
    return str(value)


def build_context(
    table: Table,
    profile: str,
    rows: dict[str, RowResult],
    manifest: Manifest,
    commit: str,
    judged: bool,
    curves: str | None = None,
) -> dict[str, Any]:
    """Everything a table's report shows. `judged`: whether the profile's runs can test the
    paper's claims; where not, each claim is listed with its evidence and `not judged`."""
    first_row = next(iter(rows.values()))  # the random-init control is the first row's network
    first = first_row.trials[0].config
    table_rows, paper_notes = [], []
    for row_id, row in table.rows.items():
        if row.paper_note:  # under the table, numbered, so the row table reads in a terminal
            paper_notes.append(row.paper_note)
        result = rows[row_id]
        flat = flatten(result.trials[0].config.to_dict())
        table_rows.append(
            {
                "id": row_id,
                "label": row.label,
                "columns": [_mark(flat[key]) for key in table.columns.values()],
                "paper": row.paper if isinstance(row.paper, str) else f"{row.paper:.1f}",
                "paper_note": len(paper_notes) if row.paper_note else None,
                "knn_acc": result.mean("knn_acc"),
                "linear_acc": result.mean("linear_acc"),
                "knn": _fmt_trials(result, "knn_acc"),
                "linear": _fmt_trials(result, "linear_acc"),
                "z_std_ratio": result.mean("final_z_std_ratio"),
                "z_top_share": result.mean("z_top_share"),
                "ratio": _fmt_trials(result, "final_z_std_ratio", 3),
                "share": _fmt_trials(result, "z_top_share", 3),
                "trials": [_trial_summary(t) for t in result.trials],
                "status": result.status
                + (f": {result.trials[0].metrics['reason']}" if result.status == "skipped" else ""),
                "run_ids": [t.metrics.get("mlflow_run_id", "–") for t in result.trials],
            }
        )
    k = comparison_count(table.claims)
    alpha = ALPHA / max(1, k)
    claims = []
    for claim in table.claims:
        found = verdict(claim["check"], rows, alpha)
        declared = claim_margin(claim["check"], rows)
        interval = found.interval
        claims.append(
            {
                "text": claim["text"],
                "verdict": found.result if judged else NOT_JUDGED,
                "evidence": found.evidence
                + (f"; {found.sensitivity}" if judged and found.sensitivity else ""),
                "paper_difference": _paper_difference(table, claim["check"]),
                "interval": None if interval is None else [interval.lo, interval.hi],
                "estimate": None if interval is None else interval.estimate,
                "test": None if interval is None else interval.test,
                "level": found.level,
                # As declared, also where no interval was made (a row skipped at this scale).
                # In points: as declared or resolved from a share of the reference's gain.
                "margin": found.margin if declared is None else declared.points,
                "kind": claim_kind(claim["check"]),
                "p_value": found.p_value,
                "flips_at": found.flips_at,
                "power": found.power,
                "margin_reason": claim.get("margin_reason"),
                "margin_text": None
                if declared is None or not declared.declared
                else declared.describe(),
                "margin_of_gain": declared and declared.share,
                "reference_gain": declared and declared.reference_gain,
                "flips_at_share": None
                if found.flips_at is None or not (declared and declared.reference_gain)
                else found.flips_at / declared.reference_gain,
                "rate_bound": found.rate_bound,
                "thresholds": found.thresholds,
                "choices": _choices(found, claim_kind(claim["check"])) if judged else [],
            }
        )
    distinct = {
        t.metrics.get("config_hash"): t.metrics.get("wall_s", 0.0)
        for r in rows.values()
        for t in r.trials
    }
    return {
        "table": table,
        "profile": profile,
        "judged": judged,
        "dataset": first.data.dataset,
        "counts": {split: manifest.images(split) for split in manifest.counts},
        "classes": len(manifest.classes),
        "source": Path(manifest.source).name,
        "source_sha256": str(manifest.source_sha256)[:12],
        "image_size": first.data.image_size,
        "backbone": f"{first.model.backbone} (width {first.model.width}"
        + (", CIFAR stem)" if first.model.cifar_stem else ")"),
        "dim": first.model.dim,
        "epochs": first.optim.epochs,
        "batch_size": first.optim.batch_size,
        "linear_probe": first.eval.linear_probe,
        "wall_min": sum(distinct.values()) / 60,
        "elapsed": elapsed([t.metrics for r in rows.values() for t in r.trials]),
        "n_runs": len(distinct),
        "commit": commit,
        "columns": list(table.columns),
        "rows": table_rows,
        "paper_notes": paper_notes,
        "random_init": {
            "linear": first_row.mean("random_init_linear"),
            "knn": first_row.mean("random_init_knn"),
        },
        "random_init_knn": _fmt_trials(first_row, "random_init_knn"),
        "random_init_linear": _fmt_trials(first_row, "random_init_linear"),
        "claims": claims,
        "comparisons": k,
        "alpha": alpha,
        "power": power(table, rows, claims),
        "rules": RULES,
        "curves": curves,
    }


def _template(name: str) -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("simsiam_lab", "templates"),
        undefined=jinja2.StrictUndefined,
        # Labels, claims and evidence are table YAML text: escaped in HTML, verbatim in Markdown.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(name)


def render(context: dict[str, Any], fmt: str = "md") -> str:
    """The table's report as Markdown (`md`) or as one self-contained HTML page (`html`), both
    from the same context, so they print the same numbers and verdicts."""
    return _template(f"table.{fmt}.j2").render(**context)


def plot_table_curves(table: Table, rows: dict[str, RowResult], path: Path) -> None:
    """Every row's curves, one trial per row (more would make the plot unreadable)."""
    first = {row_id: rows[row_id].trials[0] for row_id in table.rows}
    plot_curves(
        [(row.label, first[i].config, first[i].history) for i, row in table.rows.items()], path
    )


def plot_curves(series: list[tuple[str, RunConfig, list[dict]]], path: Path) -> None:
    """The paper's Figure 2 panels for each (label, config, history): loss, std of
    l2-normalised z, kNN accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    dims = set()
    for label, config, history in series:
        dims.add(config.model.dim)
        for ax, key in zip(axes, ("loss", "z_std", "knn"), strict=True):
            points = [(r["epoch"], r[key]) for r in history if key in r]
            if points:
                ax.plot(
                    *zip(*points, strict=True),
                    label=label,
                    marker="." if key == "knn" else None,
                )
    for d in sorted(dims):
        axes[1].axhline(1 / math.sqrt(d), color="grey", linestyle="--", linewidth=0.8)
        _label_line(axes[1], f"1/√{d}", 1 / math.sqrt(d))
    # The lowest std the affine-free BN on z allows at the first series' batch (see RULES).
    first = series[0][1]
    batch, d = first.optim.batch_size, first.model.dim
    floor = batch_norm_std_floor(batch) / math.sqrt(d)
    axes[1].axhline(floor, color="grey", linestyle=":", linewidth=0.8)
    _label_line(axes[1], f"BN floor at B = {batch}", floor)
    for ax, title in zip(
        axes, ("training loss", "std of l2-normalised z", "kNN accuracy (%)"), strict=True
    ):
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[2].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _label_line(ax, text: str, y: float) -> None:
    ax.annotate(text, (0.01, y), xycoords=("axes fraction", "data"), color="grey", fontsize=8)


def summary_json(context: dict[str, Any]) -> dict[str, Any]:
    """The report's numbers and verdicts: for `dvc metrics show` and for the index."""
    table = context["table"]
    return {
        "table": table.name,
        "title": table.title,
        "section": table.section,
        "profile": context["profile"],
        "judged": context["judged"],
        "scale": f"{context['dataset']}, {context['counts']['train']} train images at "
        f"{context['image_size']} px, {context['backbone']}, {context['epochs']} epochs",
        "rows": {
            row["id"]: {
                "knn": row["knn_acc"],
                "linear": row["linear_acc"],
                "status": row["status"],
                "trials": row["trials"],
            }
            for row in context["rows"]
        },
        "claims_reproduced": sum(c["verdict"] == "reproduced" for c in context["claims"]),
        "claims_total": len(context["claims"]),
        "claims": context["claims"],
        "comparisons": context["comparisons"],
        "power": context["power"],
        "mlflow_runs": sorted({i for row in context["rows"] for i in row["run_ids"]}),
    }


_SUMMARY_KEYS = ("table", "title", "section", "profile", "judged", "scale", "claims", "power")


def load_summary(path: Path) -> dict[str, Any]:
    """A table report's JSON, checked to be one this version writes (the index reads it)."""
    rerun = "rerun `simsiam report` for its table (snakemake: --forcerun report)"
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: no such report; {rerun}") from None
    except (OSError, ValueError) as err:
        raise ReportError(f"{path}: not a readable report JSON ({err}); {rerun}") from None
    missing = [k for k in _SUMMARY_KEYS if not isinstance(summary, dict) or k not in summary]
    if missing:
        raise ReportError(
            f"{path}: written by another version of simsiam_lab (no {missing[0]!r}); {rerun}"
        )
    return summary


def _paper_and_ours(
    table: Table, context: dict[str, Any]
) -> list[tuple[dict[str, Any], float | None, float | None]]:
    """Each report row with the paper's linear accuracy and our mean, None where there is no
    number (the paper's 'unstable', a skipped or diverged run)."""
    found = []
    for row in context["rows"]:
        paper = table.rows[row["id"]].paper
        found.append((row, None if isinstance(paper, str) else paper, row["linear_acc"]))
    return found


def accuracy_bars(table: Table, context: dict[str, Any]) -> pd.DataFrame:
    """One bar per (row, paper | ours) linear accuracy, for `dvc plots show` (rows without a
    number, such as the paper's 'unstable' or a skipped run, have no bar)."""
    bars = []
    for row, paper, ours in _paper_and_ours(table, context):
        if paper is not None:
            bars.append({"bar": f"{row['id']}: paper", "accuracy": paper})
        if ours is not None:
            bars.append({"bar": f"{row['id']}: ours", "accuracy": round(ours, 2)})
    return pd.DataFrame(bars, columns=["bar", "accuracy"])


def table_metrics(context: dict[str, Any]) -> dict[str, Any]:
    """The numbers a reader compares across experiments, per row (means over its trials): the
    accuracies and the collapse diagnostics; the random-init control; the verdict counts."""

    def rounded(value: float | None, digits: int) -> float | None:
        return None if value is None else round(value, digits)

    rows = {
        row["id"]: {
            "linear": rounded(row["linear_acc"], 2),
            "knn": rounded(row["knn_acc"], 2),
            "z_std_ratio": rounded(row["z_std_ratio"], 4),
            "z_top_share": rounded(row["z_top_share"], 4),
        }
        for row in context["rows"]
    }
    verdicts = [claim["verdict"] for claim in context["claims"]]
    return {
        "rows": rows,
        "random_init": {k: rounded(v, 2) for k, v in context["random_init"].items()},
        "claims": {v: verdicts.count(v) for v in (VERDICTS if context["judged"] else [NOT_JUDGED])},
    }


def curves_by_row(table: Table, rows: dict[str, RowResult]) -> dict[str, pd.DataFrame]:
    """Per quantity of the history (loss, std(z)·√d, kNN), one column per row labelled as the
    table labels it, from the row's first trial as the report's curves: an epoch column and a
    line per epoch where any row has a value (NaN where that row has none)."""
    out = {}
    for quantity in CURVES:
        columns = {
            row.label: {
                int(r["epoch"]): r[quantity]
                for r in rows[row_id].trials[0].history
                if r.get(quantity) is not None
            }
            for row_id, row in table.rows.items()
        }
        frame = pd.DataFrame(columns).sort_index()
        out[quantity] = frame.rename_axis("epoch").reset_index()
    return out


BAR_HEIGHT = 0.38  # of each of a row's two accuracy bars (paper, ours), in row heights


def plot_accuracy_bars(table: Table, context: dict[str, Any], path: Path) -> None:
    """accuracy_bars as a picture: per row, the paper's linear accuracy above our mean, each
    trial a tick on our bar, and the random-init encoder's line (what "learned" is tested
    against)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records, papers, ours = (list(c) for c in zip(*_paper_and_ours(table, context), strict=True))
    fig, ax = plt.subplots(figsize=(10, 1.6 + 0.62 * len(records)), layout="constrained")
    half, rows = BAR_HEIGHT / 2, range(len(records))
    xmax = 1.05 * max([v for v in papers + ours if v is not None], default=1)
    legend = [
        _bars(
            ax,
            [i - half for i in rows],
            papers,
            [r["paper"] for r in records],
            xmax,
            color="#9aa5b1",
            label="the paper's",  # its setting (one or two lines) is in the report's header
        ),
        _bars(
            ax,
            [i + half for i in rows],
            ours,
            [r["status"].split(":")[0] for r in records],  # "skipped", without its long reason
            xmax,
            color="#2f6fb3",
            label=f"ours at the {context['profile']} profile, mean of the trials",
        ),
        *_our_trials(ax, records, [i + half for i in rows], context["random_init"]["linear"]),
    ]
    ax.set_yticks(rows, [textwrap.fill(r["label"], 34) for r in records])
    ax.invert_yaxis()  # the table's first row on top, as in the report
    ax.set_xlim(0, xmax)
    ax.set_xlabel("linear top-1 accuracy (%)")
    ax.set_title(f"{table.title}: paper vs ours", fontsize=10)
    fig.legend(handles=legend, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(
    ax: Axes,
    y: list[float],
    values: list[float | None],
    missing: list[str],
    xmax: float,
    **style: Any,
) -> BarContainer:
    """Horizontal bars, each with its value at its start (clear of the trials' ticks at its
    end): white inside a bar, dark beside one too short to hold it (the paper's 0.1 of a
    collapse). A missing value is no bar, only why (the paper's 'unstable', a skipped run)."""
    bars = ax.barh(y, [0 if v is None else v for v in values], BAR_HEIGHT, **style)
    for at, value, why in zip(y, values, missing, strict=True):
        text = why if value is None else f"{value:.1f}"
        color = "white" if value is not None and value > 0.08 * xmax else "#52606d"
        ax.annotate(
            text,
            (0, at),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            color=color,
            fontweight="bold",
        )
    return bars


def _our_trials(
    ax: Axes, records: list[dict[str, Any]], y: list[float], random_init: float | None
) -> list[Artist]:
    """A tick per trial of each row that has several, and the random-init line; their
    legend handles."""
    ticks = [
        (t["linear_acc"], at)
        for r, at in zip(records, y, strict=True)
        if len(r["trials"]) > 1
        for t in r["trials"]
        if t["linear_acc"] is not None
    ]
    drawn = []
    if ticks:
        drawn += ax.plot(*zip(*ticks, strict=True), "|", color="black", label="ours, one trial")
    if random_init is not None:
        style = {"color": "grey", "linestyle": "--", "linewidth": 0.8}
        drawn.append(ax.axvline(random_init, label="ours at random init", **style))
    return drawn


def render_index(summaries: list[dict[str, Any]], commit: str, fmt: str = "md") -> str:
    """Every table's claims and verdicts on one page, as Markdown linking to each table's
    report or as one self-contained HTML page."""
    unjudged = sorted({t["profile"] for t in summaries if not t["judged"]})
    return _template(f"index.{fmt}.j2").render(
        tables=summaries,
        totals=_totals(summaries),
        study=study_wide(summaries),
        sensitivity=sensitivity(summaries),
        unjudged=unjudged,
        rules=RULES,
        commit=commit,
    )


def _totals(summaries: list[dict[str, Any]]) -> dict[str, int]:
    """Each verdict's count over the judged tables, and their claims."""
    judged = [t for t in summaries if t["judged"]]
    totals = {
        verdict: sum(c["verdict"] == verdict for t in judged for c in t["claims"])
        for verdict in VERDICTS
    }
    return totals | {"claims": sum(t["claims_total"] for t in judged)}


def index_json(summaries: list[dict[str, Any]], commit: str) -> dict[str, Any]:
    """The index's counts, for a script: per table, over the judged tables (each table's
    Bonferroni), and study-wide (Holm over every comparison claim)."""
    return {
        "commit": commit,
        "tables": {
            t["table"]: {"profile": t["profile"], "judged": t["judged"]}
            | {v: sum(c["verdict"] == v for c in t["claims"]) for v in (*VERDICTS, NOT_JUDGED)}
            for t in summaries
        },
        "totals": _totals(summaries),
        "study_wide": study_wide(summaries),
        "sensitivity": sensitivity(summaries),
    }


def _under_holm(summaries: list[dict[str, Any]]) -> list[tuple[dict[str, Any], bool]]:
    """The judged tables' comparison claims, the study-wide family, in the index's order, each
    with whether Holm's procedure over that family at the one-sided ALPHA reproduces it. A
    comparison without a p-value (a row skipped, one trial, a row that did not beat its random
    init) stays in the family and is never reproduced."""
    family = [c for t in summaries if t["judged"] for c in t["claims"] if CHECKS.get(c["kind"])]
    rejected = holm([1.0 if c["p_value"] is None else c["p_value"] for c in family], ALPHA)
    return list(zip(family, rejected, strict=True))


def sensitivity(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """What each judged verdict hangs on: per claim, each choice within whose range the
    verdict would change (a margin, a rule's threshold, the family a count corrects over),
    its value, where the verdict changes and to what; and how many claims no such choice
    changes."""
    under_holm = {id(c): rejected for c, rejected in _under_holm(summaries)}
    rows, unchanged = [], 0
    for t in (t for t in summaries if t["judged"]):
        for c in t["claims"]:
            unit = " (final loss)" if c["kind"] == "loss_above" else ""
            found = [
                f"{CHOICES[ch['choice']]}{unit} {ch['rule']:.3g}: "
                f"{ch['to']} at {ch['flips_at']:.3g}"
                for ch in c["choices"]
            ]
            if c["verdict"] == "reproduced" and under_holm.get(id(c)) is False:
                found.append(
                    "family, its table (Bonferroni): inconclusive over the whole study (Holm)"
                )
            if found:
                rows.append(
                    {
                        "table": t["table"],
                        "claim": c["text"],
                        "verdict": c["verdict"],
                        "choices": found,
                    }
                )
            unchanged += not found
    return {"rows": rows, "unchanged": unchanged}


def study_wide(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline count under one correction for the whole study: Holm's procedure over
    every comparison claim of the judged tables at the one-sided ALPHA, beside the count with
    Bonferroni within each table (_under_holm)."""
    claims = [c for t in summaries if t["judged"] for c in t["claims"]]
    family = _under_holm(summaries)
    return {
        "family": len(family),
        "method": "holm",
        "alpha": ALPHA,
        "reproduced_holm": sum(rejected for _, rejected in family),
        "reproduced_per_table": sum(c["verdict"] == "reproduced" for c, _ in family),
        "other_claims": len(claims) - len(family),
    }
