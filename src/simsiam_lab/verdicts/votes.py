"""The verdicts that are votes of a row's trials: collapse, instability against a reference row,
and whether the kNN monitor keeps improving."""

from __future__ import annotations

import math
import statistics

from . import stability
from .collapse import (
    COLLAPSED,
    DISAGREE,
    NAMES,
    RULE,
    Signals,
    batch_norm_std_floor,
    describe_flip,
    flips,
    has_floor,
    lowest_loss,
    rate_design,
    rate_test,
)
from .results import RowResult, RunResult
from .sequential import (
    LOOKS,
    WAITING,
    Design,
    RateSequential,
    rate_verdict,
    sequence_json,
    sequential_verdict,
)
from .stability import FINAL_WINDOW_LOSS
from .stats import decide, flips_at, mean_interval, rate_bound
from .verdict import ALPHA, Verdict, fmt_trials, fmt_values

# How the index names each choice a verdict can hang on
CHOICES = NAMES | {
    "margin": "margin",
    "slope": "slope required (points an epoch)",
    "rise": "loss rise",
    "noise_factor": "step-noise ratio",
}


def _collapse_evidence(row: RowResult, signals: list[Signals]) -> str:
    config = row.trials[0].config
    batch, floored = config.optim.batch_size, has_floor(config)
    floor = (
        f"BN floor {batch_norm_std_floor(batch):.3f}"
        if floored
        else "no BN floor: z ends in no affine-free BN"
    )
    evidence = (
        f"{row.id}: {row.status}, std(z)·√d {fmt_trials(row, 'final_z_std_ratio', 3)} "
        f"({floor}, bound {RULE.std_bound(batch):.3f}), "
        f"top-direction share {fmt_trials(row, 'z_top_share', 4)} (bound {RULE.share}), "
        f"final loss {fmt_trials(row, FINAL_WINDOW_LOSS, 3)} ({_final_read(row)})"
    )
    if (lowest := lowest_loss(config.loss.similarity, batch, floored)) is not None:
        evidence += f" (bound {lowest + RULE.loss_gap:.3f})"
    gains = [s.gain for s in signals]
    if any(g is not None for g in gains):
        evidence += (
            f", linear gain over random init {fmt_values(gains, 1)} points "
            f"({fmt_values([s.gain_z for s in signals], 1)} SE, bound {RULE.gain_z:.2f})"
        )
    return evidence


def _final_read(row: RowResult) -> str:
    """How the trials' final losses were read, e.g. 'median of the last 47 steps'."""
    reads = {t.final[1] for t in row.trials if t.final}
    return " / ".join(sorted(reads)) or "none"


def collapse_verdict(kind: str, row: RowResult, looks: tuple[int, ...] = LOOKS) -> Verdict:
    signals = [t.signals for t in row.trials]
    if row.unstable or None in signals:
        return Verdict("inconclusive", _collapse_evidence(row, [s for s in signals if s]))
    evidence = _collapse_evidence(row, signals)
    outcomes = [s.outcome(RULE) for s in signals]
    collapsed = outcomes.count(COLLAPSED)
    bound = rate_bound(collapsed, len(outcomes), ALPHA)
    test = rate_test(kind, signals, looks=looks)
    evidence += (
        f"; {collapsed} of {len(outcomes)} trials collapsed (collapse rate "
        f"{bound[0]:.2f} to {bound[1]:.2f}, exact binomial, each end one-sided {1 - ALPHA:.0%})"
        f"; {_rate_reading(test, 'collapse', looks)}"
    )
    disagree = [
        f"seed {t.config.seed}: {s.disagreement(RULE)}"
        for t, s, o in zip(row.trials, signals, outcomes, strict=True)
        if o == DISAGREE
    ]
    if disagree:
        evidence += f"; signals disagree in {len(disagree)} ({'; '.join(disagree)})"
    found = flips(kind, signals, looks=looks)
    batch = row.trials[0].config.optim.batch_size
    sensitivity = "by threshold: " + (
        ", ".join(describe_flip(f, batch) for f in found) if found else "no change in any range"
    )
    return Verdict(
        test.result,
        evidence,
        rate_bound=bound,
        sequence=rate_sequence(test, looks),
        sensitivity=sensitivity,
        thresholds={
            name: {"rule": rule, "flips_at": at, "to": f.to}
            for f in found
            for name, rule, at in [f.reading(batch)]
        },
    )


def _rate_reading(test: RateSequential, event: str, looks: tuple[int, ...]) -> str:
    """How a rate claim's exact test stands, e.g. 'exact test of the collapse rate against
    0.5 at look 2 of 4 (5 trials): shown above it, decided'."""
    design = rate_design(looks)
    unsure = f", {test.unsure} undecided counted against each side" if test.unsure else ""
    shown = {"reproduced": "the claim's side shown", "not reproduced": "the other side shown"}
    return (
        f"exact test of the {event} rate against {design.rate:g} over looks of "
        f"{', '.join(map(str, design.looks))} trials (one-sided {design.alpha:g} each end, all "
        f"looks together): at look {test.looks}, {test.events} of {test.trials}{unsure}, "
        f"{shown.get(test.result, 'neither side shown')}; {test.stopped}"
    )


def rate_sequence(test: RateSequential, looks: tuple[int, ...]) -> dict[str, object]:
    """A rate claim's looks for the JSON: taken, trials spent, why it stopped, and what the
    next look needs."""
    design = rate_design(looks)
    waiting = test.stopped == WAITING
    return {
        "design": "exact binomial",
        "planned": list(design.looks),
        "looks": test.looks,
        "seeds": test.trials,
        "stopped": test.stopped,
        "next_seeds": design.looks[test.looks] if waiting else None,
        "seeds_needed": design.looks[test.looks] if waiting else None,
        "events": test.events,
        "unsure": test.unsure,
    }


def instability_verdict(
    row: RowResult, reference: RowResult, looks: tuple[int, ...] = LOOKS
) -> Verdict:
    """'Training is unstable': where no trial diverged or rose, a sequential t test of the
    step-noise ratio to the reference row (log, paired by seed) against the smallest ratio
    read as oscillating (stability.RULE.noise_factor); where some did, the exact rate test of
    unstable trials against one half."""
    noise = {t.config.seed: stability.step_noise(t.history) for t in reference.trials}
    known = [v for v in noise.values() if v is not None]
    typical = statistics.fmean(known) if known else None
    trials = [
        stability.Signals.of(
            t.config.seed, t.status, t.history, noise.get(t.config.seed) or typical
        )
        for t in row.trials
    ]
    rule = stability.RULE
    outcomes = [t.outcome(rule) for t in trials]
    unstable = outcomes.count(stability.UNSTABLE)
    bound = rate_bound(unstable, len(trials), ALPHA)
    diverged = sum(t.diverged for t in trials)
    evidence = (
        f"{row.id}: {diverged} of {len(trials)} trials diverged; loss rise over its lowest "
        f"epoch {fmt_values([t.rise for t in trials], 3)} (rule {rule.rise}); step noise "
        f"{fmt_values([t.noise for t in trials], 4)} against {reference.id}'s "
        f"{fmt_values(known, 4)}, ratio {fmt_values([t.noise_ratio for t in trials], 2)} "
        f"(smallest read as oscillating {rule.noise_factor:g}); {unstable} of {len(trials)} "
        f"trials unstable (rate {bound[0]:.2f} to {bound[1]:.2f}, exact binomial, each end "
        f"one-sided {1 - ALPHA:.0%})"
    )
    evidence += _unmeasured(row, reference, trials)
    ratios = [t.noise_ratio for t in trials]
    rose = [t.rise is not None and t.rise > rule.rise for t in trials]
    if any(t.diverged for t in trials) or any(rose) or None in ratios or not ratios:
        events = {stability.UNSTABLE: True, stability.STABLE: False}
        test = rate_verdict(True, [events.get(o) for o in outcomes], rate_design(looks))
        return Verdict(
            test.result,
            evidence + f"; {_rate_reading(test, 'instability', looks)}",
            rate_bound=bound,
            sequence=rate_sequence(test, looks),
        )
    return noise_ratio_verdict(evidence, [math.log(r) for r in ratios], rule.noise_factor, looks)


def noise_ratio_verdict(
    evidence: str, logs: list[float], factor: float, looks: tuple[int, ...] = LOOKS
) -> Verdict:
    """The step-noise ratio shown above `factor` (reproduced) or below it (not reproduced),
    from the log ratios by seed, under the comparisons' sequential design at one-sided ALPHA."""
    design = Design(looks=looks, alpha=ALPHA)
    found = sequential_verdict("better", logs, math.log(factor), design)
    if found.interval is None:
        return Verdict("inconclusive", evidence + "; needs the ratio of 3 seeds (the first look)")
    interval = found.interval
    lo, hi = math.exp(interval.lo), math.exp(interval.hi)
    evidence += (
        f"; ratio {math.exp(interval.estimate):.2f}, repeated {1 - 2 * ALPHA:.0%} CI "
        f"[{lo:.2f}, {hi:.2f}] ({interval.test}, of the log ratio) against {factor:g}; "
        f"{found.stopped}"
    )
    margin = math.log(factor)
    flip = flips_at("better", interval, margin)  # in log ratio; None: no ratio above 1 flips it
    nudge = 1e-9 if flip is not None and flip > margin else -1e-9
    return Verdict(
        found.result,
        evidence,
        interval,
        level=1 - 2 * ALPHA,
        sequence=sequence_json(found, design),
        sensitivity=f"by step-noise ratio: reproduced below {lo:.2f}, inconclusive to "
        f"{hi:.2f}, not reproduced above",
        thresholds=None
        if flip is None
        else {
            "noise_factor": {
                "rule": factor,
                "flips_at": math.exp(flip),
                "to": decide("better", interval, flip + nudge),
            }
        },
    )


def _unmeasured(row: RowResult, reference: RowResult, trials: list[stability.Signals]) -> str:
    """The trials whose step-noise ratio is unknown, grouped by why (their own history's or
    the reference's), e.g. '; step noise not measured for seed 0, 1 (a run that predates ...)'."""
    histories = {t.config.seed: t.history for t in row.trials}
    references = {t.config.seed: t.history for t in reference.trials}
    by_reason: dict[str, list[int]] = {}
    for trial in (t for t in trials if t.noise_ratio is None and not t.diverged):
        why = (
            stability.why_no_step_noise(histories[trial.seed])
            if trial.noise is None
            else f"{reference.id}'s: " + stability.why_no_step_noise(references.get(trial.seed, []))
        )
        by_reason.setdefault(why, []).append(trial.seed)
    return "".join(
        f"; step noise not measured for seed {', '.join(map(str, seeds))} ({why})"
        for why, seeds in by_reason.items()
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
    return fmt_values(values, 1)


def improving_verdict(row: RowResult) -> Verdict:
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
        f"{level:.0%} CI [{interval.lo:+.3f}, {interval.hi:+.3f}] ({interval.test}); by seed "
        f"{', '.join(f'{v:+.3f}' for v in slopes)} (the mean trend over those epochs, not a "
        "rise at every monitor point of every seed)"
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
