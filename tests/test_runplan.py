"""A run's plan, the one way a job receives its config: written by the plan step, read back
checked, and never rewritten where its content stands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simsiam_lab.config import RunConfig, config_hash
from simsiam_lab.errors import ConfigError, DataError
from simsiam_lab.rundir import RunDir
from simsiam_lab.runplan import RunPlan
from simsiam_lab.study import Params

ROOT = Path(__file__).parents[1]


@pytest.fixture
def plan() -> RunPlan:
    params = Params(ROOT / "params")
    cfg = params.resolve_params("smoke", params.row("table3:c"), 0)
    cfg["data"]["source_sha256"] = "0" * 64  # no data read: any fingerprint will do
    return RunPlan("smoke", RunConfig.of(cfg), ("table3:c@0", "table1:no-decay@0"), False)


def test_a_plan_reads_back_as_written(plan, tmp_path):
    run = RunDir(tmp_path / "run")
    assert plan.write(run) == 3
    assert RunPlan.read(run) == plan
    assert json.loads(run.plan.read_text())["config_hash"] == config_hash(plan.config)


def test_a_plan_rewrites_only_what_changed(plan, tmp_path):
    run = RunDir(tmp_path / "run")
    plan.write(run)
    stamps = {p: p.stat().st_mtime_ns for p in run.planned()}
    assert plan.write(run) == 0
    assert {p: p.stat().st_mtime_ns for p in run.planned()} == stamps
    # another table that shares the config: the plan changes, the config (the identity) not
    shared = RunPlan(plan.profile, plan.config, (*plan.trials, "table2:b512@0"), False)
    assert shared.write(run) == 1
    assert run.config.stat().st_mtime_ns == stamps[run.config]
    # other eval settings: eval.json alone (what evaluation depends on)
    longer = plan.config.merged({"eval": {"linear_epochs": 7}}, "test")
    assert RunPlan(plan.profile, longer, shared.trials, False).write(run) == 1
    assert json.loads(run.evaluation.read_text())["linear_epochs"] == 7
    assert {p: p.stat().st_mtime_ns for p in (run.config, run.plan)} == {
        run.config: stamps[run.config],
        run.plan: run.plan.stat().st_mtime_ns,
    }


def test_another_config_s_directory_is_refused(plan, tmp_path):
    run = RunDir(tmp_path / "run")
    plan.write(run)
    other = RunPlan(plan.profile, plan.config.merged({"seed": 1}, "test"), plan.trials, False)
    with pytest.raises(ConfigError, match="holds the run of another config"):
        other.write(run)


def test_a_missing_or_mismatched_plan_says_what_to_run(plan, tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(DataError, match=r"no plan \(config.yaml, eval.json, plan.json missing"):
        RunPlan.read(run)
    plan.write(run)
    planned = json.loads(run.plan.read_text())
    run.plan.write_text(json.dumps(planned | {"config_hash": "0123456789"}))
    with pytest.raises(ConfigError, match="written for config 0123456789, but"):
        RunPlan.read(run)
    run.plan.write_text("{not json")
    with pytest.raises(ConfigError, match=r"unreadable .* run the plan step again"):
        RunPlan.read(run)
    run.plan.write_text(json.dumps(planned))
    run.evaluation.write_text(json.dumps({"knn_k": "many"}))
    with pytest.raises(ConfigError, match="eval"):
        RunPlan.read(run)
