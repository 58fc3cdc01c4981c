"""The intervals behind the verdicts, checked against scipy's own tests."""

import numpy as np
import pytest
from scipy import stats

from simsiam_lab.verdicts.stats import (
    decide,
    flips_at,
    mean_interval,
    pooled_std,
    rate_bound,
)

X = {0: 41.2, 1: 43.0, 2: 39.9}
Y = {0: 38.1, 1: 41.5, 2: 37.0}


def test_the_mean_s_interval_is_scipy_s_one_sample_t_interval():
    diffs = [X[s] - Y[s] for s in X]
    got = mean_interval(diffs, alpha=0.05, test="paired t, 3 seeds")
    want = stats.ttest_rel(list(X.values()), list(Y.values())).confidence_interval(0.9)
    assert got.test == "paired t, 3 seeds"
    assert (got.lo, got.hi) == pytest.approx((want.low, want.high))
    assert got.estimate == pytest.approx(np.mean(diffs))
    assert mean_interval([1.0], 0.05) is None


def test_pooled_std_weights_groups_by_their_df():
    groups = [[1.0, 2.0, 3.0], [10.0, 14.0], [7.0]]  # the single value carries no df
    std, df = pooled_std(groups)
    assert df == 3
    assert std == pytest.approx(np.sqrt((2 * 1.0 + 1 * 8.0) / 3))
    assert pooled_std([[1.0]]) is None


def _random_rows(seed: int, gap_std: float, cases: int = 200):
    """Pairs of 3-seed rows (std 2) whose true gap is drawn with std `gap_std`, and the rng."""
    rng = np.random.default_rng(seed)
    for _ in range(cases):
        x = dict(enumerate(rng.normal(40, 2, 3)))
        yield rng, x, dict(enumerate(rng.normal(40 + rng.normal(0, gap_std), 2, 3)))


@pytest.mark.parametrize("kind", ["better", "not_worse", "similar"])
def test_the_verdict_changes_at_its_flips_at_margin_and_nowhere_nearer(kind):
    for rng, x, y in _random_rows(seed=1, gap_std=3):
        diffs = [x[seed] - y[seed] for seed in x]
        interval, margin = mean_interval(diffs, 0.05), float(rng.uniform(0, 4))
        now = decide(kind, interval, margin)
        flip = flips_at(kind, interval, margin)
        between = np.linspace(margin, flip if flip is not None else 50.0, 60)[:-1]
        assert {decide(kind, interval, float(m)) for m in between} == {now}
        if flip is not None:
            beyond = flip + 1e-6 if flip > margin else flip - 1e-6
            assert decide(kind, interval, beyond) != now, (interval, margin, flip)


def test_a_unanimous_collapse_vote_bounds_the_rate_exactly():
    assert rate_bound(3, 3, 0.05) == pytest.approx((0.05 ** (1 / 3), 1.0))
    assert rate_bound(0, 3, 0.05) == pytest.approx((0.0, 1 - 0.05 ** (1 / 3)))
