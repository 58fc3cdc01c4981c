import math

import pytest

from simsiam_lab.verdicts.sequential import DECIDED
from simsiam_lab.verdicts.stability import (
    RULE,
    STABLE,
    UNKNOWN,
    UNSTABLE,
    Signals,
    final_loss,
    loss_rise,
    step_noise,
    why_no_step_noise,
)
from simsiam_lab.verdicts.votes import noise_ratio_verdict


def _history(steps, per_epoch=50):
    epochs = [steps[i : i + per_epoch] for i in range(0, len(steps), per_epoch)]
    return [{"epoch": e + 1, "loss": sum(s) / len(s), "step_loss": s} for e, s in enumerate(epochs)]


def test_the_final_loss_is_the_median_of_the_last_steps_and_ignores_one_odd_batch():
    steps = [-0.5] * 380 + [-0.93] * 19 + [5.0]  # 400 steps: a window of 20, one of them odd
    assert final_loss(_history(steps)) == (-0.93, "median of the last 20 steps")
    # The last epoch's mean is pulled far off, by the one batch and the steps before.
    assert _history(steps)[-1]["loss"] > -0.6


def test_a_history_without_step_losses_falls_back_to_its_last_epoch_and_says_so():
    history = [{"epoch": 1, "loss": -0.4}, {"epoch": 2, "loss": -0.8}]
    assert final_loss(history) == (-0.8, "last epoch's mean")
    assert step_noise(history) is None
    assert final_loss([]) is None


def test_step_noise_measures_scatter_not_the_trend():
    trend = [-0.01 * i for i in range(200)]  # a steady descent: no scatter at all
    assert step_noise(_history(trend)) == pytest.approx(0.01 / math.sqrt(2))
    alternating = [-0.5 + 0.1 * (-1) ** i for i in range(200)]
    assert step_noise(_history(alternating)) == pytest.approx(0.2 / math.sqrt(2))
    # Read over the second half only: an unsettled start does not count.
    settled = [(-1) ** i for i in range(100)] + [-0.5] * 100
    assert step_noise(_history(settled)) == 0.0
    assert step_noise(_history([math.nan] * 200)) is None


def test_loss_rise_is_the_last_epoch_above_the_lowest_and_skips_a_non_finite_end():
    history = [
        {"epoch": 1, "loss": -0.9},
        {"epoch": 2, "loss": -0.7},
        {"epoch": 3, "loss": math.nan},
    ]
    assert loss_rise(history[:2]) == pytest.approx(0.2)
    assert loss_rise(history) == pytest.approx(0.2)


@pytest.mark.parametrize(
    "trial, outcome",
    [
        (Signals(0, True, None, None, None), UNSTABLE),
        (Signals(0, False, 0.2, 0.01, 0.01), UNSTABLE),
        (Signals(0, False, 0.0, 0.03, 0.01), UNSTABLE),
        (Signals(0, False, 0.0, 0.015, 0.01), STABLE),
        (Signals(0, False, 0.0, None, 0.01), UNKNOWN),
        (Signals(0, False, 0.0, 0.01, None), UNKNOWN),
    ],
)
def test_each_trial_is_unstable_stable_or_not_measured(trial, outcome):
    assert trial.outcome(RULE) == outcome


def test_the_step_noise_ratio_is_tested_against_the_smallest_ratio_read_as_oscillating():
    # Table 3 (d) against (c) at the cpu profile: ratios 1.05 to 1.09, three seeds.
    near_one = noise_ratio_verdict("", [math.log(r) for r in (1.05, 1.07, 1.09)], 2.0)
    assert near_one.result == "not reproduced"
    assert near_one.sequence["stopped"] == DECIDED and near_one.sequence["seeds"] == 3
    assert near_one.thresholds["noise_factor"]["flips_at"] == pytest.approx(
        math.exp(near_one.interval.hi)
    )
    oscillating = noise_ratio_verdict("", [math.log(r) for r in (3.1, 2.9, 3.3)], 2.0)
    assert oscillating.result == "reproduced"
    # Seeds that disagree decide nothing yet: the next look's 5 seeds are asked for.
    spread = noise_ratio_verdict("", [math.log(r) for r in (0.9, 4.0, 2.2)], 2.0)
    assert spread.result == "inconclusive" and spread.sequence["next_seeds"] == 5


def test_an_unmeasured_step_noise_says_why():
    # Table 3 (d) at the smoke profile: 2 epochs of 6 steps, a second half of 6 steps.
    short = [{"loss": -0.5, "step_loss": [-0.5] * 6}, {"loss": -0.6, "step_loss": [-0.6] * 6}]
    assert step_noise(short) is None
    assert why_no_step_noise(short) == (
        "its second half holds 6 SGD steps, fewer than the 10 it needs"
    )
    assert why_no_step_noise([{"loss": -0.5}]) == "a run that predates the per-step loss"
    broken = [{"loss": -0.5, "step_loss": [-0.5] * 20 + [math.nan]}]
    assert why_no_step_noise(broken) == "a non-finite step loss in its second half"
