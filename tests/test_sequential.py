"""The group-sequential design: its boundaries pinned to published tables, its decisions, and a
Monte-Carlo run of the whole procedure (looks and futility included) for its error rate and
power, which is what shows the design valid."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from simsiam_lab.verdicts.sequential import (
    DECIDED,
    FUTILE,
    SPENT,
    WAITING,
    Design,
    RateDesign,
    crossing_probabilities,
    level_holm,
    obrien_fleming_spent,
    pocock_spent,
    rate_crossing,
    rate_verdict,
    sequential_verdict,
    spending_bounds,
    t_bounds,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import sequential_mc  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

EQUAL = (0.25, 0.5, 0.75, 1.0)
# The level each comparison of the cpu study is run at: 0.05 over its 18 planned comparisons.
STUDY_ALPHA = 0.05 / 18


def _upper_total(bounds: list[float]) -> float:
    """A symmetric two-sided design's chance of crossing its upper boundary with no effect."""
    return sum(crossing_probabilities(bounds, EQUAL, [-b for b in bounds]))


def test_the_normal_boundaries_match_published_tables():
    # gsDesign(k = 4, test.type = 1, alpha = 0.025, sfu = sfLDOF): 4.3326 2.9631 2.3590 2.0141
    assert spending_bounds(EQUAL, 0.025) == pytest.approx(
        (4.3326, 2.9631, 2.3590, 2.0141), abs=1e-3
    )
    # Jennison & Turnbull (2000), Tables 2.1 and 2.3, K = 4, two-sided 0.05: Pocock's constant
    # 2.361, O'Brien & Fleming's 2.024 (boundaries 4.05, 2.86, 2.34, 2.02).
    assert _upper_total([2.361] * 4) == pytest.approx(0.025, abs=2e-4)
    obf = [2.024 * math.sqrt(4 / k) for k in range(1, 5)]
    assert _upper_total(obf) == pytest.approx(0.025, abs=2e-4)
    # Four unadjusted looks at 1.96 cross the upper boundary 6.3% of the time (gsDesign's tests).
    assert _upper_total([1.96] * 4) == pytest.approx(0.063, abs=5e-4)


def test_the_spending_functions_spend_alpha_by_the_last_look():
    for spent in (obrien_fleming_spent, pocock_spent):
        shares = [spent(t, 0.05) for t in (0.0, *EQUAL)]
        assert shares[0] == 0 and shares[-1] == pytest.approx(0.05)
        assert shares == sorted(shares)
    assert obrien_fleming_spent(0.25, 0.05) < 1e-3 < pocock_spent(0.25, 0.05)


def test_one_look_s_t_boundary_is_student_s_quantile():
    # t tables: 1.796 at 11 df (one-sided 0.05), 2.776 at 4 df (0.025); the simulation's error
    # at this many paths is about 0.005.
    assert t_bounds((12,), 0.05, "pocock")[0] == pytest.approx(1.796, abs=0.012)
    assert t_bounds((5,), 0.025, "pocock")[0] == pytest.approx(2.776, abs=0.03)


def test_a_claim_waits_for_its_next_look_and_stops_where_it_is_decided():
    design = Design()
    big = [5.0, 5.2, 4.9, 5.1, 5.0]
    found = sequential_verdict("better", big, 0.0, design)
    assert (found.result, found.stopped, found.looks, found.seeds) == ("reproduced", DECIDED, 1, 3)
    noisy = [0.5, -0.4, 0.3, 0.1]
    found = sequential_verdict("better", noisy, 0.0, design)
    assert (found.result, found.stopped, found.looks, found.seeds) == (
        "inconclusive",
        WAITING,
        1,
        3,
    )
    assert found.seeds_needed > 5


def test_a_claim_the_budget_cannot_decide_stops_as_futile_and_says_what_it_needs():
    # An equivalence margin far below the seed noise: thousands of seeds.
    diffs = [0.9, -1.1, 0.4, -0.2, 1.5, -0.8, 0.3, -1.4]
    found = sequential_verdict("similar", diffs, 0.05, Design())
    assert found.stopped == FUTILE and found.looks == 2 and found.seeds == 5
    assert found.seeds_needed > 8 * 12
    # The same noise with no futility stop: undecided at every look, the budget spent.
    noise = [1.0, -1.0] * 6
    found = sequential_verdict("better", noise, 0.0, Design(futility=math.inf))
    assert (found.stopped, found.looks, found.seeds) == (SPENT, 4, 12)


def test_holm_by_levels_is_holm_on_the_p_values(monkeypatch):
    import gc

    from statsmodels.stats.multitest import multipletests

    # multipletests runs a full garbage collection at every call: 0.3 s in a test process
    # (a minute over this test in CI), for nothing that changes its answer.
    monkeypatch.setattr(gc, "collect", lambda *args: 0)
    rng = np.random.default_rng(3)
    for _ in range(30):
        ps = list(rng.uniform(0, 0.08, rng.integers(1, 9)))
        want = [bool(r) for r in multipletests(ps, alpha=0.05, method="holm")[0]]
        assert level_holm([lambda level, p=p: p <= level for p in ps], 0.05) == want
    assert level_holm([], 0.05) == []


def test_the_rate_boundaries_are_exact_tail_tests_over_the_looks():
    design = RateDesign()
    # 3 trials cannot show a rate against one half (3 of 3: p = 0.125); 5 of 5 (0.031) can, as
    # 8 of 8 and 10 of 12 (0.019) do; one end's total over the looks, exactly, is 0.0435.
    assert design.upper == (math.inf, 5, 8, 10)
    assert design.lower == (-math.inf, 0, 0, 2)
    assert rate_crossing(design.looks, design.upper, 0.5) == pytest.approx(0.0435, abs=1e-4)
    assert rate_verdict(True, [True] * 5, design).result == "reproduced"
    assert rate_verdict(False, [True] * 5, design).result == "not reproduced"
    found = rate_verdict(False, [False, False, None], design)
    assert (found.result, found.stopped, found.looks) == ("inconclusive", WAITING, 1)
    # 4 collapsed of 8: 12 trials would need 10 collapsed or at most 2, neither within reach of
    # the 4 trials left, so it stops as futile; 2 of 5 could still reach 2 of 12, and waits.
    found = rate_verdict(True, [True, False] * 4, design)
    assert (found.stopped, found.looks, found.trials) == (FUTILE, 3, 8)
    found = rate_verdict(True, [True, False, True, False, False], design)
    assert found.stopped == WAITING


@pytest.mark.slow  # 12,000 simulated studies for each of 6 procedures: about 40 s
def test_the_whole_procedures_hold_their_error_rates_and_power_as_the_readme_prints_them():
    """The Monte-Carlo run of each whole procedure, looks, futility and the budget included
    (benchmarks/sequential_mc.py), is what shows the designs valid: with no effect (the edge of
    each null) 'reproduced' stays within the level plus three Monte-Carlo errors; at the effect a
    design states, it is reproduced at least 80% of the time, within three errors; and the
    README prints these figures as measured."""
    rows = sequential_mc.measure()
    for row in rows:
        slack = 3 * math.sqrt(row.level * (1 - row.level) / sequential_mc.STUDIES)
        assert row.null <= row.level + slack, row
    for row in (r for r in rows if r.stated):
        assert row.power >= 0.8 - 3 * math.sqrt(0.16 / sequential_mc.STUDIES), row
    assert sequential_mc.table(rows) in (ROOT / "README.md").read_text()
