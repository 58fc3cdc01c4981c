import json
import re
import shutil
from dataclasses import asdict, replace
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import yaml
from baseline import run_config
from manifests import manifest

from simsiam_lab.claims import Claim
from simsiam_lab.config import EVALUATION
from simsiam_lab.errors import ConfigError
from simsiam_lab.rundir import RunDir
from simsiam_lab.study import Params
from simsiam_lab.verdicts.index import index_json, render_index
from simsiam_lab.verdicts.judge import verdict
from simsiam_lab.verdicts.page import (
    accuracy_bars,
    build_context,
    curves_by_row,
    render,
    summary_json,
    table_metrics,
)
from simsiam_lab.verdicts.plots import plot_accuracy_bars
from simsiam_lab.verdicts.report import next_look
from simsiam_lab.verdicts.results import RowResult, RunResult, read_rows, runs_table
from simsiam_lab.verdicts.stability import FINAL_WINDOW_LOSS
from simsiam_lab.verdicts.votes import monitor_slope

ROOT = Path(__file__).resolve().parents[1]


def _trial(
    status="ok",
    linear=50.0,
    knn=40.0,
    random_linear=20.0,
    ratio=0.9,
    share=0.3,
    losses=(-0.5, -0.9),
    similarity="cosine",
    batch=512,
    seed=0,
    reason=None,
    steps=None,
):
    """One trial; `steps`: its per-step losses, one list an epoch (as history.json has them)."""
    metrics = {
        "status": status,
        "reason": reason,
        "linear_acc": linear,
        "knn_acc": knn,
        "random_init_knn": 20.0,
        "random_init_linear": random_linear,
        "final_z_std_ratio": ratio,
        "z_top_share": share,
        "final_loss": losses[-1] if status == "ok" else None,
        "test_images": 10_000,
    }
    history = [{"epoch": i + 1, "loss": loss} for i, loss in enumerate(losses)]
    for record, step_losses in zip(history, steps or [], strict=False):
        record["step_loss"] = list(step_losses)
    config = run_config(seed=seed, loss={"similarity": similarity}, optim={"batch_size": batch})
    return RunResult(config, metrics, history)


def _row(row_id, *linear, **kw):
    """A row with one trial per linear accuracy, seeds 0, 1, ..."""
    return RowResult(row_id, [_trial(linear=v, seed=i, **kw) for i, v in enumerate(linear)])


def _judge(check, rows):
    """The verdict on a claim of this check at one-sided 0.05."""
    return verdict(Claim.of_check("", check), rows, alpha=0.05)


def _verdict(check, **rows):
    return _judge(check, rows)


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        ((60.0, 61.0, 59.5), "reproduced"),  # clearly above
        ((51.0, 49.0, 52.0), "inconclusive"),  # the interval straddles 0
        ((40.0, 41.0, 39.0), "not reproduced"),  # clearly below
    ],
)
def test_better_is_read_off_the_interval(x, expected):
    found = _verdict({"better": "x", "than": "y"}, x=_row("x", *x), y=_row("y", 50.0, 50.5, 49.5))
    assert found.result == expected
    assert found.interval.lo < found.interval.estimate < found.interval.hi
    assert found.interval.test.startswith("paired t, 3 seeds, look 1 of 4")
    assert found.level == pytest.approx(0.9)


def test_a_better_claim_with_a_margin_needs_the_interval_above_it():
    x, y = _row("x", 52.0, 52.4, 51.8), _row("y", 50.0, 50.3, 49.9)
    assert _verdict({"better": "x", "than": "y"}, x=x, y=y).result == "reproduced"
    assert _verdict({"better": "x", "than": "y", "margin": 3.0}, x=x, y=y).result == (
        "not reproduced"
    )


def test_non_inferiority_and_equivalence():
    y = _row("y", 50.0, 50.3, 49.9)
    close = _row("x", 49.8, 50.4, 49.8)
    far = _row("x", 45.0, 45.5, 44.8)
    noisy = _row("x", 44.0, 56.0, 50.0)
    assert _verdict({"not_worse": "x", "than": "y", "margin": 1.0}, x=close, y=y).result == (
        "reproduced"
    )
    assert _verdict({"not_worse": "x", "than": "y", "margin": 1.0}, x=far, y=y).result == (
        "not reproduced"
    )
    assert _verdict({"similar": "x", "to": "y", "margin": 1.0}, x=close, y=y).result == (
        "reproduced"
    )
    assert _verdict({"similar": "x", "to": "y", "margin": 1.0}, x=far, y=y).result == (
        "not reproduced"
    )
    # Seed noise wider than the margin: neither equivalence nor its opposite can be shown.
    assert _verdict({"similar": "x", "to": "y", "margin": 1.0}, x=noisy, y=y).result == (
        "inconclusive"
    )
    assert _verdict({"not_worse": "x", "than": "y", "margin": 1.0}, x=noisy, y=y).result == (
        "inconclusive"
    )


def test_rows_are_compared_over_the_seeds_both_trained():
    pairs = [(0, 60.0), (1, 61.0), (2, 59.0), (3, 60.5)]
    x = RowResult("x", [_trial(linear=v, seed=s) for s, v in pairs])
    y = RowResult("y", [_trial(linear=v, seed=s) for s, v in [(0, 50.0), (1, 51.0), (2, 49.5)]])
    found = _verdict({"better": "x", "than": "y"}, x=x, y=y)
    assert found.interval.test.startswith("paired t, 3 seeds") and found.result == "reproduced"
    assert found.diffs == [10.0, 10.0, 9.5]
    other = RowResult("y", [_trial(linear=v, seed=s) for s, v in [(5, 50.0), (6, 51.0)]])
    found = _verdict({"better": "x", "than": "y"}, x=x, y=other)
    assert found.result == "inconclusive" and "needs 3 seeds that both rows trained" in (
        found.evidence
    )
    assert found.sequence["next_seeds"] == 3


def test_one_trial_a_row_is_inconclusive_however_large_the_gap():
    found = _verdict({"better": "x", "than": "y"}, x=_row("x", 80.0), y=_row("y", 10.0))
    assert found.result == "inconclusive" and "needs 3 seeds" in found.evidence


def test_a_comparison_needs_the_better_row_to_beat_its_random_init():
    y = _row("y", 10.0, 10.5, 9.5)
    untrained = _row("x", 20.5, 19.0, 21.0, random_linear=20.0)
    found = _verdict({"better": "x", "than": "y"}, x=untrained, y=y)
    assert found.result == "inconclusive" and "random init" in found.evidence
    # ... but not the worse one: a collapsed row beaten by a trained one is a real result.
    assert _verdict({"better": "x", "than": "y"}, x=_row("x", 60.0, 61.0, 59.0), y=y).result == (
        "reproduced"
    )


def test_a_skipped_row_makes_its_claims_inconclusive_and_says_why():
    skipped = RowResult("x", [_trial(status="skipped", reason="60 SGD steps < 200", linear=None)])
    found = _verdict({"better": "x", "than": "y"}, x=skipped, y=_row("y", 50.0, 51.0))
    assert found.result == "inconclusive" and "60 SGD steps < 200" in found.evidence


def test_collapse_claims_follow_the_rule_over_their_trials():
    collapsed = {"ratio": 0.01, "losses": (-0.5, -0.999), "random_linear": 10.0}
    rows = {
        "ok": _row("ok", *[50.0] * 5),
        "flat": _row("flat", 10.0, 10.5, 10.2, 9.8, 10.1, **collapsed),
        "flat-high-loss": _row("flat-high-loss", 10.0, ratio=0.01, losses=(-0.5, -0.6)),
        "nan": RowResult("nan", [_trial(status="diverged", linear=None, knn=None, ratio=None)]),
    }
    assert _judge({"not_collapsed": "ok"}, rows).result == "reproduced"
    assert _judge({"collapsed": "ok"}, rows).result == "not reproduced"
    found = _judge({"collapsed": "flat"}, rows)
    assert found.result == "reproduced" and "5 of 5 trials collapsed" in found.evidence
    assert found.sequence == {
        "design": "exact binomial",
        "planned": [3, 5, 8, 12],
        "looks": 2,
        "seeds": 5,
        "stopped": "decided",
        "next_seeds": None,
        "seeds_needed": None,
        "events": 5,
        "unsure": 0,
    }
    # Three trials alike cannot show a rate against one half: the next look is asked for.
    three = _judge({"collapsed": "flat"}, {"flat": _row("flat", 10.0, 10.5, 10.2, **collapsed)})
    assert three.result == "inconclusive" and three.sequence["next_seeds"] == 5
    assert _judge({"not_collapsed": "flat"}, rows).result == "not reproduced"
    # A flat output whose loss stayed high: the signals disagree, and the evidence says which.
    found = _judge({"collapsed": "flat-high-loss"}, rows)
    assert found.result == "inconclusive"
    said = "seed 0: degenerate output, learned nothing; not: loss at its minimum (0.372 above"
    assert f"{said} its bound)" in found.evidence
    assert _judge({"collapsed": "nan"}, rows).result == "inconclusive"


def test_trials_that_disagree_on_collapse_are_inconclusive():
    row = RowResult(
        "r", [_trial(ratio=0.01, losses=(-0.5, -0.999), random_linear=50.0), _trial(seed=1)]
    )
    assert not row.collapsed and row.status == "some trials collapsed"
    for kind in ("collapsed", "not_collapsed"):
        found = _judge({kind: "r"}, {"r": row})
        assert found.result == "inconclusive" and "1 of 2 trials collapsed" in found.evidence


def test_collapse_reads_where_the_loss_ended_not_the_last_epoch_s_mean():
    # Still falling in the last epoch: its mean misses the bound (-0.9175 at B = 64), its last
    # steps are within it.
    bound = -1 + 4 / 64 + 0.02
    last_epoch = [bound + 0.05 - 0.002 * i for i in range(40)]  # ends 0.028 below the bound
    trials = [
        _trial(
            ratio=0.3,
            share=0.999,
            losses=(-0.5, sum(last_epoch) / 40),
            batch=64,
            linear=20.0,
            random_linear=27.0,
            steps=[[-0.5] * 40, last_epoch],
            seed=seed,
        )
        for seed in range(5)
    ]
    trial = trials[0]
    assert trial.metrics["final_loss"] > bound > trial.metrics["final_window_loss"]
    found = _judge({"collapsed": "r"}, {"r": RowResult("r", trials)})
    assert found.result == "reproduced"
    assert "(median of the last 10 steps) (bound -0.917)" in found.evidence


def test_a_collapse_verdict_says_which_threshold_would_change_it():
    # Table 1a at cpu: trials within the loss bound, one a little above it.
    gaps = (0.01, 0.012, 0.015, 0.018, 0.037)
    row = RowResult(
        "no-pred",
        [
            _trial(
                ratio=0.3,
                share=0.999,
                losses=(-0.5, -1 + 4 / 64 + g),
                batch=64,
                seed=i,
                linear=20.0,
                random_linear=27.0,
            )
            for i, g in enumerate(gaps)
        ],
    )
    found = _judge({"collapsed": "no-pred"}, {"no-pred": row})
    assert found.result == "inconclusive" and row.status == "some trials collapsed"
    assert found.sensitivity == "by threshold: reproduced at loss gap 0.037 (rule 0.020)"
    assert found.thresholds["loss_gap"] == pytest.approx(
        {"rule": 0.02, "flips_at": 0.037, "to": "reproduced"}
    )


def _monitored(seed: int, knn: list[float], epochs: int = 24) -> RunResult:
    trial = _trial(seed=seed)
    monitor = [{"epoch": e, "knn": v} for e, v in zip(range(0, epochs + 1, 6), knn, strict=True)]
    return replace(
        trial,
        config=trial.config.merged({"optim": {"epochs": epochs, "batch_size": 64}}, "test"),
        history=monitor,
    )


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        # Figure 2 with stop-gradient at cpu: still rising over epochs 12 to 24, if slowly.
        (
            [
                [23.5, 29.9, 33.4, 34.6, 34.7],
                [25.8, 30.1, 32.9, 34.0, 34.5],
                [24, 30, 33, 34.1, 34.9],
            ],
            "reproduced",
        ),
        # Without it: falling.
        ([[23.5, 22.3, 19.6, 19.5, 17.5], [25.8, 22.0, 20.1, 18.9, 18.0]], "not reproduced"),
        # Flat over the second half: up in one trial, down in the other.
        ([[23.5, 30, 34.0, 34.5, 34.2], [23.5, 30, 34.0, 33.6, 34.3]], "inconclusive"),
    ],
)
def test_improving_reads_the_knn_monitor_s_slope_over_the_second_half(runs, expected):
    row = RowResult("r", [_monitored(i, knn) for i, knn in enumerate(runs)])
    found = _judge({"improving": "r"}, {"r": row})
    assert found.result == expected
    assert "slope over epochs 12 to 24" in found.evidence
    slopes = [monitor_slope(t) for t in row.trials]
    assert found.interval.estimate == pytest.approx(sum(slopes) / len(slopes))
    assert (found.flips_at is None) == (expected == "inconclusive")


def test_improving_needs_two_monitor_points_in_the_second_half():
    trial = _monitored(0, [23.5, 29.9, 33.4, 34.6, 34.7])
    sparse = replace(trial, history=[r for r in trial.history if r["epoch"] in (0, 24)])
    found = _judge({"improving": "r"}, {"r": RowResult("r", [sparse, sparse])})
    assert found.result == "inconclusive" and "monitor.knn_every" in found.evidence


@pytest.mark.parametrize(
    ("steps", "expected"), [(24 * 39, "inconclusive"), (24 * 500, "reproduced")]
)
def test_once_per_epoch_is_tested_only_where_an_epoch_is_longer_than_the_other_interval(
    steps, expected
):
    def snapshot(row_id, every, steps):
        target = {"target": {"mode": "snapshot", "refresh_every": every}}
        optim = {"optim": {"epochs": 24, "batch_size": 512}}
        return RowResult(
            row_id,
            [
                replace(
                    trial,
                    config=trial.config.merged(target | optim, "test"),
                    metrics=trial.metrics | {"steps": steps},
                )
                for trial in (_trial(seed=seed) for seed in range(5))
            ],
        )

    rows = {"k-epoch": snapshot("k-epoch", "epoch", steps), "k100": snapshot("k100", 100, steps)}
    check = {"not_collapsed": "k-epoch", "refresh_longer_than": "k100"}
    found = _judge(check, rows)
    assert found.result == expected
    if expected == "inconclusive":
        assert "every 39 SGD steps at this scale, not less often than k100's 100" in found.evidence


def test_a_loss_that_remains_high_is_a_comparison_of_final_losses_without_the_learned_gate():
    # Table 1b at cpu: the frozen predictor's loss near -0.25, the baseline's near -0.66, and a
    # linear accuracy below its random init's (which would bar an accuracy comparison).
    frozen = [
        _trial(seed=i, losses=(-0.2, v), linear=25.0, random_linear=27.0)
        for i, v in enumerate((-0.259, -0.242, -0.259))
    ]
    baseline = [_trial(seed=i, losses=(-0.5, v)) for i, v in enumerate((-0.666, -0.648, -0.664))]
    rows = {"fixed": RowResult("fixed", frozen), "base": RowResult("base", baseline)}
    found = _judge({"loss_above": "fixed", "than": "base"}, rows)
    assert found.result == "reproduced" and found.sequence["stopped"] == "decided"
    assert found.evidence.startswith(
        "final loss fixed -0.253 ± 0.010 vs base -0.659 ± 0.010: Δ +0.406"
    )
    assert _judge({"loss_above": "base", "than": "fixed"}, rows).result == "not reproduced"


def _noisy_steps(scatter, seed, epochs=2, per_epoch=40):
    """Step losses around -0.9, alternating by `scatter`: step noise exactly `scatter`·√2."""
    return [[-0.9 + scatter * (-1) ** (i + seed) for i in range(per_epoch)] for _ in range(epochs)]


def test_instability_is_divergence_a_rise_or_step_noise_well_above_the_reference():
    def row(row_id, scatter, **kw):
        trials = [
            _trial(seed=s, losses=(-0.9, -0.9), steps=_noisy_steps(scatter, s), **kw)
            for s in range(3)
        ]
        return RowResult(row_id, trials)

    rows = {
        "ref": row("ref", 0.01),
        "calm": row("calm", 0.015),
        "wild": row("wild", 0.05),
        "nan": RowResult(
            "nan",
            [
                _trial(status="diverged", linear=None, knn=None, ratio=None, seed=seed)
                for seed in range(5)
            ],
        ),
        "rising": _row("rising", *[50.0] * 5, losses=(-0.9, -0.6)),
        "unmeasured": _row("unmeasured", 50.0, 51.0),  # no per-step loss: a history of before
    }
    found = {r: _judge({"unstable": r, "than": "ref"}, rows) for r in rows if r != "ref"}
    assert {r: v.result for r, v in found.items()} == {
        "calm": "not reproduced",
        "wild": "reproduced",
        "nan": "reproduced",
        "rising": "reproduced",
        "unmeasured": "inconclusive",
    }
    # The ratio of step noises is what the threshold is read against, and where it would flip.
    assert "ratio 5.00 ± 0.00 (smallest read as oscillating 2)" in found["wild"].evidence
    assert found["calm"].thresholds["noise_factor"] == {
        "rule": 2.0,
        "flips_at": pytest.approx(1.5),
        "to": "reproduced",  # every seed's ratio is 1.5: below it, the ratio is shown above
    }
    # One diverged trial is not yet a rate: the next look's trials are asked for.
    one = {"ref": rows["ref"], "nan": RowResult("nan", rows["nan"].trials[:1])}
    assert _judge({"unstable": "nan", "than": "ref"}, one).sequence["next_seeds"] == 3
    assert "3 of 3 trials unstable (rate 0.37 to 1.00" in found["wild"].evidence
    assert (
        "step noise not measured for seed 0, 1 (a run that predates the per-step loss)"
        in found["unmeasured"].evidence
    )


def _table_runs(table, params, linear_of):
    """RowResults for every row of a table at the smoke profile, three seeds each."""
    rows = {}
    for row_id, row in table.rows.items():
        trials = []
        for seed in range(3):
            run = _trial(linear=linear_of(row_id, seed), seed=seed)
            run = RunResult(params.resolve("smoke", row, seed), run.metrics, run.history)
            trials.append(run)
        rows[row_id] = RowResult(row_id, trials)
    return rows


def test_a_report_carries_trials_intervals_and_its_power():
    params = Params(ROOT / "params")
    table = params.table("table3")
    rows = _table_runs(table, params, lambda row, seed: 40.0 + seed + (5 if row == "b" else 0))
    context = build_context(table, "cpu", rows, MANIFEST, "abc", judged=True, family=3)
    summary = summary_json(context)
    assert [t["seed"] for t in summary["rows"]["a"]["trials"]] == [0, 1, 2]
    claim = next(c for c in summary["claims"] if c["text"].startswith("BN on the hidden"))
    assert claim["verdict"] == "reproduced"  # b is 5 points above a on every seed
    assert claim["interval"][0] == claim["interval"][1] == pytest.approx(5.0)
    assert claim["paper_difference"] == pytest.approx(67.4 - 34.6)
    # Three comparisons: each interval at 1 - 0.1/3; the seed std is 1 (40, 41, 42).
    assert summary["comparisons"] == 3
    assert summary["power"]["seed_std"] == pytest.approx(1.0)
    # The power line is the range of the claims' own tests, never more than one of them.
    detects = [c["power"] for c in summary["claims"] if c["power"] is not None]
    assert summary["power"]["detects"] == [min(detects), max(detects)]
    text = render(context)
    # Every seed's difference alike here: each test detects 0, and one figure is printed.
    assert summary["power"]["detects"] == [0.0, 0.0]
    assert "96.7% CI" in text and "detects a true difference of **0.0 points**" in text
    assert "| data source | `cifar10-jpeg.tar.gz`, sha256 `b215d45e5112` |" in text
    table_lines = [
        line for line in text.splitlines() if line.startswith("| ") or line.startswith("|---")
    ]
    results = table_lines[table_lines.index(next(x for x in table_lines if "MLflow runs" in x)) :]
    results = results[: 2 + len(table.rows) + 1]  # header, separator, rows, random-init row
    cells = {line.count("|") for line in results}
    assert len(cells) == 1, results  # every line of the results table has the header's cells
    assert results[-1].startswith("| random-init encoder")
    assert "| 0, 1, 2 |" in results[2]


def _write_run(trial: RunResult, root: Path) -> Path:
    """A run directory as pretrain and evaluate leave it."""
    run = RunDir(root)
    root.mkdir(parents=True)
    run.config.write_text(yaml.safe_dump(trial.config.training()))
    metrics = trial.metrics | {"config_hash": root.name, EVALUATION: asdict(trial.config.eval)}
    run.metrics.write_text(json.dumps(metrics))
    run.history.write_text(json.dumps(trial.history))
    return root


def _cells(table: pd.DataFrame) -> list[dict]:
    """Python values, None where a cell is empty (NaN as a CSV gives it back)."""
    return table.astype(object).where(table.notna(), None).to_dict("records")


def test_the_runs_table_as_published_holds_every_number_the_verdicts_read(tmp_path: Path):
    params = Params(ROOT / "params")
    table = params.table("table3")
    rows = _table_runs(table, params, lambda row, seed: 40.0 + seed + (5 if row == "b" else 0))
    run_dirs = {
        row_id: [_write_run(t, tmp_path / f"{row_id}-{t.config.seed}") for t in row.trials]
        for row_id, row in rows.items()
    }
    read = read_rows(run_dirs, test_images=None)
    runs_table("table3", read).to_csv(tmp_path / "table3.runs.csv", index=False)
    published = pd.read_csv(tmp_path / "table3.runs.csv")

    # One line per trial: its keys, metrics and the config it trained and was evaluated with.
    assert len(published) == 3 * len(table.rows)
    assert list(published.columns[:3]) == ["table", "row", "run_dir"]
    assert {"linear_acc", "seed", "optim.batch_size", "eval.linear_probe"} <= set(published)
    assert FINAL_WINDOW_LOSS in published  # what the collapse rule reads, not only history.json
    b = published[published["row"] == "b"]
    assert b.set_index("seed")["linear_acc"].to_dict() == {0: 45.0, 1: 46.0, 2: 47.0}
    # Every value as the trials read it: a reader of the CSV recomputes the same verdicts.
    assert _cells(published) == _cells(runs_table("table3", read))

    # Read from their directories, the trials give the verdicts of the trials in memory.
    direct = summary_json(build_context(table, "cpu", rows, MANIFEST, "abc", judged=True, family=3))
    from_dirs = summary_json(
        build_context(table, "cpu", read, MANIFEST, "abc", judged=True, family=3)
    )
    assert from_dirs["claims"] == direct["claims"]
    assert from_dirs["rows"] == direct["rows"]


def test_dvc_s_numbers_are_per_row_means_with_the_control_and_the_verdict_counts():
    params = Params(ROOT / "params")
    table = params.table("table3")
    rows = _table_runs(table, params, lambda row, seed: 40.0 + seed + (5 if row == "b" else 0))
    metrics = table_metrics(
        build_context(table, "cpu", rows, MANIFEST, "abc", judged=True, family=3)
    )
    assert metrics["rows"]["b"] == {
        "linear": 46.0,
        "knn": 40.0,
        "z_std_ratio": 0.9,
        "z_top_share": 0.3,
    }
    assert metrics["random_init"] == {"linear": 20.0, "knn": 20.0}
    assert sum(metrics["claims"].values()) == len(table.claims)
    assert metrics["claims"]["reproduced"] >= 1  # b beats a on every seed
    # Numbers only: no label, claim text, wall time or step count for DVC to show as a column.
    leaves = [v for row in metrics["rows"].values() for v in row.values()]
    assert all(isinstance(v, float) for v in leaves)


def test_curves_have_a_column_per_row_and_no_value_where_a_row_has_none():
    params = Params(ROOT / "params")
    table = params.table("table2")
    rows = _table_runs(table, params, lambda row, seed: 40.0)
    rows["b512"] = _row("b512", 40.0, status="skipped")  # trained nothing: no curve at all
    rows["b512"].trials[0].history.clear()
    rows["b64"].trials[0].history.insert(0, {"epoch": 0, "knn": 10.0})  # the monitor at init
    loss = curves_by_row(table, rows)["loss"]
    assert list(loss.columns) == ["epoch", *(row.label for row in table.rows.values())]
    assert loss["epoch"].tolist() == [1, 2]  # epoch 0 has no loss: no line for it
    assert loss["64"].tolist() == [-0.5, -0.9] and loss["512"].isna().all()
    knn = curves_by_row(table, rows)["knn"]
    assert knn["epoch"].tolist() == [0] and knn["128"].isna().all()


class _Cells(HTMLParser):
    """The text of every table row's cells, whitespace collapsed, as a browser shows them."""

    def __init__(self, page: str):
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _md_cells(text: str, first: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith(f"| {first} |"))
    return [cell.strip().strip("*") for cell in line.split("|")[1:-1]]


MANIFEST = manifest(
    counts={"train": {"a": 400}, "test": {"a": 200}},
    classes=["a"],
    source="/data/cifar10-jpeg.tar.gz",
    source_sha256="b215d45e51121fd3",
)


def _table3_context(linear_of=lambda row, seed: 40.0 + seed + (5 if row == "b" else 0)):
    params = Params(ROOT / "params")
    table = params.table("table3")
    return table, build_context(
        table, "cpu", _table_runs(table, params, linear_of), MANIFEST, "abc", judged=True, family=3
    )


def test_the_html_report_prints_the_markdown_report_s_numbers_and_verdicts():
    # b clearly better than a; c's seeds too noisy to call it similar to c-affine.
    table, context = _table3_context(
        lambda row, seed: 40.0 + seed + 5 * (row == "b") + 0.9 * seed * (row == "c")
    )
    markdown, page = render(context), render(context, "html")
    cells: dict[str, list[str]] = {}
    for row in _Cells(page).rows:  # the first row a label starts: below, the MLflow runs repeat it
        cells.setdefault(row[0], row)
    n = len(table.columns)
    for row in context["rows"]:
        md, html = _md_cells(markdown, row["label"]), cells[row["label"]]
        assert html[: 1 + n] == md[: 1 + n]  # the label and the check-mark columns
        assert html[1 + n] == md[1 + n].replace(" [", "[")  # the paper's number, its note mark
        # linear, kNN, std(z)·√d, top-direction share, seeds, status
        assert html[2 + n : 8 + n] == md[2 + n : 8 + n], (html, md)
    assert [table.rows[r["id"]].paper for r in context["rows"]][-1] == "unstable"
    assert cells["random-init encoder (no training)"][n + 2] == context["random_init_linear"]
    for claim in context["claims"]:
        md, html = _md_cells(markdown, claim["text"]), cells[claim["text"]]
        assert html == md  # claim, paper Δ, verdict, evidence
    verdicts = {c["verdict"] for c in context["claims"]}
    assert verdicts == {"reproduced", "not reproduced", "inconclusive", "not testable"}
    assert all(f'<span class="verdict {v.replace(" ", "-")}">{v}</span>' in page for v in verdicts)
    assert page.startswith("<!doctype html>") and "<style>" in page and "<script" not in page


def test_the_paper_s_notes_sit_under_the_row_table_numbered_not_inside_its_cells():
    table, context = _table3_context()
    markdown, page = render(context), render(context, "html")
    noted = [row for row in table.rows.values() if row.paper_note]
    assert len(noted) == 3
    for mark, row in enumerate(noted, 1):
        assert _md_cells(markdown, row.label)[1 + len(table.columns)].endswith(f" [{mark}]")
        assert f"\n[{mark}] {row.paper_note}" in markdown
        assert f'<li id="paper-note-{mark}">{row.paper_note}</li>' in unescape(page)
        assert row.paper_note not in _md_cells(markdown, row.label)[1 + len(table.columns)]


def test_the_header_gives_training_time_summed_over_runs_and_the_real_elapsed_time():
    params = Params(ROOT / "params")
    table = params.table("table3")
    runs = _table_runs(table, params, lambda row, seed: 40.0)
    # 15 trials of 5 configs, 10 min each, two at a time (starting at 0, 0, 10, 10, 20 min),
    # the seeds evaluated 0, 30 and 60 s after training: 50 min summed, 31 elapsed.
    for i, trial in enumerate(t for r in runs.values() for t in r.trials):
        config, seed = divmod(i, 3)
        start = 1_000_000.0 + 600 * (config // 2)
        trial.metrics.update(config_hash=f"h{config}", wall_s=600.0, started_at=start)
        trial.metrics["evaluated_at"] = start + 600 + 30 * seed
    markdown = render(build_context(table, "cpu", runs, MANIFEST, "abc", judged=True, family=3))
    assert "| training time | 50.0 min, summed over 5 distinct runs (runs side by side" in markdown
    assert (
        "| elapsed | 31.0 min, from the first pretraining's start to the last evaluation"
        in markdown
    )
    # Row d re-measured two days later (11 min): 21 + 11 min, not the days between.
    later = 2 * 86400
    for trial in runs["d"].trials:
        trial.metrics.update(config_hash="h-later", started_at=1_000_000.0 + later)
        trial.metrics["evaluated_at"] = 1_000_000.0 + later + 600 + 30 * trial.config.seed
    markdown = render(build_context(table, "cpu", runs, MANIFEST, "abc", judged=True, family=3))
    assert (
        "| elapsed | 32.0 min in 2 sittings, each from its first pretraining's start to its "
        "last evaluation's end (pauses of over 3 h with none of its runs in progress left out; "
        "2891.0 min from the first start to the last end) |"
    ) in markdown
    # Runs from before these times were recorded: said, not guessed.
    del next(iter(runs.values())).trials[0].metrics["started_at"]
    context = build_context(table, "cpu", runs, MANIFEST, "abc", judged=True, family=3)
    assert "| elapsed | not recorded (these runs predate" in render(context)


def test_a_profile_that_cannot_test_claims_lists_them_under_a_banner_and_judges_none():
    params = Params(ROOT / "params")
    assert params.verdicts("cpu") and not params.verdicts("smoke")
    table = params.table("table3")
    runs = _table_runs(table, params, lambda row, seed: 40.0 + seed + 5 * (row == "b"))
    context = build_context(table, "smoke", runs, MANIFEST, "abc", judged=False, family=3)
    markdown, page = render(context), render(context, "html")
    assert "**No verdicts at this profile.** `smoke` checks the plumbing" in markdown
    assert "<strong>No verdicts at this profile.</strong> <code>smoke</code>" in page
    claims = markdown.split("## Claims of")[1].split("Rules:")[0]
    for claim in context["claims"]:
        assert _md_cells(markdown, claim["text"])[2:] == ["not judged", claim["evidence"]]
    assert "reproduced" not in claims and "inconclusive" not in claims
    assert '<span class="verdict not-judged">not judged</span>' in page
    assert "claims reproduced" not in page
    assert table_metrics(context)["claims"] == {"not judged": len(table.claims)}

    judged = summary_json(_table3_context()[1])
    index = render_index([summary_json(context) | {"table": "smoke3"}, judged], "abc")
    assert "**No verdicts at `smoke`.**" in index
    assert (
        _md_cells(index, f"[{table.title}](smoke3.md)")[3]
        == f"not judged ({len(table.claims)} claims)"
    )
    totals = _md_cells(index, "**all tables**")
    assert totals[3] == f"{judged['claims_reproduced']} / {judged['claims_total']}"  # judged only


def test_each_comparison_carries_its_looks_and_the_margin_where_its_verdict_flips():
    _, context = _table3_context(
        lambda row, seed: 40.0 + seed + 5 * (row == "b") + 0.9 * seed * (row == "c")
    )
    compared = [c for c in context["claims"] if c["kind"] in ("better", "not_worse", "similar")]
    tested = [c for c in compared if c["tested"]]
    assert tested and all(c["sequence"]["seeds"] == 3 for c in tested)
    for claim in tested:
        assert "by margin: " in claim["evidence"] or "at every margin" in claim["evidence"]
        assert claim["diffs"] is not None and len(claim["diffs"]) == 3
        assert claim["resolution"]["probe_se"] == pytest.approx(0.49, abs=0.01)
    # c similar to c-affine, margin 1.5% of the 21 points c-affine learned: 0.32 points, inside
    # what two probes of 10,000 test images at 41% can tell apart on 12 seeds.
    (similar,) = [c for c in compared if c["kind"] == "similar"]
    assert similar["verdict"] == "not testable" and not similar["tested"]
    assert similar["sequence"]["stopped"] == "not testable"  # it asks for no seeds
    assert similar["sequence"]["next_seeds"] is None and similar["sequence"]["seeds_needed"] > 12
    assert (
        "its margin 0.32 points is inside the narrowest interval 12 seeds" in (similar["evidence"])
    )
    assert "test images, or a scale whose effects are larger" in similar["evidence"]


def test_each_margin_is_listed_with_its_reason_in_both_units():
    table, context = _table3_context()  # each row learned 40 + seed over 20 at random init
    markdown, page = render(context), unescape(render(context, "html"))
    (claim,) = [c for c in table.claims if c.margin_reason]
    line = (
        f"- {claim.text} Margin 1.5% of what its reference row learned over random init "
        f"(21.0 points here): 0.32 points: {claim.margin_reason}."
    )
    assert line in markdown.splitlines()
    assert f"<li>{line[2:]}</li>" in page
    # A claim whose row the scale skips still prints its declared margin.
    params = Params(ROOT / "params")
    table2 = params.table("table2")
    runs = _table_runs(table2, params, lambda row, seed: 40.0 + seed)
    skipped = _trial(status="skipped", reason="too few steps")
    config = params.resolve("smoke", table2.rows["b512"], 0)
    runs["b512"] = RowResult("b512", [RunResult(config, skipped.metrics, [])])
    listed = render(build_context(table2, "cpu", runs, MANIFEST, "abc", judged=True, family=3))
    assert "Margin None" not in listed
    assert (
        "Batch 256 and 512 are equally good (68.1 vs 68.1). Margin 1.5% of what its reference "
        "row learned over random init, which it does not show here:"
    ) in listed


def test_the_index_counts_the_whole_study_under_holm_over_the_tested_comparisons():
    summary = summary_json(_table3_context()[1])
    base = summary["claims"][0] | {"kind": "better", "margin": 0.0, "choices": [], "tested": True}
    page = {"alpha": 0.05 / 18}
    # Paired differences over 5 seeds whose t is about 160, 5.9 and 3.9: at look 2 the bounds
    # are 8.3 at 0.05/18 (the page's), 5.0 at 0.05/3, 4.4 at 0.05/2 and 3.5 at 0.05.
    claims = [
        base | {"text": "A", "verdict": "reproduced", "diffs": [5.0, 5.1, 4.9, 5.0, 5.05]},
        base | {"text": "B", "verdict": "inconclusive", "diffs": [1.0, 0.5, 1.5, 0.8, 1.2]},
        base | {"text": "C", "verdict": "inconclusive", "diffs": [1.0, 0.3, 1.7, 0.6, 1.4]},
        base
        | {
            "text": "D",
            "verdict": "inconclusive",
            "tested": False,
            "diffs": None,
            "evidence": "x: not trained at this scale (96 SGD steps < 200)",
        },
        base | {"text": "E", "kind": "collapsed", "verdict": "reproduced", "tested": False},
    ]
    claims = [c | {"sequence": page} if c["kind"] == "better" else c for c in claims]
    summary |= {"claims": claims, "claims_total": 5, "claims_reproduced": 2}
    counts = index_json([summary], "abc")
    study = counts["study_wide"]
    # Holm over A, B, C: A and B at 0.05/3; then C alone at 0.05.
    assert (study["family"], study["family_claims"]) == (3, ["A", "B", "C"])
    assert study["reproduced_holm"] == 3
    assert study["reproduced_per_table"] == 2  # Bonferroni within the table's 4: A and B
    assert study["untested"] == [
        {"table": "table3", "claim": "D", "why": "a row not trained at this scale"}
    ]
    assert (study["rate_claims"], study["other_claims"]) == (1, 1)
    # The headline counts the study's verdicts: B and C reproduced under Holm, not on the page.
    assert counts["tables"]["table3"]["reproduced"] == 4 == counts["totals"]["reproduced"]
    headline = counts["headline"]
    assert (headline["reproduced"], headline["claims"], headline["decided"]) == (4, 5, 4)
    assert (
        "Holm at one-sided 0.05 over the 3 tested (1 untested listed apart)" in (headline["family"])
    )
    index = render_index([summary], "abc")
    assert "over the study's 3 tested comparison claims" in index
    assert "- [table3](table3.md): D (a row not trained at this scale)" in index
    assert "reproduced under the study's Holm over its tested comparisons" in index


def test_a_power_range_prints_both_ends():
    _, context = _table3_context(
        lambda row, seed: 40.0 + seed + 5 * (row == "b") + 0.9 * seed * (row == "c")
    )
    low, high = context["power"]["detects"]
    assert f"{low:.1f}" != f"{high:.1f}"
    assert context["power"]["detects_text"] == f"{low:.1f} to {high:.1f} points"
    assert f"detects a true difference of **{low:.1f} to {high:.1f} points**" in render(context)


def test_the_index_lists_each_verdict_s_choices_where_they_would_change_it():
    _, context = _table3_context(
        lambda row, seed: 40.0 + seed + 5 * (row == "b") + 0.9 * seed * (row == "c")
    )
    summary = summary_json(context)
    rows = {r["claim"]: r for r in index_json([summary], "abc")["sensitivity"]["rows"]}
    # b is 5 points above a on every seed: reproduced at any margin below 5.
    (hidden,) = [c for c in summary["claims"] if c["text"].startswith("BN on the hidden")]
    assert hidden["flips_at"] == pytest.approx(5.0)
    assert rows[hidden["text"]]["choices"] == ["margin 0: not reproduced at 5"]
    index = render_index([summary], "abc")
    assert "## What each verdict hangs on" in index
    assert f"| {hidden['text']} | reproduced | margin 0: not reproduced at 5 |" in index


def test_a_profile_s_verdicts_switch_must_be_true_or_false(tmp_path: Path):
    shutil.copytree(ROOT / "params", tmp_path / "params")
    profiles = tmp_path / "params" / "profiles.yaml"
    profiles.write_text(profiles.read_text().replace("verdicts: false", "verdicts: no-thanks"))
    with pytest.raises(ConfigError, match=r"smoke.verdicts = 'no-thanks': must be true or false"):
        Params(tmp_path / "params").verdicts("smoke")


def test_the_html_reports_escape_the_table_s_text():
    params = Params(ROOT / "params")
    table = params.table("table3")
    label = "(a) <b>none</b> & <script>alert(1)</script>"
    rows = {**table.rows, "a": replace(table.rows["a"], label=label)}
    claims = [replace(table.claims[0], text='a < b & "c"'), *table.claims[1:]]
    table = replace(table, rows=rows, claims=claims)
    runs = _table_runs(table, params, lambda row, seed: 40.0 + seed)
    context = build_context(table, "cpu", runs, MANIFEST, "abc", judged=True, family=3)
    page = render(context, "html")
    assert "<script>" not in page and "<b>none" not in page
    assert "(a) &lt;b&gt;none&lt;/b&gt; &amp; &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &lt; b &amp; &#34;c&#34;" in page
    # Markdown keeps the text but for what would open raw HTML or split a table row
    assert "(a) &lt;b>none&lt;/b> & &lt;script>alert(1)&lt;/script>" in render(context)
    index = render_index([summary_json(context)], "abc", "html")
    assert "a &lt; b &amp; &#34;c&#34;" in index and "<script>" not in index


def test_the_html_index_has_every_table_s_claims_and_verdicts():
    _, context = _table3_context()
    summary = summary_json(context)
    page = render_index([summary, summary | {"table": "copy"}], "abc", "html")
    cells = _Cells(page).rows
    assert [r[0] for r in cells if r and r[0] == summary["title"]] == [summary["title"]] * 2
    totals = next(r for r in cells if r and r[0] == "all tables")
    reproduced = 2 * summary["claims_reproduced"]
    assert totals[3] == f"{reproduced} / {2 * summary['claims_total']}"
    for claim in summary["claims"]:
        rows = [r for r in cells if r and r[0] == claim["text"]]
        assert len(rows) == 2 and all(r[2] == claim["verdict"] for r in rows)
    assert 'href="#table3"' in page and 'id="copy"' in page  # the overview links to each table


def test_the_accuracy_bars_leave_out_rows_without_a_number_and_picture_them(tmp_path: Path):
    from matplotlib.image import imread

    params = Params(ROOT / "params")
    table = params.table("table3")
    runs = _table_runs(table, params, lambda row, seed: 40.0 + seed)
    skipped = _trial(status="skipped", reason="60 SGD steps < 200", linear=None)
    runs["b"] = RowResult("b", [RunResult(runs["b"].trials[0].config, skipped.metrics, [])])
    context = build_context(table, "cpu", runs, MANIFEST, "abc", judged=True, family=3)
    found = accuracy_bars(table, context)
    bars = list(zip(found["row"], found["source"], strict=True))
    assert ("b", "ours") not in bars and ("d", "paper") not in bars  # skipped; "unstable"
    assert bars[:3] == [("a", "paper"), ("a", "ours"), ("b", "paper")]
    assert bars[-1] == ("random init", "random init")  # the control, after the rows
    assert found["accuracy"].iloc[-1] == round(context["random_init"]["linear"], 2)
    plot_accuracy_bars(table, context, tmp_path / "bars.png")
    height, width, _ = imread(tmp_path / "bars.png").shape
    assert width == 1100 and height > 400  # 10 inches at 110 dpi; two bars a row


@pytest.mark.parametrize("name", Params(ROOT / "params").table_names())
def test_every_table_renders_its_rows_and_claims_in_both_formats(name: str, tmp_path: Path):
    # The smoke DAG in test_pipeline builds two tables; every table's page is rendered here.
    params = Params(ROOT / "params")
    table = params.table(name)
    ids = list(table.rows)
    rows = _table_runs(table, params, lambda row, seed: 30.0 + ids.index(row) + seed)
    context = build_context(table, "cpu", rows, MANIFEST, "abc", judged=True, family=3)
    markdown, page = render(context), render(context, "html")
    for text in [row.label for row in table.rows.values()] + [c.text for c in table.claims]:
        assert text in markdown and text in unescape(page), text
    summary = summary_json(context)
    assert len(summary["claims"]) == len(table.claims)
    assert set(table_metrics(context)["rows"]) == set(ids)
    plot_accuracy_bars(table, context, tmp_path / "bars.png")
    assert (tmp_path / "bars.png").stat().st_size > 10_000


HOSTILE = "</script><script>alert(1)</script> <img src=x onerror=alert(2)> a|b {{7*191}}"


def test_every_page_escapes_what_the_table_wrote():
    """A table whose title, labels, claims and notes hold markup, a cell separator and a
    template expression: the HTML pages escape them, the Markdown pages neither split a row nor
    open raw HTML, the JSON keeps the text, and no page evaluates the expression."""
    params = Params(ROOT / "params")
    table = params.table("table3")
    rows = {
        key: replace(row, label=f"{row.label} {HOSTILE}", paper_note=HOSTILE)
        for key, row in table.rows.items()
    }
    claims = [replace(c, text=f"{c.text} {HOSTILE}") for c in table.claims]
    table = replace(table, title=f"Table 3: {HOSTILE}", rows=rows, claims=claims)
    runs = _table_runs(table, params, lambda row, seed: 40.0 + seed)
    context = build_context(table, "cpu", runs, MANIFEST, "abc", judged=True, family=3)
    summary = summary_json(context)
    pages = {
        "table.md": render(context),
        "table.html": render(context, "html"),
        "index.md": render_index([summary], "abc"),
        "index.html": render_index([summary], "abc", "html"),
    }
    for name, page in pages.items():
        assert "<script" not in page and "<img" not in page, name
        assert "1337" not in page, name  # {{7*191}} printed, never evaluated
        assert "{{7*191}}" in page, name
    # Markdown: every row of the table keeps its columns.
    lines = pages["table.md"].splitlines()
    header = next(line for line in lines if line.startswith("| row |"))
    cells = header.count(" | ")
    for line in lines:
        if line.startswith(f"| {table.rows['a'].label.split()[0]}"):
            assert line.replace("\\|", "").count(" | ") == cells, line
    assert "a\\|b" in pages["table.md"]
    # The JSON keeps the text as the table wrote it: it is data, for a reader's script.
    assert summary["title"] == table.title and summary["claims"][0]["text"] == claims[0].text
    # A folder of `snakemake --report` holds the table's short name without markup.
    assert "<" not in table.short_name and table.short_name.startswith("Table 3")


def test_the_next_look_allots_seeds_to_the_rows_of_waiting_claims(tmp_path, capsys):
    """`simsiam seeds`: from the table reports, the rows whose claims wait for their next look
    get its trials in params/seeds/PROFILE.yaml, which the plan (both engines') then trains."""
    shutil.copytree(ROOT / "params", tmp_path / "params")
    (tmp_path / "params" / "seeds" / "cpu.yaml").unlink(missing_ok=True)
    params = Params(tmp_path / "params")
    summary = summary_json(_table3_context()[1])  # 3 seeds a row: the first look
    reports = tmp_path / "reports"
    reports.mkdir()
    for name in params.table_names():  # the other tables' reports judge nothing: none waits
        judged = name == "table3"
        (reports / f"{name}.json").write_text(json.dumps(summary | {"judged": judged}))
    before = params.plan("cpu", params.table_names(), read_data=False)

    next_look(params, "cpu", reports, dry_run=True)
    printed = capsys.readouterr().out
    assert not params.seeds_file("cpu").exists()
    # b > a and c-affine > b are decided (5 points on every seed); c ~ c-affine is not testable;
    # the collapse claims on a and d wait for 5 trials; d's instability, its step noise measured
    # on no trial (these histories have no per-step loss), can never be decided: futile.
    assert "train table3:a@3" in printed and "train table3:d@4" in printed
    assert "train table3:b@3" not in printed and "train table3:c-affine@3" not in printed
    assert "their cost is unknown" in printed

    # A budget: ten minutes a run measured, 0.4 CPU-hours afford one claim's two runs.
    for row in summary["rows"].values():
        for trial in row["trials"]:
            trial["job_s"] = 600.0
    (reports / "table3.json").write_text(json.dumps(summary))
    next_look(params, "cpu", reports, dry_run=True, hours=0.4)
    printed = capsys.readouterr().out
    assert "train table3:a@3" in printed and "train table3:d@3" not in printed
    assert "left for a later look, past the budget of 0.4 CPU-hours: (d)'s failure" in printed
    assert "2 runs to train, about 0.3 CPU-hours" in printed

    next_look(Params(tmp_path / "params"), "cpu", reports, dry_run=False)
    allotted = yaml.safe_load(params.seeds_file("cpu").read_text())
    assert allotted == {"table3:a": 5, "table3:d": 5}
    after = Params(tmp_path / "params").plan("cpu", params.table_names(), read_data=False)
    added = [trials[0].ref for run, trials in after.items() if run not in before]
    assert sorted(added) == ["table3:a@3", "table3:a@4", "table3:d@3", "table3:d@4"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("table3:zz: 5\n", "unknown row 'table3:zz'"),
        ("table3:a: 0\n", "table3:a = 0: must be a whole number of trials >= 1"),
        ("- table3:a\n", "expected a mapping of TABLE:ROW to a trial count"),
    ],
)
def test_a_bad_seeds_file_is_refused_in_one_line(tmp_path, text, says):
    shutil.copytree(ROOT / "params", tmp_path / "params")
    (tmp_path / "params" / "seeds" / "cpu.yaml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(says)):
        Params(tmp_path / "params").plan("cpu", ["table3"], read_data=False)


def test_a_profile_s_looks_are_its_budget_and_a_bad_list_is_refused(tmp_path):
    shutil.copytree(ROOT / "params", tmp_path / "params")
    path = tmp_path / "params" / "profiles.yaml"
    assert Params(tmp_path / "params").looks("cpu") == (3, 5, 8, 12)
    text = path.read_text().replace("looks: [3, 5, 8, 12]", "looks: [3, 6, 9]", 1)
    path.write_text(text)
    assert Params(tmp_path / "params").looks("cpu") == (3, 6, 9)
    # A collapse claim over the profile's looks: 6 of 6 collapsed decides it at look 2.
    collapsed = {"ratio": 0.01, "losses": (-0.5, -0.999), "random_linear": 10.0}
    row = _row("flat", *[10.0] * 6, **collapsed)
    found = verdict(Claim.of_check("", {"collapsed": "flat"}), {"flat": row}, 0.05, (3, 6, 9))
    assert found.sequence["planned"] == [3, 6, 9] and found.sequence["looks"] == 2
    path.write_text(text.replace("looks: [3, 6, 9]", "looks: [2, 6]"))
    with pytest.raises(ConfigError, match=r"cpu.looks = \[2, 6\]: must be a rising list"):
        Params(tmp_path / "params").looks("cpu")
