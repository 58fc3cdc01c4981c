"""The README's commands run as printed: every block has a test that runs it (readme.SIZED), and
the blocks that need no trained project run here, each in a new shell after the set-up."""

import ast
import json
import os
import shutil
import tomllib
from pathlib import Path

import pytest
import readme
import torch
from project import copy_project

ROOT = readme.ROOT


def test_every_readme_block_is_run_by_a_test_that_exists():
    blocks = readme.blocks()
    assert len(blocks) >= 10
    for block in blocks:
        keys = [key for key in readme.SIZED if key in block]
        assert len(keys) == 1, (
            f"README block without exactly one readme.SIZED entry: {keys}\n{block}"
        )
    for key, entry in readme.SIZED.items():
        assert sum(key in block for block in blocks) == 1, f"{key!r} is not in exactly one block"
        readme.sized(key)  # every substitution's README words are in its block
        module, name = entry.test.split("::")
        tree = ast.parse((ROOT / "tests" / f"{module}.py").read_text())
        functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert name in functions, f"{entry.test} (runs {key!r}) does not exist"


def test_ci_runs_the_readme_s_test_command_and_the_main_job_sets_up_the_same():
    """.ci/run's test line is the README's (pip quiet); the main job's set-up is its subset."""
    test_block = readme.sized("&& pytest\n")  # the set-up taken off
    (full,) = [b for b in readme.blocks() if "&& pytest\n" in b]
    ci = (ROOT / ".ci" / "run").read_text()
    assert full.replace("pip install -e", "pip install -q -e") in ci
    main_job = next(b for b in readme.blocks() if "snakemake --cores all reports/table3.md\n" in b)
    assert readme.SETUP.search(main_job)[1] == "dev" and readme.SETUP.search(full)[1] == "dev,bench"
    assert test_block.startswith("export SIMSIAM_DATA=$PWD/../shared/datasets/cifar10-jpeg.tar.gz")


def test_ci_runs_the_tests_that_train_again_at_another_thread_count():
    """A test that asserts where a training lands must hold at any thread count, where the
    floats part (issue 37): after the README's command, .ci/run runs the `trains` tests again
    with one worker and every core, and the README says so."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\npytest -m trains -n 0\n" in ci
    assert ci.index("&& pytest\n") < ci.index("\npytest -m trains -n 0\n")
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert any(marker.startswith("trains:") for marker in ini["markers"])
    assert "`pytest -m trains -n 0`" in readme.README.read_text()


def test_a_new_shell_has_no_venv_and_no_data_until_the_readme_s_line():
    env = readme.new_shell_env()
    assert "SIMSIAM_DATA" not in env and "VIRTUAL_ENV" not in env
    assert str(Path(os.sys.prefix) / "bin") not in env["PATH"].split(os.pathsep)


def _checkout_copy(tmp_path: Path) -> Path:
    """A clone's files as the README's checkout commands see them: tests, benchmarks, package."""
    project = copy_project(tmp_path / "project")
    for name in ("tests", "benchmarks"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "reports/benchmarks.md", "reports/benchmarks.json"):
        (project / name).parent.mkdir(exist_ok=True)
        shutil.copy2(ROOT / name, project / name)
    readme.project_as_cloned(project)
    return project


@pytest.mark.slow  # one test file under pytest in a new shell: ~15 s
def test_the_readme_s_test_command_runs_in_a_new_shell(tmp_path: Path):
    done = readme.run("&& pytest\n", _checkout_copy(tmp_path))
    assert " passed" in done.stdout and "failed" not in done.stdout, done.stdout


@pytest.mark.slow  # the plan twice and the committed reports read: ~10 s
def test_the_readme_s_next_look_block_runs_in_a_new_shell(tmp_path: Path):
    project = _checkout_copy(tmp_path)
    shutil.copytree(ROOT / "reports" / "cpu", project / "reports" / "cpu")
    seeds = project / "params" / "seeds" / "cpu.yaml"
    before = seeds.read_text()
    done = readme.run("simsiam seeds --profile cpu --dry-run", project)
    assert "waits for seeds" in done.stdout or "runs to train" in done.stdout, done.stdout
    assert seeds.read_text() == before  # a dry run writes nothing


@pytest.mark.slow  # two smoke pretrainings and their report: about a minute
def test_the_readme_s_new_table_block_builds_its_report_in_a_new_shell(tmp_path: Path):
    project = _checkout_copy(tmp_path)
    readme.run("cat > params/tables/projector.yaml", project)
    summary = json.loads((project / "reports" / "projector.json").read_text())
    assert summary["title"].startswith("Projector depth")
    (claim,) = summary["claims"]
    assert claim["text"] == "A 2-layer projector does not collapse."
    assert claim["verdict"] in ("reproduced", "not reproduced", "inconclusive", "not judged")
    runs = (project / "reports" / "projector.runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 2  # a header, a trial a row at smoke


@pytest.mark.slow  # pip's offline dry run, the report rewritten, gpu.sh refusing: ~25 s
def test_the_readme_s_benchmark_block_runs_in_a_new_shell(tmp_path: Path):
    if torch.cuda.is_available():
        pytest.skip("gpu.sh would time the GPU: run it by hand on a CUDA machine")
    project, out = _checkout_copy(tmp_path), tmp_path / "out"
    out.mkdir()
    report = project / "reports" / "benchmarks.md"
    report.write_text("stale\n")  # the block rewrites it from reports/benchmarks.json
    done = readme.run("python benchmarks/run.py --quick", project, OUT=str(out))
    assert "Would install simsiam-lab" in done.stdout
    # ... into what is committed: the report is what its results render.
    assert report.read_text() == (ROOT / "reports" / "benchmarks.md").read_text()
    # gpu.sh, as printed, on a machine without CUDA: one line saying so, and exit status 1.
    (refusal,) = (out / "gpu.err").read_text().strip().splitlines()
    assert refusal.startswith("gpu.sh: no CUDA device visible to "), refusal
    # job_startup.py: a line per source, each with both paths timed.
    lines = [line for line in done.stdout.splitlines() if ": before " in line]
    assert [line.split(":")[0] for line in lines] == ["tree of 2,000 files", "0.01 GB tar"]
    assert all("ms (the run's plan read, checked)" in line for line in lines)


def test_the_readmes_figures_are_the_cpu_study_s_reports():
    """The counts and figures the README and reports/cpu/README.md print are the ones the
    committed reports give (reports/cpu/index.json and each table's JSON), rendered at the
    commit they name."""
    cpu = ROOT / "reports" / "cpu"
    index = json.loads((cpu / "index.json").read_text())
    totals, study = index["totals"], index["study_wide"]
    counts = (
        f"{totals['reproduced']} of the paper's {totals['claims']} claims reproduced, "
        f"{totals['not reproduced']} not reproduced, {totals['inconclusive']} inconclusive, "
        f"{totals['not testable']} not testable at this scale"
    )
    ours = (cpu / "README.md").read_text()
    assert f"## Verdicts: {counts}" in ours
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"At the `cpu` profile the study gives {counts}" in readme
    holm = (
        f"Holm's procedure over its {study['family']} tested comparison claims reproduces "
        f"{study['reproduced_holm']}"
    )
    assert holm in readme and holm in " ".join(ours.split())
    commit = index["commit"]
    assert not commit.endswith("-dirty") and f"rendered at `{commit}`" in ours
    for name, counted in index["tables"].items():
        table = json.loads((cpu / f"{name}.json").read_text())
        power = table["power"] or {}
        seed_std = "–" if power.get("seed_std") is None else f"{power['seed_std']:.2f}"
        row = (
            f"| [{name}]({name}.md) | {counted['reproduced']} / {len(table['claims'])} | "
            f"{counted['not reproduced']} | {counted['inconclusive']} | "
            f"{counted['not testable']} | {seed_std} | {power.get('detects_text', '–')} |"
        )
        assert row in ours, row
        page = (cpu / f"{name}.md").read_text()
        assert f"| git commit | `{commit}` |" in page, name
