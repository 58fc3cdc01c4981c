"""End to end: the smoke Table 3 through Snakemake and through DVC, on real CIFAR-10."""

import base64
import html
import json
import os
import re
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
# What the Snakemake smoke run builds: every kind of claim (collapse, instability, better, not
# worse, similar) and a config two tables share (Table 3's (c) is hypothesis' k1), in 10
# trainings instead of all tables' 27 (test_report renders every table from synthetic runs).
SMOKE_TABLES = ["table3", "hypothesis"]
SMOKE = ["--config", "profile=smoke", "threads=1", f"tables=[{','.join(SMOKE_TABLES)}]"]
SCREENSHOTS = ROOT / "test-artifacts"
REPORT_SCREENSHOTS = SCREENSHOTS / "snakemake-report"

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


def test_snakemake_smoke_dag(project: Path):
    dry = _run(
        ["snakemake", "-n", "--cores", "2", "reports/table3.md", "--config", "profile=smoke"],
        project,
    )
    assert "pretrain        5" in dry.stdout  # one job per distinct config of Table 3

    # One thread per job, so eight pretrainings log to one MLflow store at once.
    target = ["all", *SMOKE]
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
    tables = SMOKE_TABLES
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
    # An optim setting retrains every run, and re-prepares nothing.
    _edited(profiles, "base_lr: 0.03, weight_decay", "base_lr: 0.05, weight_decay")
    plan = _run(["snakemake", "-n", "--cores", "2", *target], project)
    profiles.write_text(before)
    assert "pretrain " in plan.stdout and "prepare " not in plan.stdout, plan.stdout
    # A new table (sorted first) whose row is Table 3's (c) reuses that run: only its report.
    new_table = project / "params" / "tables" / "acopy.yaml"
    new_table.write_text("rows:\n  c: {overrides: {}, paper: 68.2}\n")
    plan = _run(["snakemake", "-n", "--cores", "2", "reports/acopy.md", *target], project)
    new_table.unlink()
    assert "report " in plan.stdout and "pretrain " not in plan.stdout, plan.stdout

    # `snakemake --report`: one self-contained page that a reader reads in the browser.
    _run(["snakemake", "--report", "report.html", *target], project)
    _assert_the_report_shows_every_table(project, params, tables)
    # A template edit re-renders every report and the index, and trains nothing.
    template = project / "src" / "simsiam_lab" / "templates" / "table.md.j2"
    before, stat = template.read_text(), template.stat()
    template.write_text(before + "\n")
    plan = _run(["snakemake", "-n", "--cores", "2", *target], project)
    template.write_text(before)
    os.utime(template, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # up to date again, for the rest
    assert _planned(plan.stdout) == {"report": len(tables), "index": 1, "all": 1}, plan.stdout


def _planned(dry_run: str) -> dict[str, int]:
    """The jobs of a `snakemake -n` plan, by rule, from its job stats."""
    stats = dry_run.split("Job stats:")[1].split("\n\n")[0]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", stats, re.MULTILINE))
    return {rule: int(n) for rule, n in counts.items() if rule not in ("job", "total")}


def _report_data(page: Path) -> tuple[dict, dict[str, dict], str]:
    """What Snakemake 9's report.html embeds as JavaScript: its results (each file as a data
    URI, with its caption and labels), their categories, and the workflow description."""
    scripts = re.findall(r'<script id="([\w-]+)">\s*var \w+ = (.*);\s*</script>', page.read_text())
    found = {name: json.loads(value) for name, value in scripts}
    return found["results"], found["categories"], found["workflow-desc"]


def _embedded(result: dict) -> bytes:
    return base64.b64decode(result["data_uri"].split(";base64,", 1)[1])


def _assert_the_report_shows_every_table(project: Path, params: Params, tables: list[str]):
    results, categories, description = _report_data(project / "report.html")
    # The index first, then a folder per table holding what a browser shows, nothing to download.
    assert sorted(categories)[0] == "All tables"
    index = results["reports/index.html"]
    assert index["mime_type"] == "text/html" and "Every claim" in index["caption"]
    index_page = html.unescape(_embedded(index).decode())
    for table in tables:
        summary = json.loads((project / "reports" / f"{table}.json").read_text())
        head, section = params.table(table).title.split(":")[0], params.table(table).section
        paths = {f"reports/{table}{suffix}" for suffix in (".html", ".png", ".accuracy.png")}
        assert set(categories[f"{head} ({section})"]["Other"]) == paths
        page = results[f"reports/{table}.html"]
        assert page["mime_type"] == "text/html" and f"reports/{table}.html" in page["caption"]
        text = html.unescape(_embedded(page).decode())
        assert all(row.label in text for row in params.table(table).rows.values())
        shown = re.findall(r'<span class="verdict [a-z-]+">([a-z ]+)</span>', text)
        assert shown == [c["verdict"] for c in summary["claims"]]  # the same verdicts as the .md
        assert all(c["evidence"] in text and c["evidence"] in index_page for c in summary["claims"])
        for suffix, caption in ((".png", "Training curves"), (".accuracy.png", "Linear top-1")):
            image = results[f"reports/{table}{suffix}"]
            assert image["mime_type"] == "image/png" and caption in image["caption"]
            assert _embedded(image) == (project / "reports" / f"{table}{suffix}").read_bytes()
    assert "The DAG." in description and "README.md" in description
    assert "The smoke profile checks the plumbing only" in description


def _headless_chromium(webdriver, width: int, height: int):
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(
        service=webdriver.ChromeService(shutil.which("chromedriver")), options=options
    )


@pytest.mark.browser
@pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)
def test_the_snakemake_report_shows_table3_s_page_and_curves_in_chromium(project: Path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.support.ui import WebDriverWait

    # Nothing to run after the smoke run above; the smoke tables otherwise.
    target = ["all", *SMOKE]
    _run(["snakemake", "--cores", "8", *target], project)
    _run(["snakemake", "--report", "report.html", *target], project)
    summary = json.loads((project / "reports" / "table3.json").read_text())
    labels = [row.label for row in Params(project / "params").table("table3").rows.values()]
    REPORT_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser = _headless_chromium(webdriver, 1600, 1100)
    try:
        wait = WebDriverWait(browser, 120)  # a loaded 2-core CI host renders slowly
        find = lambda xpath: browser.find_element("xpath", xpath)  # noqa: E731
        text = lambda: find("//body").text  # noqa: E731
        browser.get((project / "report.html").as_uri())
        wait.until(lambda _: "The DAG." in text())  # the front page: the workflow description
        browser.save_screenshot(str(REPORT_SCREENSHOTS / "front.png"))

        def show(item: str) -> None:
            """Table 3's folder in the menu, then the eye button of one of its items."""
            browser.get((project / "report.html").as_uri())
            wait.until(lambda _: "Table 3 (§4.4)" in find("//nav").text)
            find("//nav//a[normalize-space(.)='Table 3 (§4.4)']").click()
            wait.until(lambda _: item in find("//nav").text)
            find(f"//nav//tr[td[starts-with(normalize-space(.), '{item}')]]//a").click()

        show("claims, verdicts")  # the page, in a frame
        browser.switch_to.frame(wait.until(lambda _: find("//iframe")))
        wait.until(lambda _: "Claims of §4.4" in text())
        assert all(label in text() for label in labels), text()
        verdicts = [e.text for e in browser.find_elements("css selector", "span.verdict")]
        assert verdicts == [c["verdict"] for c in summary["claims"]]
        browser.switch_to.default_content()
        browser.save_screenshot(str(REPORT_SCREENSHOTS / "table3.png"))  # its rows
        browser.switch_to.frame(find("//iframe"))
        browser.execute_script(
            "arguments[0].scrollIntoView()", find("//h2[starts-with(., 'Claims')]")
        )
        browser.switch_to.default_content()
        browser.save_screenshot(str(REPORT_SCREENSHOTS / "table3-claims.png"))  # its verdicts

        shown = {"training curves": "table3.png", "linear accuracy": "table3.accuracy.png"}
        for item, name in shown.items():
            show(item)
            png = (project / "reports" / name).read_bytes()
            image = wait.until(lambda _: find("//img[starts-with(@src, 'data:image/png')]"))
            assert image.get_attribute("src").endswith(base64.b64encode(png).decode())
            wait.until(lambda _, image=image: image.get_property("complete"))
            # Decoded and drawn: as wide as the PNG says (its IHDR width, bytes 16 to 20).
            assert image.get_property("naturalWidth") == int.from_bytes(png[16:20], "big")
            browser.save_screenshot(str(REPORT_SCREENSHOTS / f"table3-{item.split()[-1]}.png"))
    finally:
        browser.quit()


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
    browser = None
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_http(base, 120)
        browser = _headless_chromium(webdriver, 1800, 1000)
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


def _dvc_changed(project: Path) -> set[str]:
    """The stages `dvc status` says changed ('source' always runs: it rereads the data's
    fingerprint), Table 3's only: the other tables were not built."""
    status = json.loads(
        _run(["dvc", "status", "--json", "--with-deps", "report-table3"], project).stdout
    )
    return set(status) - {"source"}


def _edited(path: Path, old: str, new: str) -> str:
    """Replaces old by new in the file; returns the file as it was."""
    before = path.read_text()
    assert old in before, (path, old)
    path.write_text(before.replace(old, new))
    return before


def test_dvc_repro_smoke_table3(project: Path):
    use_dvc_profile(project, "smoke")  # the README's profile switch
    # A DVC user's project: none of the reports that Snakemake built above.
    for report in (project / "reports").glob("*.*"):
        report.unlink()
    built = _run(["dvc", "repro", "report-table3"], project).stdout  # `dvc repro`: every table
    assert len(_report_rows(project / "reports" / "table3.md")) == 5
    params = Params(project / "params")
    configs = {t.row.id: run for run, ts in params.plan("smoke", ["table3"]).items() for t in ts}
    assert built.count("Running stage 'pretrain@") == len(set(configs.values())) == 5
    assert _dvc_changed(project) == set()

    # Metrics: one numbers-only file per table, a few numbers per row.
    (shown,) = json.loads(_run(["dvc", "metrics", "show", "--json"], project).stdout).values()
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
    plots = json.loads(_run(["dvc", "plots", "show", "--json"], project).stdout)["data"]
    labels = {row.label for row in params.table("table3").rows.values()}
    loss = plots["table3: loss"][0]["content"]
    assert loss["encoding"]["color"]["field"] == "field"  # .dvc/plots/rows.json: colour by row
    values = loss["data"]["values"]
    assert {v["field"] for v in values} == labels
    assert {v["epoch"] for v in values} == {"1", "2"}  # CSV: strings
    knn = plots["table3: knn"][0]["content"]
    assert {v["epoch"] for v in knn["data"]["values"]} == {"0", "1", "2"}
    bars = plots["table3: accuracy"][0]["content"]["data"]["values"]
    assert {b["bar"] for b in bars} >= {"a: paper", "a: ours", "c: ours"}

    # A template edit re-renders the report; nothing retrains or re-evaluates.
    template = project / "src" / "simsiam_lab" / "templates" / "table.md.j2"
    before = _edited(template, "## Claims of", "## The claims of")
    assert _dvc_changed(project) == {"report-table3"}
    template.write_text(before)

    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    _run([*git, "add", "-A"], project)
    _run([*git, "commit", "-qm", "smoke"], project)
    # An optim edit retrains without re-preparing; an eval edit re-evaluates and retrains nothing.
    profiles = project / "params" / "profiles.yaml"
    before = _edited(profiles, "base_lr: 0.03, weight_decay", "base_lr: 0.05, weight_decay")
    changed = _dvc_changed(project)
    assert "prepare" not in changed and {f"pretrain@{k}" for k in _dvc_runs(built)} <= changed
    profiles.write_text(before)
    _edited(profiles, "linear_epochs: 5}", "linear_epochs: 6}")
    assert {stage.split("@")[0] for stage in _dvc_changed(project)} == {"evaluate"}
    profiles.write_text(before)

    # The same edit as an experiment: `dvc exp show --only-changed` shows the setting, the
    # accuracies it moved and the runs it re-evaluated, no label, claim text or wall time.
    rerun = _run(
        [
            "dvc",
            "exp",
            "run",
            "-n",
            "lin6",
            "report-table3",
            "-S",
            "params/profiles.yaml:smoke.overrides.eval.linear_epochs=6",
        ],
        project,
    ).stdout
    assert "Running stage 'evaluate@" in rerun and "Running stage 'pretrain@" not in rerun
    diff = json.loads(_run(["dvc", "metrics", "diff", "HEAD", "--json"], project).stdout)
    assert any("linear" in key for key in diff["reports/table3.metrics.json"]), diff
    table = _run(["dvc", "exp", "show", "--csv", "--only-changed"], project).stdout
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
    diff = _run(
        ["dvc", "plots", "diff", "HEAD", "lin6", "--json", "--targets", "table3: accuracy"], project
    )
    (bars,) = json.loads(diff.stdout)["data"]["table3: accuracy"]
    assert {bar["rev"] for bar in bars["content"]["data"]["values"]} == {"HEAD", "lin6"}

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

    # MLflow: DVC's runs say so, and carry the names Snakemake's runs of the same configs have.
    dvc_runs = _mlflow_runs(project, "tags.engine = 'dvc'")
    assert len(dvc_runs) == 5 and all(r.data.tags["table.table3"] for r in dvc_runs)
    snakemake_runs = _mlflow_runs(project, README_QUERY)
    assert {r.info.run_name for r in dvc_runs} == {r.info.run_name for r in snakemake_runs}
    # A run trained by an experiment is tagged with its name.
    _run([*git, "checkout", "-q", "--", "."], project)
    trained = _run(
        [
            *("dvc", "exp", "run", "-n", "lr05", "pretrain@table3-a-s0", "-S"),
            "params/profiles.yaml:smoke.overrides.optim.base_lr=0.05",
        ],
        project,
    ).stdout
    assert _dvc_runs(trained) == {"table3-a-s0"}
    (tagged,) = _mlflow_runs(project, "tags.`engine.experiment` = 'lr05'")
    assert tagged.data.tags["engine"] == "dvc" and tagged.info.run_name.startswith("table3-a-")
    _run([*git, "checkout", "-q", "--", "."], project)  # back to the committed pipeline
    _run(["dvc", "checkout", "-q", "--with-deps", "report-table3"], project)  # only it was built


@pytest.mark.browser
@pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)
def test_dvc_plots_show_renders_table3_offline(project: Path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.support.ui import WebDriverWait

    use_dvc_profile(project, "smoke")
    _run(["dvc", "repro", "report-table3"], project)  # built already when run after the above
    table3 = [f"table3: {plot}" for plot in ("loss", "z_std_ratio", "knn", "accuracy")]
    page = _run(["dvc", "plots", "show", *table3], project).stdout.strip().splitlines()[-1]
    html = Path(page.removeprefix("file://")).read_text()
    assert "cdn.jsdelivr" not in html and "<script src" not in html  # Vega inlined
    browser = _headless_chromium(webdriver, 1400, 2200)
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
        SCREENSHOTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(SCREENSHOTS / "dvc-plots-table3.png"))
    finally:
        browser.quit()


def _dvc_runs(output: str) -> set[str]:
    return set(re.findall(r"Running stage 'pretrain@([^']+)'", output))


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
