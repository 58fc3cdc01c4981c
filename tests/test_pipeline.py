"""End to end: the smoke Table 3 through Snakemake and through DVC, on real CIFAR-10."""

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from simsiam_lab.config import Params, flatten

ROOT = Path(__file__).parents[1]
ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
TRACKED = ["Snakefile", "dvc.yaml", ".dvc", ".dvcignore", ".gitignore", "params", "workflow", "src"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.environ.get("SIMSIAM_DATA") or ARCHIVE.is_file()),
        reason="needs the CIFAR-10 archive (SIMSIAM_DATA or ../shared/datasets)",
    ),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A fresh copy of the project, so runs start from nothing and leave the checkout alone."""
    dest = tmp_path_factory.mktemp("project")
    for name in TRACKED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "tmp"))
        else:
            shutil.copy2(src, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    data = Path(os.environ.get("SIMSIAM_DATA") or ARCHIVE).resolve()  # runs elsewhere: absolute
    env = dict(os.environ, SIMSIAM_DATA=str(data))
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _mlflow_runs(project: Path) -> list[tuple]:
    with sqlite3.connect(project / ".mlflow" / "mlflow.db") as db:
        return db.execute(
            "SELECT r.run_uuid, r.status, (SELECT COUNT(*) FROM params p WHERE p.run_uuid = "
            "r.run_uuid), (SELECT value FROM latest_metrics m WHERE m.run_uuid = r.run_uuid AND "
            "m.key = 'knn_acc') FROM runs r JOIN experiments e ON r.experiment_id = "
            "e.experiment_id WHERE e.name = 'simsiam-smoke'"
        ).fetchall()


def _report_rows(report: Path) -> list[str]:
    return [line for line in report.read_text().splitlines() if line.startswith("| (")]


def test_snakemake_smoke_all_tables(project: Path):
    dry = _run(
        ["snakemake", "-n", "--cores", "2", "reports/table3.md", "--config", "profile=smoke"],
        project,
    )
    assert "pretrain        5" in dry.stdout  # one job per distinct config of Table 3

    # One thread per job, so two pretrainings log to the MLflow store at once.
    target = ["all", "--config", "profile=smoke", "threads=1"]
    _run(["snakemake", "--cores", "2", *target], project)
    rows = _report_rows(project / "reports" / "table3.md")
    assert [r.split("|")[1].strip() for r in rows] == [
        "(a) none",
        "(b) hidden-only",
        "(c) default",
        "(c') default, affine output BN",
        "(d) all",
    ]
    papers = [r.split("|")[6].strip() for r in rows]  # after the label and four BN columns
    assert [p.split()[0] for p in papers] == ["34.6", "67.4", "68.1", "68.2", "unstable"]
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

    runs = _mlflow_runs(project)
    assert len(runs) == len(params.plan("smoke", tables))  # a shared config is one run
    n_keys = len(flatten(params.resolve("smoke")))
    assert all(status == "FINISHED" and n == n_keys for _, status, n, _ in runs)

    again = _run(["snakemake", "-n", "--cores", "2", *target], project)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_dvc_repro_smoke_table3(project: Path):
    pipeline = project / "params" / "pipeline.yaml"
    pipeline.write_text(pipeline.read_text().replace("profile: cpu", "profile: smoke"))
    (project / "reports" / "table3.md").unlink(missing_ok=True)
    _run(["dvc", "repro", "report-table3"], project)  # `dvc repro` builds every table
    assert len(_report_rows(project / "reports" / "table3.md")) == 5
    shown = _run(["dvc", "metrics", "show", "--json"], project).stdout
    assert "reports/table3.json" in shown
    status = _run(["dvc", "status", "report-table3"], project).stdout
    assert "up to date" in status
