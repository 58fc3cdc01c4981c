"""The intervals behind the verdicts, checked against scipy's own tests."""

import numpy as np
import pytest
from scipy import stats

from simsiam_lab.stats import (
    difference_interval,
    mean_interval,
    pooled_std,
    smallest_resolvable_difference,
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


def test_the_smallest_resolvable_difference_is_detected_at_the_stated_power():
    std, n, alpha = 1.5, 3, 0.0125
    delta = smallest_resolvable_difference(std, n, alpha, power=0.8)
    rng = np.random.default_rng(0)
    x = rng.normal(delta, std, (4000, n))
    y = rng.normal(0.0, std, (4000, n))
    p = stats.ttest_ind(x, y, axis=1, alternative="greater").pvalue
    assert np.mean(p < alpha) == pytest.approx(0.8, abs=0.04)
