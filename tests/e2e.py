"""What the end-to-end tests share: the data they run on, how they run a command, MLflow's view
of a project, a headless Chromium. The Snakemake tests (test_pipeline.py) and the DVC tests
(test_pipeline_dvc.py) are two modules, so pytest-xdist (--dist loadfile) runs the two engines'
projects side by side, each built once on its worker."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
SCREENSHOTS = ROOT / "test-artifacts"
MARKS = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.environ.get("SIMSIAM_DATA") or ARCHIVE.is_file()),
        reason="needs the CIFAR-10 archive (SIMSIAM_DATA or ../shared/datasets)",
    ),
]
NEEDS_CHROMIUM = pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)


def env(**extra: str) -> dict[str, str]:
    """The tests' environment for a command: the data by its absolute path (commands run in
    a project copy elsewhere), the project's own MLflow store."""
    data = Path(os.environ.get("SIMSIAM_DATA") or ARCHIVE).resolve()
    environ = dict(os.environ, SIMSIAM_DATA=str(data))
    environ.pop("MLFLOW_TRACKING_URI", None)
    return environ | extra


def run(cmd: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env(**extra), capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def mlflow(project: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project}/.mlflow/mlflow.db")


def mlflow_runs(project: Path, query: str = "", reports: bool = False) -> list:
    """The smoke experiment's training runs (with `reports`, its table reports' runs instead),
    through MLflow's client (as the UI sees them); not the evaluations nested under them."""
    client = mlflow(project)
    experiment = client.get_experiment_by_name("simsiam-smoke")
    found = client.search_runs([experiment.experiment_id], query, max_results=1000)
    return [
        r
        for r in found
        if ("report" in r.data.tags) == reports and "mlflow.parentRunId" not in r.data.tags
    ]


def report_rows(report: Path) -> list[str]:
    """The row table's lines of a table report (the claims below it may start with "(" too)."""
    rows = report.read_text().split("\n## Claims of")[0]
    return [line for line in rows.splitlines() if line.startswith("| (")]


def headless_chromium(webdriver, width: int, height: int):
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(
        service=webdriver.ChromeService(shutil.which("chromedriver")), options=options
    )


def edited(path: Path, old: str, new: str) -> str:
    """Replaces old by new in the file; returns the file as it was."""
    before = path.read_text()
    assert old in before, (path, old)
    path.write_text(before.replace(old, new))
    return before


def dvc_runs(output: str) -> set[str]:
    return set(re.findall(r"Running stage 'pretrain@([^']+)'", output))
