"""End to end: the smoke Table 3 through Snakemake, on real CIFAR-10 (DVC: test_pipeline_dvc.py),
and the kill-and-resume test through both engines."""

import base64
import html
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import e2e
import pandas as pd
import pytest
import readme
import torch
from mlflow_writers import free_port
from project import copy_project, use_dvc_profile

from simsiam_lab.config import config_hash, flatten
from simsiam_lab.datasource import read_class_list
from simsiam_lab.study import Params

ROOT = e2e.ROOT
# The README's query for Table 3's runs, one per config, as Snakemake trained them.
README_QUERY = "tags.`table.table3` LIKE '%' AND tags.engine = 'snakemake'"
# What the Snakemake smoke run builds: two tables that share a config (Table 3's (c) is
# similarity's cosine), in 6 trainings instead of all tables' 27 (test_report renders every
# table, and judges every kind of claim, from synthetic runs).
SMOKE_TABLES = ["table3", "similarity"]
SMOKE = readme.SMOKE.split()
assert SMOKE[-1] == f"tables=[{','.join(SMOKE_TABLES)}]"
SCREENSHOTS = e2e.SCREENSHOTS
REPORT_SCREENSHOTS = SCREENSHOTS / "snakemake-report"

pytestmark = e2e.MARKS


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Snakemake's project, shared by this module's tests."""
    return copy_project(tmp_path_factory.mktemp("smoke") / "project")


def _assert_nothing_lost(project: Path, runs: list) -> None:
    """Every trained run has every epoch's metrics, every run its artifacts, and runs overlapped.

    A run whose batch exceeds the smoke subset is `skipped`: it trains nothing, so logs no metric.
    How many runs overlap depends on Snakemake's scheduling beside the evaluate jobs; test_track
    pins eight writers released at once.
    """
    client = e2e.mlflow(project)
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
            # At step 0, which MLflow's chart view draws as a bar per run, not a line.
            assert steps["knn_acc"] == [0] and steps["linear_acc"] == [0], (run_id, steps)
            assert run.data.tags["eval.linear_probe"] == "cached"  # the evaluation's settings
        trained = set() if status == "skipped" else {"curves.png", "encoder.pt"}
        logged = {a.path for a in client.list_artifacts(run_id)}
        assert logged == {"config.yaml", "history.json", "metrics.json", *trained}
    events = sorted([(start, 1) for start, _ in windows] + [(end, -1) for _, end in windows])
    running = [0]
    for _, change in events:
        running.append(running[-1] + change)
    assert max(running) >= 4, f"at most {max(running)} runs open at once"


def test_snakemake_smoke_dag(project: Path):
    dry = e2e.run(
        ["snakemake", "-n", "--cores", "2", "reports/table3.md", "--config", "profile=smoke"],
        project,
    )
    assert "pretrain        5" in dry.stdout  # one job per distinct config of Table 3

    # One thread per job, so eight pretrainings log to one MLflow store at once.
    target = ["all", *SMOKE]
    e2e.run(["snakemake", "--cores", "8", *target], project)
    rows = e2e.report_rows(project / "reports" / "table3.md")
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
    # smoke checks plumbing (verdicts: false): every claim listed, none judged.
    assert "**No verdicts at `smoke`.**" in index
    assert index.count("**not judged**") == sum(len(params.table(t).claims) for t in tables)
    assert "**reproduced**" not in index and "**inconclusive**" not in index

    trials = pd.read_csv(project / "reports" / "runs.csv")  # the tidy table: one row a trial
    planned = [params.plan("smoke", [name]) for name in tables]
    assert len(trials) == sum(len(ts) for plan in planned for ts in plan.values())
    assert trials.groupby("run_dir")["linear_acc"].nunique().max() <= 1  # a shared run, once
    runs = e2e.mlflow_runs(project)
    assert len(runs) == len(params.plan("smoke", tables))  # a shared config is one run
    # Each table report is a run of its own, its claims' verdicts as the pages give them.
    reports = {r.data.tags["report"]: r for r in e2e.mlflow_runs(project, reports=True)}
    assert sorted(reports) == sorted(tables)
    for table in tables:
        summary = json.loads((project / "reports" / f"{table}.json").read_text())
        tags = reports[table].data.tags
        verdicts = [tags[f"claim.{i + 1:02d}"] for i in range(len(summary["claims"]))]
        assert verdicts == [f"{c['verdict']}: {c['text']}" for c in summary["claims"]]
    n_keys = len(flatten(params.resolve("smoke").training()))
    assert all(r.info.status == "FINISHED" and len(r.data.params) == n_keys for r in runs)
    assert {r.data.tags["engine"] for r in runs} == {"snakemake"}
    # The project copy is a fresh `git init` with no commit: there is none to name.
    sources = {(r.data.tags["mlflow.source.git.commit"], r.data.tags["git_dirty"]) for r in runs}
    assert sources == {("unknown", "unknown")}
    _assert_nothing_lost(project, runs)

    again = e2e.run(["snakemake", "-n", "--cores", "2", *target], project)
    assert "Nothing to be done" in again.stdout + again.stderr
    # An evaluation setting is not part of a run's identity: it re-evaluates, never retrains.
    profiles = project / "params" / "profiles.yaml"
    before = profiles.read_text()
    profiles.write_text(before.replace("linear_epochs: 5}", "linear_epochs: 6}"))
    plan = e2e.run(["snakemake", "-n", "--cores", "2", *target], project)
    profiles.write_text(before)
    assert "evaluate " in plan.stdout and "pretrain " not in plan.stdout, plan.stdout
    # An optim setting retrains every run, and re-prepares nothing.
    e2e.edited(profiles, "base_lr: 0.03, weight_decay", "base_lr: 0.05, weight_decay")
    plan = e2e.run(["snakemake", "-n", "--cores", "2", *target], project)
    profiles.write_text(before)
    assert "pretrain " in plan.stdout and "prepare " not in plan.stdout, plan.stdout
    # A new table (sorted first) whose row is Table 3's (c) reuses that run: only its report.
    new_table = project / "params" / "tables" / "acopy.yaml"
    new_table.write_text("rows:\n  c: {overrides: {}, paper: 68.2}\n")
    plan = e2e.run(["snakemake", "-n", "--cores", "2", "reports/acopy.md", *target], project)
    new_table.unlink()
    assert "report " in plan.stdout and "pretrain " not in plan.stdout, plan.stdout

    # A template edit re-renders every report and the index, and trains nothing.
    template = project / "src" / "simsiam_lab" / "templates" / "table.md.j2"
    before, stat = template.read_text(), template.stat()
    template.write_text(before + "\n")
    plan = e2e.run(["snakemake", "-n", "--cores", "2", *target], project)
    template.write_text(before)
    os.utime(template, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # up to date again, for the rest
    assert _planned(plan.stdout) == {"report": len(tables), "index": 1, "all": 1}, plan.stdout
    # A table's claims are its report's input: editing one re-renders that report and the index.
    table3 = project / "params" / "tables" / "table3.yaml"
    stat = table3.stat()
    before = e2e.edited(table3, "lowers accuracy but", "lowers the accuracy but")
    plan = e2e.run(["snakemake", "-n", "--cores", "2", *target], project)
    table3.write_text(before)
    os.utime(table3, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _planned(plan.stdout) == {"report": 1, "index": 1, "all": 1}, plan.stdout


def _image_tree(root: Path, splits: tuple[str, ...], classes: list[str], per_class: int) -> Path:
    from PIL import Image

    for split in splits:
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (36, 40), (i * 30, c % 250, 9)).save(
                    root / split / name / f"{i}.jpg"
                )
    return root


def test_the_readme_s_snakemake_blocks_run_as_printed_in_a_new_shell(project: Path, tmp_path: Path):
    """Each block in a new shell after the set-up, at smoke (readme.SIZED): the main job and
    `all` find the smoke run above, on the README's data path, with nothing left to train; the
    own-images and ImageNet blocks plan their runs on generated data; torchrun trains a row on
    two CPU processes."""
    readme.project_as_cloned(project)
    readme.run(". .venv/bin/activate && export SIMSIAM_DATA", project)  # before every block too
    done = readme.run("snakemake --cores all reports/table3.md\n", project)
    assert "Nothing to be done" in done.stdout + done.stderr, done.stderr
    # `snakemake --report`: one self-contained page that a reader reads in the browser.
    readme.run("snakemake --cores all all  ", project)
    _assert_the_report_shows_every_table(project, Params(project / "params"), SMOKE_TABLES)
    plan = readme.run("--config profile=smoke  # targets before --config", project).stdout
    assert "Nothing to be done" in plan

    flowers = _image_tree(tmp_path / "flowers", ("train", "test"), ["daisy", "rose"], 2)
    subprocess.run(
        ["tar", "czf", "flowers.tar.gz", "-C", flowers, "train", "test"], cwd=tmp_path, check=True
    )
    env = {"FLOWERS": str(tmp_path / "flowers.tar.gz")}
    figure2 = _planned(
        readme.run("reports/figure2.md --config profile=folder", project, **env).stdout
    )
    assert figure2["pretrain"] == 8 and figure2["prepare"] == 1, figure2
    everything = _planned(readme.run("all --config profile=folder", project, **env).stdout)
    assert everything["pretrain"] > 50 and everything["index"] == 1, everything
    wnids = read_class_list(str(project / "params" / "imagenet100.txt"))
    imagenet = _image_tree(tmp_path / "imagenet", ("train", "val"), wnids, 1)
    plans = readme.run("profile=imagenet100", project, IMAGENET=str(imagenet)).stdout
    assert plans.count("This was a dry-run") == 2 and "pretrain " in plans

    readme.run("torchrun --nproc_per_node 4", project)
    trained = json.loads(
        (project / "results" / "smoke" / "ddp" / "c" / "pretrain.json").read_text()
    )
    assert trained["status"] == "ok", trained


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
            # ... and inside the table's HTML page, which shows its figures on its own (issue 36)
            inline = base64.b64encode(_embedded(image)).decode("ascii")
            assert f'src="data:image/png;base64,{inline}"' in text
    assert "The DAG." in description and "README.md" in description
    assert "The smoke profile checks the plumbing only" in description


@pytest.mark.browser
@e2e.NEEDS_CHROMIUM
def test_the_snakemake_report_shows_table3_s_page_and_curves_in_chromium(project: Path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.support.ui import WebDriverWait

    # The README's test above built report.html; run alone, this builds the smoke tables first.
    if not (project / "report.html").is_file():
        target = ["all", *SMOKE]
        e2e.run(["snakemake", "--cores", "8", *target], project)
        e2e.run(["snakemake", "--report", "report.html", *target], project)
    summary = json.loads((project / "reports" / "table3.json").read_text())
    labels = [row.label for row in Params(project / "params").table("table3").rows.values()]
    REPORT_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser = e2e.headless_chromium(webdriver, 1600, 1100)
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
@e2e.NEEDS_CHROMIUM
def test_mlflow_ui_shows_table3_runs_and_their_knn(project: Path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.keys import Keys

    e2e.run(
        ["snakemake", "--cores", "8", "reports/table3.md", "--config", "profile=smoke"], project
    )
    assert README_QUERY in readme.README.read_text()
    runs = e2e.mlflow_runs(project, README_QUERY)
    # One run per config of the five rows, whatever else (DVC, by hand) trained them too.
    assert len(runs) == len({run.data.tags["config_hash"] for run in runs}) == 5

    port = free_port()
    readme.project_as_cloned(project)
    ui = subprocess.Popen(  # the README's command, in a new shell
        ["bash", "-c", readme.script("mlflow ui --backend-store-uri")],
        cwd=project,
        env=readme.new_shell_env(PORT=str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    browser = None
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_http(base, 120)
        browser = e2e.headless_chromium(webdriver, 1800, 1000)
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


def _saved_epoch(state: Path) -> int:
    try:
        return torch.load(state, weights_only=False)["epoch"]
    except (FileNotFoundError, RuntimeError, EOFError):  # not there yet, or being replaced
        return 0


def _pids(session: int, pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-s", str(session), "-f", pattern], capture_output=True)
    return [int(pid) for pid in found.stdout.split()]


# The resume logic is the library's; the DVC variant (a minute more) runs with `pytest -m extended`.
@pytest.mark.parametrize("engine", ["snakemake", pytest.param("dvc", marks=pytest.mark.extended)])
def test_a_killed_engine_s_training_stops_with_it_and_resumes_once(tmp_path: Path, engine: str):
    """kill -9 of the engine mid-training: its pretraining stops with it (no orphan), and the
    README's recovery, run as printed, resumes it to an uninterrupted run's weights, in one
    MLflow run."""
    project = copy_project(tmp_path / "project")
    readme.project_as_cloned(project)
    profiles = project / "params" / "profiles.yaml"  # longer than smoke's 2 epochs: room to kill
    profiles.write_text(
        profiles.read_text().replace("epochs: 2, batch_size: 64", "epochs: 6, batch_size: 64")
    )
    params = Params(project / "params")
    # Where both engines train it (DVC's stage directory is a view of it).
    run = Path("results/smoke/runs") / config_hash(params.resolve("smoke", params.row("table3:a")))
    if engine == "snakemake":
        target = f"{run}/metrics.json"
        cmd = f"snakemake --cores all {target} --config profile=smoke threads=1"
        threads = "--threads 1"
    else:
        use_dvc_profile(project, "smoke")
        cmd = "dvc repro pretrain@table3-a-s0"
        threads = ""  # as dvc.yaml: torch's default
    state = project / run / "state.pt"

    output = tmp_path / "engine.out"
    with output.open("w") as out:  # the orphan's stderr too, where it inherits the engine's
        job = subprocess.Popen(
            ["bash", "-c", readme.new_shell() + cmd],
            cwd=project,
            env=readme.new_shell_env(),
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 300
    while _saved_epoch(state) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    saved = time.monotonic()
    while _saved_epoch(state) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep((time.monotonic() - saved) / 2)  # halfway through epoch 4
    [engine_pid] = _pids(job.pid, "snakemake --cores|dvc repro")
    os.kill(engine_pid, signal.SIGKILL)
    assert job.wait() != 0
    stopped_by = time.monotonic() + 30
    while _pids(job.pid, "simsiam.* pretrain ") and time.monotonic() < stopped_by:
        time.sleep(0.1)
    assert not _pids(job.pid, "simsiam.* pretrain "), "the pretraining outlived its engine"
    logs = [output, *project.glob("logs/smoke/pretrain/*.log")]
    said = "".join(log.read_text() for log in logs)
    assert f"the process that started it (pid {engine_pid}) has ended; stopping" in said
    assert 3 <= _saved_epoch(state) < 6
    assert not (project / run / "checkpoint.pt").exists()
    run_id = (project / run / "mlflow_run_id").read_text().strip()

    if engine == "snakemake":  # the README's recovery, as printed
        readme.run("--rerun-incomplete", project, TARGET=target)
    else:  # the same command, which the README says is all DVC needs
        subprocess.run(
            ["bash", "-c", readme.new_shell() + cmd],
            cwd=project,
            env=readme.new_shell_env(),
            check=True,
            capture_output=True,
        )
    assert not state.exists()
    run = project / run
    if engine == "dvc":  # the stage's directory holds the store's training (as DVC cached it)
        view = project / "results/smoke/dvc/table3-a-s0/checkpoint.pt"
        assert view.read_bytes() == (run / "checkpoint.pt").read_bytes()
    journal = (run / "pretrain.log").read_text()
    assert journal.count(": started, MLflow run") == 1
    assert journal.count(": resumed from ") == 1
    assert journal.count(": ok after 6 epochs") == 1

    reference = tmp_path / "uninterrupted"
    # Same thread count as the engine's job: float sums are only reproducible per thread count.
    # The data the engine prepared for it (Snakemake names its directory by the data's hash).
    [data] = [p.parent.relative_to(project) for p in project.glob("data/*/smoke*/manifest.json")]
    reference_cmd = f"simsiam {threads} pretrain --profile smoke --row table3:a --data {data}"
    e2e.run(
        [*reference_cmd.split(), "--out", str(reference)],
        project,
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/ref.db",
    )
    resumed = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    uninterrupted = torch.load(reference / "checkpoint.pt", weights_only=True)["model"]
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    assert (run / "history.json").read_text() == (reference / "history.json").read_text()

    runs = e2e.mlflow_runs(project)
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "FINISHED")]  # no duplicate
    losses = e2e.mlflow(project).get_metric_history(run_id, "loss")
    assert sorted(m.step for m in losses) == list(range(1, 7))  # every epoch once
