"""The intervals behind the verdicts, checked against scipy's own tests."""

import numpy as np
import pytest
from scipy import stats

from simsiam_lab.verdicts.stats import (
    Interval,
    claim_p_value,
    decide,
    detectable_difference,
    difference_interval,
    flips_at,
    holm,
    mean_interval,
    pooled_std,
    rate_bound,
)

X = {0: 41.2, 1: 43.0, 2: 39.9}
Y = {0: 38.1, 1: 41.5, 2: 37.0}


def test_matching_seeds_give_the_paired_t_interval():
    got = difference_interval(X, Y, alpha=0.05)
    want = stats.ttest_rel(list(X.values()), list(Y.values())).confidence_interval(0.9)
    assert got.test == "paired t, 3 seeds"
    assert (got.lo, got.hi) == pytest.approx((want.low, want.high))
    assert got.estimate == pytest.approx(np.mean(list(X.values())) - np.mean(list(Y.values())))


def test_other_seeds_give_welch():
    y = {3: 38.1, 4: 41.5, 5: 37.0, 6: 36.2, 7: 40.0}
    got = difference_interval(X, y, alpha=0.025)
    result = stats.ttest_ind(list(X.values()), list(y.values()), equal_var=False)
    want = result.confidence_interval(0.95)
    assert got.test == "Welch t, 3 vs 5 seeds"
    assert (got.lo, got.hi) == pytest.approx((want.low, want.high))


def test_one_trial_gives_no_interval():
    assert difference_interval({0: 40.0}, {0: 38.0}, 0.05) is None
    assert difference_interval(X, {0: 38.0}, 0.05) is None
    assert mean_interval([1.0], 0.05) is None


def test_pooled_std_weights_groups_by_their_df():
    groups = [[1.0, 2.0, 3.0], [10.0, 14.0], [7.0]]  # the single value carries no df
    std, df = pooled_std(groups)
    assert df == 3
    assert std == pytest.approx(np.sqrt((2 * 1.0 + 1 * 8.0) / 3))
    assert pooled_std([[1.0]]) is None


def test_a_claim_s_p_value_is_scipy_s_and_statsmodels_one_sided_tests():
    from statsmodels.stats.weightstats import ttost_ind, ttost_paired

    x, y = np.array(list(X.values())), np.array(list(Y.values()))
    paired = difference_interval(X, Y, alpha=0.05)
    want = stats.ttest_rel(x, np.array(y) + 1.0, alternative="greater").pvalue
    assert claim_p_value("better", paired, 1.0) == pytest.approx(want)
    want = stats.ttest_rel(x, np.array(y) - 1.0, alternative="greater").pvalue
    assert claim_p_value("not_worse", paired, 1.0) == pytest.approx(want)
    assert claim_p_value("similar", paired, 4.0) == pytest.approx(ttost_paired(x, y, -4, 4)[0])
    welch = difference_interval(X, {3: 38.1, 4: 41.5, 5: 37.0, 6: 36.2}, alpha=0.05)
    other = np.array([38.1, 41.5, 37.0, 36.2])
    got = claim_p_value("similar", welch, 5.0)
    assert got == pytest.approx(ttost_ind(x, other, -5, 5, usevar="unequal")[0])


def _random_rows(seed: int, gap_std: float, cases: int = 200):
    """Pairs of 3-seed rows (std 2) whose true gap is drawn with std `gap_std`, and the rng."""
    rng = np.random.default_rng(seed)
    for _ in range(cases):
        x = dict(enumerate(rng.normal(40, 2, 3)))
        yield rng, x, dict(enumerate(rng.normal(40 + rng.normal(0, gap_std), 2, 3)))


@pytest.mark.parametrize("kind", ["better", "not_worse", "similar"])
def test_a_claim_s_p_value_is_below_alpha_exactly_where_its_interval_reproduces_it(kind):
    for rng, x, y in _random_rows(seed=0, gap_std=2):
        alpha, margin = rng.choice([0.05, 0.0125]), rng.choice([0.0, 1.0, 3.0])
        interval = difference_interval(x, y, alpha)
        reproduced = decide(kind, interval, margin) == "reproduced"
        assert reproduced == (claim_p_value(kind, interval, margin) < alpha), (x, y, margin)


@pytest.mark.parametrize("kind", ["better", "not_worse", "similar"])
def test_the_verdict_changes_at_its_flips_at_margin_and_nowhere_nearer(kind):
    for rng, x, y in _random_rows(seed=1, gap_std=3):
        interval, margin = difference_interval(x, y, 0.05), float(rng.uniform(0, 4))
        now = decide(kind, interval, margin)
        flip = flips_at(kind, interval, margin)
        between = np.linspace(margin, flip if flip is not None else 50.0, 60)[:-1]
        assert {decide(kind, interval, float(m)) for m in between} == {now}
        if flip is not None:
            beyond = flip + 1e-6 if flip > margin else flip - 1e-6
            assert decide(kind, interval, beyond) != now, (interval, margin, flip)


def test_holm_steps_down_from_the_smallest_p_value():
    # 0.01 < 0.05/4; 0.015 < 0.05/3; 0.03 > 0.05/2 stops there, so 0.04 is kept too.
    assert holm([0.03, 0.01, 0.04, 0.015], 0.05) == [False, True, False, True]
    assert holm([], 0.05) == []


def test_a_unanimous_collapse_vote_bounds_the_rate_exactly():
    assert rate_bound(3, 3, 0.05) == pytest.approx((0.05 ** (1 / 3), 1.0))
    assert rate_bound(0, 3, 0.05) == pytest.approx((0.0, 1 - 0.05 ** (1 / 3)))


@pytest.mark.parametrize("n, alpha", [(3, 0.05), (3, 0.0125), (5, 0.025)])
def test_a_claim_s_own_test_detects_its_detectable_difference_at_the_stated_power(n, alpha):
    std = 1.5  # paired differences' std: the interval's se is std / sqrt(n), its df n - 1
    delta = detectable_difference(Interval(0.0, 0.0, 0.0, "paired", std / n**0.5, n - 1), alpha)
    diffs = np.random.default_rng(0).normal(delta, std, (20000, n))
    p = stats.ttest_1samp(diffs, 0.0, axis=1, alternative="greater").pvalue
    assert np.mean(p < alpha) == pytest.approx(0.8, abs=0.015)
