"""End to end: the smoke Table 3 through Snakemake and through DVC, on real CIFAR-10."""

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow_writers import free_port
from project import copy_project, use_dvc_profile

from simsiam_lab.config import Params, config_hash, flatten, training_config

ROOT = Path(__file__).parents[1]
ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
README_UI_COMMAND = (
    "mlflow ui --backend-store-uri sqlite:///.mlflow/mlflow.db --host 127.0.0.1 --port"
)
# The README's query for Table 3's runs, one per config, as Snakemake trained them.
README_QUERY = "tags.`table.table3` LIKE '%' AND tags.engine = 'snakemake'"
SCREENSHOTS = ROOT / "test-artifacts"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.environ.get("SIMSIAM_DATA") or ARCHIVE.is_file()),
        reason="needs the CIFAR-10 archive (SIMSIAM_DATA or ../shared/datasets)",
    ),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("smoke") / "project")


def _env(**extra: str) -> dict[str, str]:
    data = Path(os.environ.get("SIMSIAM_DATA") or ARCHIVE).resolve()  # runs elsewhere: absolute
    env = dict(os.environ, SIMSIAM_DATA=str(data))
    env.pop("MLFLOW_TRACKING_URI", None)
    return env | extra


def _run(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _mlflow(project: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project}/.mlflow/mlflow.db")


def _mlflow_runs(project: Path, query: str = "") -> list:
    """The smoke experiment's runs, through MLflow's client (as the UI sees them)."""
    client = _mlflow(project)
    experiment = client.get_experiment_by_name("simsiam-smoke")
    return client.search_runs([experiment.experiment_id], query, max_results=1000)


def _assert_nothing_lost(project: Path, runs: list) -> None:
    """Every trained run has every epoch's metrics, every run its artifacts, and runs overlapped.

    A run whose batch exceeds the smoke subset is `skipped`: it trains nothing, so logs no metric.
    How many runs overlap depends on Snakemake's scheduling beside the evaluate jobs; test_track
    pins eight writers released at once.
    """
    client = _mlflow(project)
    windows = []
    for run in runs:
        run_id, status = run.info.run_id, run.data.tags["status"]
        windows.append((run.info.start_time, run.info.end_time))
        steps = {
            key: sorted(m.step for m in client.get_metric_history(run_id, key))
            for key in run.data.metrics
        }
        if status == "skipped":
            assert steps == {}, (run_id, steps)
        else:
            assert status == "ok", (run_id, status)
            assert steps["loss"] == [1, 2] and steps["knn"] == [0, 1, 2], (run_id, steps)
            assert {"knn_acc", "linear_acc"} <= steps.keys()
            assert run.data.tags["eval.linear_probe"] == "cached"  # the evaluation's settings
        trained = set() if status == "skipped" else {"curves.png", "encoder.pt"}
        logged = {a.path for a in client.list_artifacts(run_id)}
        assert logged == {"config.yaml", "history.json", "metrics.json", *trained}
    events = sorted([(start, 1) for start, _ in windows] + [(end, -1) for _, end in windows])
    running = [0]
    for _, change in events:
        running.append(running[-1] + change)
    assert max(running) >= 4, f"at most {max(running)} runs open at once"


def _report_rows(report: Path) -> list[str]:
    return [line for line in report.read_text().splitlines() if line.startswith("| (")]


def test_snakemake_smoke_all_tables(project: Path):
    dry = _run(
        ["snakemake", "-n", "--cores", "2", "reports/table3.md", "--config", "profile=smoke"],
        project,
    )
    assert "pretrain        5" in dry.stdout  # one job per distinct config of Table 3

    # One thread per job, so eight pretrainings log to one MLflow store at once.
    target = ["all", "--config", "profile=smoke", "threads=1"]
    _run(["snakemake", "--cores", "8", *target], project)
    rows = _report_rows(project / "reports" / "table3.md")
    assert [r.split("|")[1].strip() for r in rows] == [
        "(a) none",
        "(b) hidden-only",
        "(c) default: output BN without affine (builder.py)",
        "(c) as in the paper's Table 3: output BN with affine",
        "(d) all",
    ]
    papers = [r.split("|")[7].strip() for r in rows]  # after the label and five BN columns
    assert [p.split()[0] for p in papers] == ["34.6", "67.4", "68.2", "68.1", "unstable"]
    summary = json.loads((project / "reports" / "table3.json").read_text())
    assert set(summary["rows"]) == {"a", "b", "c", "c-affine", "d"}

    params = Params(project / "params")
    tables = params.table_names()
    index = (project / "reports" / "index.md").read_text()
    for name in tables:
        assert (project / "reports" / f"{name}.png").stat().st_size > 10_000
        assert f"]({name}.md)" in index
    assert index.count("**reproduced**") + index.count("**not reproduced**") + index.count(
        "**inconclusive**"
    ) == sum(len(params.table(t).claims) for t in tables)

    trials = pd.read_csv(project / "reports" / "runs.csv")  # the tidy table: one row a trial
    planned = [params.plan("smoke", [name]) for name in tables]
    assert len(trials) == sum(len(ts) for plan in planned for ts in plan.values())
    assert trials.groupby("run_dir")["linear_acc"].nunique().max() <= 1  # a shared run, once
    runs = _mlflow_runs(project)
    assert len(runs) == len(params.plan("smoke", tables))  # a shared config is one run
    n_keys = len(flatten(training_config(params.resolve("smoke"))))
    assert all(r.info.status == "FINISHED" and len(r.data.params) == n_keys for r in runs)
    assert {r.data.tags["engine"] for r in runs} == {"snakemake"}
    # The project copy is a fresh `git init` with no commit: there is none to name.
    sources = {(r.data.tags["mlflow.source.git.commit"], r.data.tags["git_dirty"]) for r in runs}
    assert sources == {("unknown", "unknown")}
    _assert_nothing_lost(project, runs)

    again = _run(["snakemake", "-n", "--cores", "2", *target], project)
    assert "Nothing to be done" in again.stdout + again.stderr
    # An evaluation setting is not part of a run's identity: it re-evaluates, never retrains.
    profiles = project / "params" / "profiles.yaml"
    before = profiles.read_text()
    profiles.write_text(before.replace("linear_epochs: 5}", "linear_epochs: 6}"))
    plan = _run(["snakemake", "-n", "--cores", "2", *target], project)
    profiles.write_text(before)
    assert "evaluate " in plan.stdout and "pretrain " not in plan.stdout, plan.stdout
    # A new table (sorted first) whose row is Table 3's (c) reuses that run: only its report.
    new_table = project / "params" / "tables" / "acopy.yaml"
    new_table.write_text("rows:\n  c: {overrides: {}, paper: 68.2}\n")
    plan = _run(["snakemake", "-n", "--cores", "2", "reports/acopy.md", *target], project)
    new_table.unlink()
    assert "report " in plan.stdout and "pretrain " not in plan.stdout, plan.stdout

    # `snakemake --report`: one browsable page with every table's report, curves and bars.
    _run(["snakemake", "--report", "report.html", *target], project)
    page = (project / "report.html").read_text()
    for table in tables:
        assert all(f"{table}{suffix}" in page for suffix in (".md", ".png", ".accuracy.csv"))


def _wait_for_http(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# The close button of the "MLflow Assistant" side panel.
ASSISTANT_CLOSE = (
    "//*[normalize-space(text())='MLflow Assistant']"
    "/ancestor::*[.//button[@aria-label='Close']][1]//button[@aria-label='Close']"
)


def _wait(browser):
    """A wait for a UI that renders late on a loaded 2-core host and re-renders as it goes: an
    element not there yet, replaced, or covered by a tip is tried again."""
    from selenium.common import exceptions
    from selenium.webdriver.support.ui import WebDriverWait

    passing = (
        exceptions.ElementClickInterceptedException,
        exceptions.ElementNotInteractableException,
        exceptions.NoSuchElementException,
        exceptions.StaleElementReferenceException,
    )
    return WebDriverWait(browser, 180, ignored_exceptions=passing)


def _click(wait, xpath: str) -> None:
    """Clicks the element once it takes the click; MLflow's tip "Detect Issues in Your Traces"
    covers the page until dismissed with "Got it"."""

    def clicked(browser) -> bool:
        for tip in browser.find_elements("xpath", "//button[normalize-space(.)='Got it']"):
            tip.click()
        browser.find_element("xpath", xpath).click()
        return True

    wait.until(clicked)


@pytest.mark.browser
@pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)
def test_mlflow_ui_shows_table3_runs_and_their_knn(project: Path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.keys import Keys

    _run(["snakemake", "--cores", "8", "reports/table3.md", "--config", "profile=smoke"], project)
    readme = (ROOT / "README.md").read_text()
    assert README_UI_COMMAND in readme and README_QUERY in readme
    runs = _mlflow_runs(project, README_QUERY)
    # One run per config of the five rows, whatever else (DVC, by hand) trained them too.
    assert len(runs) == len({run.data.tags["config_hash"] for run in runs}) == 5

    port = free_port()
    ui = subprocess.Popen(
        [*README_UI_COMMAND.split(), str(port)],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1800,1000",
    ):
        options.add_argument(arg)
    browser = None
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_http(base, 120)
        browser = webdriver.Chrome(
            service=webdriver.ChromeService(shutil.which("chromedriver")), options=options
        )
        wait = _wait(browser)
        body = lambda: browser.find_element("tag name", "body").text  # noqa: E731
        SCREENSHOTS.mkdir(exist_ok=True)

        # The README's path: the experiment opens in the GenAI view; its Runs table is under
        # "Model training".
        browser.get(base)
        _click(wait, "//a[normalize-space(.)='simsiam-smoke']")
        _click(wait, "//div[@role='button'][normalize-space(.)='Model training']")
        search = "//input[contains(@placeholder, 'metrics.rmse')]"
        wait.until(lambda _: browser.find_elements("xpath", search))

        def assistant_closed(_) -> bool:  # if its panel shows: a table wide enough to read
            for close in browser.find_elements("xpath", ASSISTANT_CLOSE):
                close.click()
            return True

        wait.until(assistant_closed)
        browser.find_element("xpath", search).send_keys(README_QUERY + Keys.ENTER)
        wait.until(lambda _: f"{len(runs)} matching runs" in body())
        # The count renders before the rows: wait for every run's name.
        wait.until(lambda _: all(run.info.run_name in body() for run in runs))

        # No metric column until one is picked (Columns, then the Metrics group).
        _click(wait, "//button[normalize-space(.)='Columns']")
        for name in ("knn_acc", "linear_acc", "table.table3"):
            _click(wait, f"//span[@title='{name}']")
        browser.find_element("tag name", "body").send_keys(Keys.ESCAPE)
        knn = sorted(f"{run.data.metrics['knn_acc']:g}" for run in runs)
        cells = "//*[@role='gridcell'][@col-id='metrics.`knn_acc`']"
        wait.until(lambda _: sorted(c.text for c in browser.find_elements("xpath", cells)) == knn)
        assert browser.save_screenshot(str(SCREENSHOTS / "mlflow-ui-table3-runs.png"))

        _click(wait, "//input[@aria-label='Select all runs']")
        _click(wait, "//button[normalize-space(.)='Compare']")
        wait.until(lambda _: f"Comparing {len(runs)} Runs from 1 Experiment" in body())
        finals = [run.data.metrics[key] for key in ("knn_acc", "linear_acc") for run in runs]

        def metrics() -> str:  # the compare view's Metrics table
            return body().split("Metrics\nShow diff only")[-1].split("Artifacts")[0]

        wait.until(lambda _: "knn_acc" in metrics() and "linear_acc" in metrics())
        assert all(f"{value:g}" in metrics() for value in finals), (metrics(), finals)
        scroll = "arguments[0].scrollIntoView({block: 'center'}); return true"
        row = "//*[text()='knn_acc']"
        wait.until(lambda _: browser.execute_script(scroll, browser.find_element("xpath", row)))
        assert browser.save_screenshot(str(SCREENSHOTS / "mlflow-ui-table3.png"))
    finally:
        if browser is not None:
            browser.quit()
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait()


def test_dvc_repro_smoke_table3(project: Path):
    use_dvc_profile(project, "smoke")
    (project / "reports" / "table3.md").unlink(missing_ok=True)
    _run(["dvc", "repro", "report-table3"], project)  # `dvc repro` builds every table
    assert len(_report_rows(project / "reports" / "table3.md")) == 5
    status = _run(["dvc", "status", "report-table3"], project).stdout
    assert "up to date" in status

    # Metrics: one numbers-only file per run, which `dvc metrics diff` can compare.
    (shown,) = json.loads(_run(["dvc", "metrics", "show", "--json"], project).stdout).values()
    files = {path: found for path, found in shown["data"].items() if "data" in found}
    assert len(files) == 5 and all(path.endswith("/scores.json") for path in files)  # Table 3's
    values = [v for found in files.values() for v in found["data"].values()]
    assert "linear_acc" in next(iter(files.values()))["data"]
    assert all(isinstance(v, int | float) for v in values)
    # Plots: per-epoch curves of every run and the table's accuracy beside the paper's.
    plots = json.loads(_run(["dvc", "plots", "show", "--json"], project).stdout)["data"]
    bars = plots["table3: linear accuracy, paper vs ours"][0]["content"]["data"]["values"]
    assert {b["bar"] for b in bars} >= {"a: paper", "a: ours", "c: ours"}
    curves = plots["table3: loss and std(z)·√d per epoch"][0]["content"]["data"]["values"]
    assert {c["epoch"] for c in curves} == {"0", "1", "2"}  # CSV: strings
    # A template edit re-renders the report; nothing retrains or re-evaluates ('source' always
    # runs: it only rereads the data's fingerprint).
    template = project / "src" / "simsiam_lab" / "templates" / "table.md.j2"
    template.write_text(template.read_text() + "\n")
    status = _run(["dvc", "status", "--json", "--with-deps", "report-table3"], project).stdout
    assert set(json.loads(status)) - {"source"} == {"report-table3"}
    template.write_text(template.read_text()[:-1])

    # An evaluation setting re-evaluates and retrains nothing; `dvc metrics diff` and
    # `dvc exp show` compare the runs' scores with the committed ones.
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    _run([*git, "add", "-A"], project)
    _run([*git, "commit", "-qm", "smoke"], project)
    baseline = project / "params" / "baseline.yaml"
    baseline.write_text(baseline.read_text().replace("linear_lr: 0.1 ", "linear_lr: 0.3 "))
    rerun = _run(["dvc", "repro", "report-table3"], project).stdout
    assert "Running stage 'evaluate@table3-a-s0'" in rerun
    assert "Running stage 'pretrain@" not in rerun, rerun
    diff = json.loads(_run(["dvc", "metrics", "diff", "HEAD", "--json"], project).stdout)
    assert any("linear_acc" in changes for changes in diff.values()), diff
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], project).stdout)
    assert "scores.json" in json.dumps(shown) and "linear_acc" in json.dumps(shown)

    # The same archive elsewhere is the same data; other data re-prepares (here: fails to).
    copy = project.parent / "elsewhere" / "cifar10.tar.gz"
    copy.parent.mkdir()
    shutil.copy(_env()["SIMSIAM_DATA"], copy)
    same = _run(["dvc", "repro", "prepare"], project, SIMSIAM_DATA=str(copy)).stdout
    assert "Running stage 'prepare'" not in same
    other = project.parent / "other.tar.gz"
    other.write_bytes(b"other data")
    redone = subprocess.run(
        ["dvc", "repro", "prepare"],
        cwd=project,
        env=_env(SIMSIAM_DATA=str(other)),
        capture_output=True,
        text=True,
    )
    assert redone.returncode != 0 and "Running stage 'prepare'" in redone.stdout
    assert f"cannot read archive {other}" in redone.stdout + redone.stderr


def _saved_epoch(state: Path) -> int:
    try:
        return torch.load(state, weights_only=False)["epoch"]
    except (FileNotFoundError, RuntimeError, EOFError):  # not there yet, or being replaced
        return 0


def _kill_the_pretraining(session: int) -> None:
    """kill -9 the pretraining process (and its shell), not the engine that started it."""
    found = subprocess.run(
        ["pgrep", "-s", str(session), "-f", "simsiam.* pretrain "], capture_output=True, text=True
    )
    for pid in found.stdout.split():
        os.kill(int(pid), signal.SIGKILL)


# The resume logic is the library's; the DVC variant (a minute more) runs with `pytest -m extended`.
@pytest.mark.parametrize("engine", ["snakemake", pytest.param("dvc", marks=pytest.mark.extended)])
def test_a_killed_pretraining_resumes_to_the_same_weights_and_mlflow_run(
    tmp_path: Path, engine: str
):
    project = copy_project(tmp_path / "project")
    profiles = project / "params" / "profiles.yaml"  # longer than smoke's 2 epochs: room to kill
    profiles.write_text(
        profiles.read_text().replace("epochs: 2, batch_size: 64", "epochs: 6, batch_size: 64")
    )
    if engine == "snakemake":
        params = Params(project / "params")
        run = Path("results/smoke/runs") / config_hash(
            params.resolve("smoke", params.row("table3:a"))
        )
        cmd = f"snakemake --cores 1 {run}/metrics.json --config profile=smoke threads=1".split()
        data, threads = "data/prepared/smoke", "--threads 1"
    else:
        use_dvc_profile(project, "smoke")
        run, cmd = Path("results/smoke/dvc/table3-a-s0"), ["dvc", "repro", "pretrain@table3-a-s0"]
        data, threads = "data/dvc/smoke", ""  # as dvc.yaml: torch's default
    state = project / run / "state.pt"

    job = subprocess.Popen(
        cmd, cwd=project, env=_env(), start_new_session=True, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while _saved_epoch(state) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    saved = time.monotonic()
    while _saved_epoch(state) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep((time.monotonic() - saved) / 2)  # halfway through epoch 4
    _kill_the_pretraining(job.pid)
    assert job.wait() != 0
    assert 3 <= _saved_epoch(state) < 6
    assert not (project / run / "checkpoint.pt").exists()
    run_id = (project / run / "mlflow_run_id").read_text().strip()

    _run(cmd, project)  # the very same command
    assert not state.exists()
    run = project / run

    reference = tmp_path / "uninterrupted"
    # Same thread count as the engine's job: float sums are only reproducible per thread count.
    reference_cmd = f"simsiam {threads} pretrain --profile smoke --row table3:a --data {data}"
    _run(
        [*reference_cmd.split(), "--out", str(reference)],
        project,
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/ref.db",
    )
    resumed = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    uninterrupted = torch.load(reference / "checkpoint.pt", weights_only=True)["model"]
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    assert (run / "history.json").read_text() == (reference / "history.json").read_text()

    runs = _mlflow_runs(project)
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "FINISHED")]  # no duplicate
    losses = _mlflow(project).get_metric_history(run_id, "loss")
    assert sorted(m.step for m in losses) == list(range(1, 7))  # every epoch once
