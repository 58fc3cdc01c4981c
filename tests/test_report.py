import json
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
    assert found.interval.test == "paired t, 3 seeds"
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


def test_rows_with_other_seeds_are_compared_with_welch():
    x = RowResult("x", [_trial(linear=v, seed=s) for s, v in [(0, 60.0), (1, 61.0), (2, 59.0)]])
    y = RowResult("y", [_trial(linear=v, seed=s) for s, v in [(5, 50.0), (6, 51.0)]])
    found = _verdict({"better": "x", "than": "y"}, x=x, y=y)
    assert found.interval.test == "Welch t, 3 vs 2 seeds"
    assert found.result == "reproduced"


def test_one_trial_a_row_is_inconclusive_however_large_the_gap():
    found = _verdict({"better": "x", "than": "y"}, x=_row("x", 80.0), y=_row("y", 10.0))
    assert found.result == "inconclusive" and "at least 2 trials" in found.evidence


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
        "ok": _row("ok", 50.0),
        "flat": _row("flat", 10.0, 10.5, **collapsed),
        "flat-high-loss": _row("flat-high-loss", 10.0, ratio=0.01, losses=(-0.5, -0.6)),
        "nan": RowResult("nan", [_trial(status="diverged", linear=None, knn=None, ratio=None)]),
    }
    assert _judge({"not_collapsed": "ok"}, rows).result == "reproduced"
    assert _judge({"collapsed": "ok"}, rows).result == "not reproduced"
    found = _judge({"collapsed": "flat"}, rows)
    assert found.result == "reproduced" and "2 of 2 trials collapsed" in found.evidence
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
    trial = _trial(
        ratio=0.3,
        share=0.999,
        losses=(-0.5, sum(last_epoch) / 40),
        batch=64,
        linear=20.0,
        random_linear=27.0,
        steps=[[-0.5] * 40, last_epoch],
    )
    assert trial.metrics["final_loss"] > bound > trial.metrics["final_window_loss"]
    found = _judge({"collapsed": "r"}, {"r": RowResult("r", [trial])})
    assert found.result == "reproduced"
    assert "(median of the last 10 steps) (bound -0.917)" in found.evidence


def test_a_collapse_verdict_says_which_threshold_would_change_it():
    # Table 1a at cpu: one trial within the loss bound, two a little above it.
    gaps = (0.01, 0.018, 0.037)
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
        trial = _trial()
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
    assert found.result == "reproduced" and found.p_value < 0.001
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
        "nan": RowResult("nan", [_trial(status="diverged", linear=None, knn=None, ratio=None)]),
        "rising": _row("rising", 50.0, losses=(-0.9, -0.6)),
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
    assert "ratio 5.00 ± 0.00 (rule 2)" in found["wild"].evidence
    assert found["calm"].thresholds["noise_factor"] == {
        "rule": 2.0,
        "flips_at": pytest.approx(1.5),
        "to": "reproduced",
    }
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
    context = build_context(table, "cpu", rows, MANIFEST, "abc", judged=True)
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
    direct = summary_json(build_context(table, "cpu", rows, MANIFEST, "abc", judged=True))
    from_dirs = summary_json(build_context(table, "cpu", read, MANIFEST, "abc", judged=True))
    assert from_dirs["claims"] == direct["claims"]
    assert from_dirs["rows"] == direct["rows"]


def test_dvc_s_numbers_are_per_row_means_with_the_control_and_the_verdict_counts():
    params = Params(ROOT / "params")
    table = params.table("table3")
    rows = _table_runs(table, params, lambda row, seed: 40.0 + seed + (5 if row == "b" else 0))
    metrics = table_metrics(build_context(table, "cpu", rows, MANIFEST, "abc", judged=True))
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
        table, "cpu", _table_runs(table, params, linear_of), MANIFEST, "abc", judged=True
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
    assert verdicts == {"reproduced", "not reproduced", "inconclusive"}
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
    markdown = render(build_context(table, "cpu", runs, MANIFEST, "abc", judged=True))
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
    markdown = render(build_context(table, "cpu", runs, MANIFEST, "abc", judged=True))
    assert (
        "| elapsed | 32.0 min in 2 sittings, each from its first pretraining's start to its "
        "last evaluation's end (pauses of over 3 h with none of its runs in progress left out; "
        "2891.0 min from the first start to the last end) |"
    ) in markdown
    # Runs from before these times were recorded: said, not guessed.
    del next(iter(runs.values())).trials[0].metrics["started_at"]
    context = build_context(table, "cpu", runs, MANIFEST, "abc", judged=True)
    assert "| elapsed | not recorded (these runs predate" in render(context)


def test_a_profile_that_cannot_test_claims_lists_them_under_a_banner_and_judges_none():
    params = Params(ROOT / "params")
    assert params.verdicts("cpu") and not params.verdicts("smoke")
    table = params.table("table3")
    runs = _table_runs(table, params, lambda row, seed: 40.0 + seed + 5 * (row == "b"))
    context = build_context(table, "smoke", runs, MANIFEST, "abc", judged=False)
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


def test_each_comparison_carries_its_p_value_and_the_margin_where_its_verdict_flips():
    _, context = _table3_context(
        lambda row, seed: 40.0 + seed + 5 * (row == "b") + 0.9 * seed * (row == "c")
    )
    compared = [c for c in context["claims"] if c["kind"] in ("better", "not_worse", "similar")]
    assert compared and all(c["p_value"] is not None for c in compared)
    for claim in compared:  # the p-value decides as the interval does, at the table's alpha
        assert (claim["p_value"] < context["alpha"]) == (claim["verdict"] == "reproduced")
        assert "by margin: " in claim["evidence"] or "at every margin" in claim["evidence"]
    # c similar to c-affine, margin 0.32: the interval [−1.8, +3.6] needs a margin above 3.6.
    (similar,) = [c for c in compared if c["kind"] == "similar"]
    assert similar["verdict"] == "inconclusive" and similar["flips_at"] == similar["interval"][1]
    # Each margin is also a share of what the reference (c-affine: 40 + seed over 20) learned.
    hi, gain = similar["interval"][1], similar["reference_gain"]
    assert gain == pytest.approx(21.0) and similar["flips_at_share"] == pytest.approx(hi / 21.0)
    assert similar["evidence"].endswith(
        f"by margin: inconclusive below {hi:.2f} ({hi / 21.0:.1%} of the gain), reproduced above"
    )


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
    listed = render(build_context(table2, "cpu", runs, MANIFEST, "abc", judged=True))
    assert "Margin None" not in listed
    assert (
        "Batch 256 and 512 are equally good (68.1 vs 68.1). Margin 1.5% of what its reference "
        "row learned over random init, which it does not show here:"
    ) in listed


def test_the_index_counts_the_whole_study_under_holm_beside_each_table_s_bonferroni():
    summary = summary_json(_table3_context()[1])
    claim = summary["claims"][0] | {"kind": "better", "verdict": "reproduced"}
    ps = [0.001, 0.03, 0.04]  # Holm over 3: 0.001 < 0.05/3, then 0.03 > 0.05/2 stops
    claims = [claim | {"p_value": p} for p in ps] + [claim | {"kind": "collapsed", "p_value": None}]
    summary |= {"claims": claims, "claims_total": 4, "claims_reproduced": 4}
    counts = index_json([summary], "abc")
    assert counts["study_wide"] == {
        "family": 3,
        "method": "holm",
        "alpha": 0.05,
        "reproduced_holm": 1,
        "reproduced_per_table": 3,
        "other_claims": 1,
    }
    assert counts["tables"]["table3"]["reproduced"] == 4 == counts["totals"]["reproduced"]
    index = render_index([summary], "abc")
    assert (
        "Holm's procedure over all 3 comparison claims at one-sided\n0.05 reproduces **1**" in index
    )
    # What each verdict hangs on: the two reproduced per table but not under Holm say so.
    hanging = [r for r in counts["sensitivity"]["rows"] if any("Holm" in c for c in r["choices"])]
    assert len(hanging) == 2
    assert "family, its table (Bonferroni): inconclusive over the whole study (Holm)" in index


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
    (similar,) = [c for c in summary["claims"] if c["kind"] == "similar"]
    assert rows[similar["text"]]["choices"] == [
        f"margin {similar['margin']:.3g}: reproduced at {similar['flips_at']:.3g}"
    ]
    index = render_index([summary], "abc")
    assert "## What each verdict hangs on" in index
    assert f"| {similar['text']} | inconclusive | margin " in index


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
    context = build_context(table, "cpu", runs, MANIFEST, "abc", judged=True)
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
    context = build_context(table, "cpu", runs, MANIFEST, "abc", judged=True)
    bars = accuracy_bars(table, context)["bar"].tolist()
    assert "b: ours" not in bars and "d: paper" not in bars  # skipped; the paper's "unstable"
    assert bars[:3] == ["a: paper", "a: ours", "b: paper"]
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
    context = build_context(table, "cpu", rows, MANIFEST, "abc", judged=True)
    markdown, page = render(context), render(context, "html")
    for text in [row.label for row in table.rows.values()] + [c.text for c in table.claims]:
        assert text in markdown and text in unescape(page), text
    summary = summary_json(context)
    assert len(summary["claims"]) == len(table.claims)
    assert set(table_metrics(context)["rows"]) == set(ids)
    plot_accuracy_bars(table, context, tmp_path / "bars.png")
    assert (tmp_path / "bars.png").stat().st_size > 10_000


HOSTILE = "</script><script>alert(1)</script> <img src=x onerror=alert(2)> a|b {{7*7}}"


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
    context = build_context(table, "cpu", runs, MANIFEST, "abc", judged=True)
    summary = summary_json(context)
    pages = {
        "table.md": render(context),
        "table.html": render(context, "html"),
        "index.md": render_index([summary], "abc"),
        "index.html": render_index([summary], "abc", "html"),
    }
    for name, page in pages.items():
        assert "<script" not in page and "<img" not in page, name
        assert "49" not in page.replace("2049", ""), name  # {{7*7}} printed, never evaluated
        assert "{{7*7}}" in page, name
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
