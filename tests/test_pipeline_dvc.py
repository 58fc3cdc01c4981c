"""End to end: the smoke Table 3 through DVC, on real CIFAR-10, as a DVC user runs it."""

import json
import shutil
import subprocess
from pathlib import Path

import e2e
import pandas as pd
import pytest
import readme
from project import copy_project, use_dvc_profile

from simsiam_lab.study import Params

pytestmark = e2e.MARKS


GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
# Who commits in the README's blocks (a new shell has no git identity in CI).
GIT_IDENTITY = {
    f"GIT_{who}_{what}": value
    for who in ("AUTHOR", "COMMITTER")
    for what, value in (("NAME", "test"), ("EMAIL", "test@localhost"))
}
# Snakemake's Table 3 of the same project, before DVC's: its report's numbers per row.
SNAKEMAKE_ROWS = "snakemake-table3.rows.json"


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory) -> Path:
    """A DVC user's project, in the README's smoke profile, shared by this module's tests,
    where Snakemake built Table 3 first."""
    project = copy_project(tmp_path_factory.mktemp("dvc") / "project")
    e2e.run([*GIT, "add", "-A"], project)  # as cloned: every file committed
    e2e.run([*GIT, "commit", "-qm", "clone"], project)
    use_dvc_profile(project, "smoke")  # the README's profile switch
    e2e.run(["snakemake", "--cores", "2", "reports/table3.md"], project)
    rows = json.loads((project / "reports" / "table3.metrics.json").read_text())["rows"]
    (project.parent / SNAKEMAKE_ROWS).write_text(json.dumps(rows))
    return project


def _assert_mlflow_holds(project: Path, first: dict, other: dict) -> None:
    """Per Table 3 row: its training run holds the `first` evaluation's linear accuracy (as
    table3.metrics.json gave it), and the run nested under it the `other`'s."""
    client = e2e.mlflow(project)
    for run in e2e.mlflow_runs(project, "tags.`row.table3` LIKE '%'"):
        row = run.data.tags["row.table3"]
        (nested,) = client.search_runs(
            [run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"
        )
        for record, numbers in ((run, first), (nested, other)):
            assert record.data.metrics.get("linear_acc") == pytest.approx(
                numbers[row]["linear"], abs=0.01
            ), (row, record.info.run_name)
        assert (run.data.tags["eval.linear_epochs"], nested.data.tags["eval.linear_epochs"]) == (
            "5",
            "6",
        )


def _dvc_changed(project: Path) -> set[str]:
    """The stages `dvc status` says changed ('source' and 'plan' always run: they reread the
    data's fingerprint and params/), Table 3's only: the other tables were not built."""
    status = json.loads(
        e2e.run(["dvc", "status", "--json", "--with-deps", "report-table3"], project).stdout
    )
    return set(status) - {"source", "plan"}


def test_dvc_repro_smoke_table3(dvc_project: Path, monkeypatch):
    project = dvc_project
    monkeypatch.setenv("SIMSIAM_DATA", e2e.env()["SIMSIAM_DATA"])  # the data enters config hashes
    built = e2e.run(["dvc", "repro", "report-table3"], project).stdout  # `dvc repro`: every table
    assert len(e2e.report_rows(project / "reports" / "table3.md")) == 5
    params = Params(project / "params")
    configs = {t.row.id: run for run, ts in params.plan("smoke", ["table3"]).items() for t in ts}
    assert built.count("Running stage 'pretrain@") == len(set(configs.values())) == 5
    assert _dvc_changed(project) == set()
    # One truth: DVC found each config trained and evaluated by Snakemake in the store, its
    # stages' directories are views of it, and every number is Snakemake's.
    assert built.count("trained already") == 5
    for config in set(configs.values()):
        journal = (project / "results/smoke/runs" / config / "pretrain.log").read_text()
        assert journal.count(": started, MLflow run") == 1
    rows = json.loads((project / "reports" / "table3.metrics.json").read_text())["rows"]
    assert rows == json.loads((project.parent / SNAKEMAKE_ROWS).read_text())
    assert {r.data.tags["engine"] for r in e2e.mlflow_runs(project)} == {"snakemake"}

    # Metrics: one numbers-only file per table, a few numbers per row.
    (shown,) = json.loads(e2e.run(["dvc", "metrics", "show", "--json"], project).stdout).values()
    files = {path: found["data"] for path, found in shown["data"].items() if "data" in found}
    assert list(files) == ["reports/table3.metrics.json"]
    metrics = files["reports/table3.metrics.json"]
    assert set(metrics["rows"]) == set(configs)
    assert all(
        set(m) == {"linear", "knn", "z_std_ratio", "z_top_share"} for m in metrics["rows"].values()
    )
    assert set(metrics["random_init"]) == {"linear", "knn"}
    # Plots: one per quantity, a series per row named by its label, no value where a row has
    # none (the loss has no epoch 0), and the accuracy beside the paper's.
    plots = json.loads(e2e.run(["dvc", "plots", "show", "--json"], project).stdout)["data"]
    labels = {row.label for row in params.table("table3").rows.values()}
    loss = plots["table3: loss"][0]["content"]
    assert loss["encoding"]["color"]["field"] == "field"  # .dvc/plots/rows.json: colour by row
    values = loss["data"]["values"]
    assert {v["field"] for v in values} == labels
    assert {v["epoch"] for v in values} == {"1", "2"}  # CSV: strings
    knn = plots["table3: knn"][0]["content"]
    assert {v["epoch"] for v in knn["data"]["values"]} == {"0", "1", "2"}
    accuracy = plots["table3: accuracy"][0]["content"]
    assert accuracy["encoding"]["color"]["field"] == "source"  # .dvc/plots/accuracy.json
    bars = {(b["row"], b["source"]) for b in accuracy["data"]["values"]}
    assert bars >= {("a", "paper"), ("a", "ours"), ("c", "ours"), ("random init", "random init")}

    # A template edit re-renders the report; nothing retrains or re-evaluates.
    template = project / "src" / "simsiam_lab" / "templates" / "table.md.j2"
    before = e2e.edited(template, "## Claims of", "## The claims of")
    assert _dvc_changed(project) == {"report-table3"}
    template.write_text(before)

    # An optim edit retrains without re-preparing; an eval edit re-evaluates and retrains nothing.
    profiles = project / "params" / "profiles.yaml"
    before = e2e.edited(profiles, "base_lr: 0.03, weight_decay", "base_lr: 0.05, weight_decay")
    changed = _dvc_changed(project)
    assert "prepare" not in changed and {f"pretrain@{k}" for k in e2e.dvc_runs(built)} <= changed
    profiles.write_text(before)
    e2e.edited(profiles, "linear_epochs: 5}", "linear_epochs: 6}")
    assert {stage.split("@")[0] for stage in _dvc_changed(project)} == {"evaluate"}
    profiles.write_text(before)

    # The README's DVC blocks, each in a new shell (`dvc repro` as Table 3: nothing left to run),
    # then the same edit as an experiment: `dvc exp show --only-changed` shows the setting, the
    # accuracies it moved and the runs it re-evaluated, no label, claim text or wall time.
    readme.project_as_cloned(project)
    again = readme.run("dvc repro    ", project).stdout
    assert "Running stage 'pretrain@" not in again and "Running stage 'evaluate@" not in again
    numbers = project / "reports" / "table3.metrics.json"
    head = json.loads(numbers.read_text())["rows"]
    rerun = readme.run("dvc exp run -n lin6", project, **GIT_IDENTITY).stdout
    assert "Running stage 'evaluate@" in rerun and "Running stage 'pretrain@" not in rerun
    # One truth: each training run keeps its first evaluation's numbers (HEAD's, as `dvc
    # metrics` and the report give them), and the experiment's are a record nested under it.
    _assert_mlflow_holds(project, head, json.loads(numbers.read_text())["rows"])
    diff = json.loads(e2e.run(["dvc", "metrics", "diff", "HEAD", "--json"], project).stdout)
    assert any("linear" in key for key in diff["reports/table3.metrics.json"]), diff
    table = e2e.run(["dvc", "exp", "show", "--csv", "--only-changed"], project).stdout
    columns = table.splitlines()[0].split(",")
    kept = [c for c in columns if not c.startswith("results/")]
    assert "smoke.overrides.eval.linear_epochs" in kept
    assert set(kept) - {"Experiment", "rev", "typ", "Created", "parent"} <= {
        "smoke.overrides.eval.linear_epochs",
        "random_init.linear",
        *(f"rows.{row}.linear" for row in configs),
        *(f"claims.{verdict}" for verdict in ("reproduced", "not reproduced", "inconclusive")),
    }, kept
    assert "lin6" in table
    # Each revision keeps its reports in DVC's cache: a plot diff draws both.
    diff = e2e.run(
        ["dvc", "plots", "diff", "HEAD", "lin6", "--json", "--targets", "table3: accuracy"], project
    )
    (bars,) = json.loads(diff.stdout)["data"]["table3: accuracy"]
    assert {bar["rev"] for bar in bars["content"]["data"]["values"]} == {"HEAD", "lin6"}
    # And back: HEAD's evaluations come from DVC's run cache, and the three agree again.
    lin6 = json.loads(numbers.read_text())["rows"]
    e2e.run([*GIT, "checkout", "-q", "--", "."], project)
    back = e2e.run(["dvc", "repro", "report-table3"], project).stdout
    assert "Running stage 'evaluate@" not in back
    assert json.loads(numbers.read_text())["rows"] == head
    _assert_mlflow_holds(project, head, lin6)

    # The same archive elsewhere is the same data; data the profile cannot read is refused by
    # the `source` stage, before `prepare` would delete the prepared data.
    copy = project.parent / "elsewhere" / "cifar10.tar.gz"
    copy.parent.mkdir()
    shutil.copy(e2e.env()["SIMSIAM_DATA"], copy)
    same = e2e.run(["dvc", "repro", "prepare"], project, SIMSIAM_DATA=str(copy)).stdout
    assert "Running stage 'prepare'" not in same
    other = project.parent / "other.tar.gz"
    other.write_bytes(b"other data")
    refused = subprocess.run(
        ["dvc", "repro", "prepare"],
        cwd=project,
        env=e2e.env(SIMSIAM_DATA=str(other)),
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "Running stage 'prepare'" not in refused.stdout
    assert f"cannot read archive {other}" in refused.stdout + refused.stderr
    assert (project / "data/dvc/smoke/manifest.json").is_file()

    # MLflow: one training run a config, whichever engine trained it (Snakemake here), named
    # by every row of the config over the tables (test_cli pins that both engines name it so).
    trained_runs = e2e.mlflow_runs(project)
    assert len(trained_runs) == 5 and all(r.data.tags["table.table3"] for r in trained_runs)
    named = params.plan("smoke", params.table_names())  # each config's trials, every table
    assert {r.info.run_name for r in trained_runs} == {
        (
            "baseline"
            if any(not t.row.overrides for t in named[run])
            else "+".join(f"{t.row.table}-{t.row.id}" for t in named[run])
        )
        + f"-seed0-{run[:6]}"
        for run in set(configs.values())
    }
    assert "baseline-seed0-" + configs["c"][:6] in {r.info.run_name for r in trained_runs}
    # A run trained by an experiment is tagged with its name.
    e2e.run([*GIT, "checkout", "-q", "--", "."], project)
    trained = e2e.run(
        [
            *("dvc", "exp", "run", "-n", "lr05", "pretrain@table3-a-s0", "-S"),
            "params/profiles.yaml:smoke.overrides.optim.base_lr=0.05",
        ],
        project,
    ).stdout
    assert e2e.dvc_runs(trained) == {"table3-a-s0"}
    (tagged,) = e2e.mlflow_runs(project, "tags.`engine.experiment` = 'lr05'")
    assert tagged.data.tags["engine"] == "dvc" and tagged.info.run_name.startswith("table3-a-")
    e2e.run([*GIT, "checkout", "-q", "--", "."], project)  # back to the committed pipeline
    e2e.run(["dvc", "checkout", "-q", "--with-deps", "report-table3"], project)  # only it was built


@pytest.mark.browser
@e2e.NEEDS_CHROMIUM
def test_dvc_plots_show_renders_table3_offline(dvc_project: Path):
    project = dvc_project
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.support.ui import WebDriverWait

    use_dvc_profile(project, "smoke")
    e2e.run(["dvc", "repro", "report-table3"], project)  # built already when run after the above
    table3 = [f"table3: {plot}" for plot in ("loss", "z_std_ratio", "knn", "accuracy")]
    page = e2e.run(["dvc", "plots", "show", *table3], project).stdout.strip().splitlines()[-1]
    html = Path(page.removeprefix("file://")).read_text()
    assert "cdn.jsdelivr" not in html and "<script src" not in html  # Vega inlined
    browser = e2e.headless_chromium(webdriver, 1400, 2200)
    try:
        browser.get(page)
        # Vega draws SVG: a line per row in each curve, a bar per number in the accuracy plot.
        marks = "return document.querySelectorAll(`[id='${arguments[0]}'] g.${arguments[1]}>path`)"
        rows = len(Params(project / "params").table("table3").rows)
        bars = len(pd.read_csv(project / "reports" / "table3.accuracy.csv"))
        drawn = {  # by DVC's div ids
            **{f"table3__{curve}": ("mark-line", rows) for curve in ("loss", "z_std_ratio", "knn")},
            "table3__accuracy": ("mark-rect", bars),
        }
        WebDriverWait(browser, 60).until(
            lambda b: all(len(b.execute_script(marks, p, m)) == n for p, (m, n) in drawn.items())
        )
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        e2e.SCREENSHOTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(e2e.SCREENSHOTS / "dvc-plots-table3.png"))
    finally:
        browser.quit()
