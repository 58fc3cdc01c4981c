import errno
import gzip
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from manifests import SMALL
from project import copy_project

from simsiam_lab import jobs
from simsiam_lab.cli import main
from simsiam_lab.codedeps import imports
from simsiam_lab.config import config_hash
from simsiam_lab.errors import ConfigError, ReportError
from simsiam_lab.study import Params

ROOT = Path(__file__).parents[1]
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_unknown_profile_is_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = main(["pretrain", "--profile", "huge", "--row", "table3:c", "--data", "x", "--out", "y"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "unknown profile 'huge' (available: smoke, cpu" in err


def test_pretrain_without_prepared_data_says_what_to_run(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    args = ["pretrain", "--profile", "smoke", "--row", "table3:c", "--data", str(tmp_path)]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    assert "run `simsiam prepare`" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_evaluate_without_a_finished_pretraining_says_what_to_run(capsys, tmp_path):
    args = ["evaluate", "--run", str(tmp_path / "run")]
    assert main([*args, "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint.pt, pretrain.json missing" in err


def _one_line_error(capsys, argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err


def test_report_and_index_on_missing_or_stale_inputs_say_what_to_rerun(
    capsys, monkeypatch, tmp_path
):
    monkeypatch.chdir(ROOT)
    runs = [f"--run={row}={tmp_path / 'run'}" for row in ("a", "b", "c", "c-affine", "d")]
    report = ["report", "--profile", "smoke", "--table", "table3", "--data", str(tmp_path)]
    _one_line_error(capsys, [*report, *runs, "--out", "r.md"], "run `simsiam prepare`")
    (tmp_path / "manifest.json").write_text("{}")
    _one_line_error(capsys, [*report, *runs, "--out", "r.md"], "lacks 'dataset' (written by an")
    SMALL.write(tmp_path)
    _one_line_error(capsys, [*report, *runs, "--out", "r.md"], "config.yaml: missing")
    _one_line_error(capsys, [*report, "--run", "a", "--out", "r.md"], "expected ROW=DIR")
    # A truncated metrics.json: delete that file alone (re-evaluate), not the trained run.
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "metrics.json").write_text('{"linear_acc": 3')
    _one_line_error(
        capsys,
        [*report, *runs, "--out", "r.md"],
        f"delete {run / 'metrics.json'} alone and rerun: `simsiam evaluate --run {run}` evaluates "
        "again and keeps the training",
    )
    index = ["index", str(tmp_path / "table3.json"), "--out", str(tmp_path / "index.md")]
    _one_line_error(capsys, index, "table3.json: no such report")
    (tmp_path / "table3.json").write_text('{"table": "table3", "claims": []}')
    _one_line_error(capsys, index, "written by another version of simsiam_lab (no 'title')")
    (tmp_path / "table3.json").write_text("{")
    _one_line_error(capsys, index, "not a readable report JSON")
    assert not (tmp_path / "index.md").exists()


def test_a_batch_that_does_not_split_over_the_processes_is_refused():
    from simsiam_lab.errors import ConfigError
    from simsiam_lab.study import Params
    from simsiam_lab.train import check_data_parallel

    cfg = Params(ROOT / "params").resolve("smoke")  # batch 64
    check_data_parallel(cfg, 4)
    with pytest.raises(ConfigError, match=r"optim\.batch_size 64 does not split into 3 processes"):
        check_data_parallel(cfg, 3)


def test_dvc_yaml_is_generated_from_params():
    result = subprocess.run(
        [sys.executable, "workflow/scripts/dvc_yaml.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_dvc_s_training_stages_depend_on_all_they_run_and_no_report_code():
    spec = importlib.util.spec_from_file_location("dvc_yaml", ROOT / "workflow/scripts/dvc_yaml.py")
    dvc_yaml = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dvc_yaml)
    declared = {p.removeprefix("src/simsiam_lab/") for p in dvc_yaml.TRAINING_CODE}
    # What pretrain and evaluate reach: the training commands' imports, closed, and the CLI's
    # own text (its report commands import the verdicts package, which training never runs).
    reached, todo = {"cli.py"}, ["jobs.py", "train.py", "track.py", "progress.py", "config.py"]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo += imports(name)
    assert reached <= declared, reached - declared
    assert not any(p.startswith(("verdicts/", "templates/")) for p in declared)


def test_snakemake_rejects_an_unknown_profile_listing_the_available_ones():
    result = subprocess.run(
        ["snakemake", "-n", "--cores", "1", "--config", "profile=huge"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr  # snakemake prints errors to stdout
    assert "unknown profile 'huge' (available: smoke, cpu, cifar10, imagenet" in output


@pytest.mark.parametrize(
    ("setting", "env", "message"),
    [
        ("threads=-1", {}, "config threads = -1 (params/pipeline.yaml or --config threads=...): "),
        ("tables=table3", {}, "config tables = 'table3' (params/pipeline.yaml or --config tables="),
        ("tables=[nosuch]", {}, "unknown table 'nosuch' (available: figure2, hypothesis,"),
        (
            "threads=1",
            {"MLFLOW_TRACKING_URI": "sqlit:///x.db"},
            "MLFLOW_TRACKING_URI=sqlit:///x.db: unknown scheme 'sqlit'",
        ),
        (
            "threads=1",
            {"MLFLOW_TRACKING_URI": "sqlite:////proc/x.db"},
            "MLFLOW_TRACKING_URI=sqlite:////proc/x.db: cannot write /proc (",
        ),
        (
            "threads=1",
            {"SIMSIAM_DATA": "/etc/hostname"},
            "data source /etc/hostname is not a directory or a .tar.gz/.tgz/.tar/.zip archive",
        ),
    ],
)
def test_snakemake_refuses_a_bad_setting_at_planning_in_one_line(
    setting: str, env: dict[str, str], message: str
):
    result = subprocess.run(
        ["snakemake", "-n", "--cores", "1", "--config", "profile=smoke", setting],
        cwd=ROOT,
        env=os.environ | env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert sum(message in line for line in output.splitlines()) == 1, output
    assert "Failed validating" not in output and "MissingInput" not in output, output


@pytest.mark.slow  # a Snakemake DAG that trains and reports
def test_a_diverged_run_is_evaluated_and_reported_and_the_dag_goes_on(
    tmp_path, monkeypatch, write_prepared
):
    import math

    from simsiam_lab.loss import SimSiamLoss

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    data = write_prepared(tmp_path / "data", 10, 40, 20)  # the smoke profile's shape

    runs = {"cosine": tmp_path / "cosine", "cross-entropy": tmp_path / "ce"}
    for row, out in runs.items():
        if row == "cross-entropy":
            monkeypatch.setattr(SimSiamLoss, "forward", lambda self, p1, *_: p1.sum() * math.nan)
        common = ["--data", str(data), "--out", str(out)]
        assert main(["pretrain", "--row", f"similarity:{row}", "--profile", "smoke", *common]) == 0
        assert main(["evaluate", "--run", str(out), "--data", str(data)]) == 0
    assert json.loads((runs["cross-entropy"] / "metrics.json").read_text())["status"] == "diverged"

    report = tmp_path / "similarity.md"
    args = ["report", "--profile", "smoke", "--table", "similarity", "--data", str(data)]
    args += [a for row, out in runs.items() for a in ("--run", f"{row}={out}")]
    assert main([*args, "--out", str(report)]) == 0
    row = next(line for line in report.read_text().splitlines() if line.startswith("| cross"))
    assert "diverged" in row
    # The browser's page and the accuracy bars, which draw the diverged row without a number.
    assert "<td>diverged</td>" in report.with_suffix(".html").read_text()
    assert report.with_suffix(".accuracy.png").stat().st_size > 10_000
    # A report that fails half-way leaves the previous one whole, and no scratch behind.
    made = {p.name: p.read_bytes() for p in tmp_path.glob("similarity.*")}
    import simsiam_lab.verdicts.report as reporting

    def broken(*args):
        raise ReportError("the accuracy bars broke")

    monkeypatch.setattr(reporting, "plot_accuracy_bars", broken)
    assert main([*args, "--out", str(report)]) == 2
    assert {p.name: p.read_bytes() for p in tmp_path.glob("similarity.*")} == made
    assert not list(tmp_path.glob(".similarity.tmp-*"))


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("foo://bar", "MLFLOW_TRACKING_URI=foo://bar: unknown scheme 'foo'"),
        ("sqlite:////etc/hostname/mlflow.db", "cannot write /etc/hostname (File exists)"),
        # a directory no one may write in, root included (which permission bits do not stop)
        (
            "sqlite:////proc/mlflow.db",
            "MLFLOW_TRACKING_URI=sqlite:////proc/mlflow.db: cannot write /proc (",
        ),
    ],
)
def test_an_unusable_tracking_uri_is_one_line(capsys, monkeypatch, tmp_path, uri, message):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    _one_line_error(capsys, ["init-tracking", "--profile", "smoke"], message)


def test_a_thread_count_below_one_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--threads", "-1", "prepare", "--profile", "smoke", "--out", "x"])
    assert exit_.value.code == 2
    assert "--threads: '-1': use a whole number of threads >= 1" in capsys.readouterr().err


def _image_tree(root: Path, classes: list[str], per_split: dict[str, int]) -> Path:
    """An ImageFolder tree of small solid images: root/<split>/<class>/<i>.jpg."""
    from PIL import Image

    for split, n in per_split.items():
        for c, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 48), (i * 20, c * 20, 0)).save(folder / f"{i}.jpg")
    return root


def _prepared(project: Path, profile: str) -> list[Path]:
    return sorted((project / "data/prepared").glob(f"{profile}-*"))


@pytest.mark.slow
def test_a_failing_snakemake_job_shows_its_error_line_on_the_console(tmp_path):
    project = copy_project(tmp_path / "project")
    tree = _image_tree(tmp_path / "images", ["a", "b"], {"train": 2, "val": 1})
    broken = tree / "train/a/0.jpg"
    broken.write_bytes(b"not a JPEG")  # found when decoded, by the job, not at planning
    result = subprocess.run(
        ["snakemake", "--cores", "1", "prepare", "--config", "profile=folder", f"data={tree}"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    console = result.stdout + result.stderr
    assert "--- last lines of logs/folder/prepare.log:" in console
    assert f"simsiam prepare: error: cannot decode image {broken}" in console


def test_pretrain_refuses_data_prepared_from_another_source(
    capsys, monkeypatch, tmp_path, write_prepared
):
    monkeypatch.chdir(ROOT)
    prepared = write_prepared(
        tmp_path / "prepared", classes=10, train_per_class=40, test_per_class=20
    )
    manifest = json.loads((prepared / "manifest.json").read_text())
    manifest["source_sha256"] = "0" * 64  # prepared from other data than the config names now
    (prepared / "manifest.json").write_text(json.dumps(manifest))
    args = ["pretrain", "--profile", "smoke", "--row", "table3:c", "--data", str(prepared)]
    _one_line_error(capsys, [*args, "--out", str(tmp_path / "run")], "prepared from random images")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_other_data_is_refused_at_planning_or_prepared_beside_and_switching_back_retrains_nothing(
    monkeypatch, tmp_path
):
    from simsiam_lab.config import config_hash
    from simsiam_lab.study import Params

    project = copy_project(tmp_path / "project")
    archive = Path(
        os.environ.get("SIMSIAM_DATA") or ROOT.parent / "shared/datasets/cifar10-jpeg.tar.gz"
    ).resolve()
    params = Params(project / "params")

    def snakemake(source: Path, *args: str, ok: bool = True) -> str:
        result = subprocess.run(
            ["snakemake", "--cores", "1", *args, "--config", "profile=smoke", "threads=1"],
            cwd=project,
            capture_output=True,
            text=True,
            env=dict(os.environ, SIMSIAM_DATA=str(source)),
        )
        assert (result.returncode == 0) == ok, result.stdout + result.stderr
        return result.stdout + result.stderr

    monkeypatch.setenv("SIMSIAM_DATA", str(archive))  # the run's hash holds the data's
    run = f"results/smoke/runs/{config_hash(params.resolve('smoke', params.row('table3:a')))}"
    snakemake(archive, f"{run}/pretrain.json")
    [prepared] = _prepared(project, "smoke")
    made = (prepared / "manifest.json").stat().st_mtime_ns

    same = tmp_path / "copy" / "cifar10.tar.gz"  # the same bytes elsewhere: the same data
    same.parent.mkdir()
    shutil.copy(archive, same)
    assert "Nothing to be done" in snakemake(same, "-n", f"{run}/pretrain.json")

    # Ten classes that are not CIFAR-10's, for a profile that reads CIFAR-10: one line, before
    # any job runs, and the prepared data is left alone.
    wrong = _image_tree(tmp_path / "wrong", [f"c{i}" for i in range(10)], {"train": 1, "test": 1})
    refused = snakemake(wrong, "-n", "prepare", ok=False)
    assert f"profile smoke's data: {wrong} has classes c0, c1, c2, c3, ..., not CIFAR-10's" in (
        refused
    )
    assert sum("not CIFAR-10's" in line for line in refused.splitlines()) == 1, refused

    # CIFAR-10 in other bytes (its tar, uncompressed): prepared beside, not over, the first.
    other = tmp_path / "cifar10.tar"
    other.write_bytes(gzip.decompress(archive.read_bytes()))
    snakemake(other, "prepare")
    assert len(_prepared(project, "smoke")) == 2
    assert (prepared / "manifest.json").stat().st_mtime_ns == made

    assert "Nothing to be done" in snakemake(archive, "-n", f"{run}/pretrain.json")  # back


def test_dvc_s_source_stage_refuses_data_the_profile_cannot_read_before_prepare_runs(
    capsys, monkeypatch, tmp_path
):
    monkeypatch.chdir(ROOT)
    wrong = _image_tree(tmp_path / "wrong", [f"c{i}" for i in range(10)], {"train": 1, "test": 1})
    monkeypatch.setenv("SIMSIAM_DATA", str(wrong))
    out = tmp_path / "smoke.source.json"
    _one_line_error(capsys, ["source", "--profile", "smoke", "--out", str(out)], "not CIFAR-10's")
    assert not out.exists()  # so DVC's prepare stage, which would delete its data, never runs


def test_dvc_s_source_stage_lists_a_source_once_not_on_every_repro(monkeypatch, tmp_path):
    import simsiam_lab.jobs as jobs

    monkeypatch.chdir(ROOT)
    tree = _image_tree(tmp_path / "cifar", CIFAR10, {"train": 1, "test": 1})
    monkeypatch.setenv("SIMSIAM_DATA", str(tree))
    out = tmp_path / "smoke.source.json"
    argv = ["source", "--profile", "smoke", "--out", str(out)]
    checked = []
    monkeypatch.setattr(jobs, "check_source", checked.append)
    assert main(argv) == main(argv) == 0  # the second finds its record (persisted) unchanged
    assert len(checked) == 1
    (tree / "train/cat/1.jpg").write_bytes((tree / "train/cat/0.jpg").read_bytes())
    assert main(argv) == 0 and len(checked) == 2  # other content: listed again


@pytest.mark.slow
def test_your_own_images_through_the_folder_profile(tmp_path):
    project = copy_project(tmp_path / "project")
    flowers = _image_tree(tmp_path / "flowers", ["daisy", "rose", "tulip"], {"train": 12, "val": 3})
    env = {k: v for k, v in os.environ.items() if k != "SIMSIAM_DATA"}
    command = ["snakemake", "--cores", "1", "prepare", "--config", "profile=folder"]
    result = subprocess.run(
        [*command, f"data={flowers}"],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [prepared] = _prepared(project, "folder")
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["dataset"] == "imagefolder" and manifest["source"] == str(flowers)
    assert manifest["classes"] == ["daisy", "rose", "tulip"]
    assert manifest["counts"]["train"] == {"daisy": 12, "rose": 12, "tulip": 12}  # up to 250


@pytest.mark.slow  # two Snakemakes and a live pretraining
def test_a_second_snakemake_is_told_that_a_live_run_holds_the_lock(tmp_path):
    project = copy_project(tmp_path / "project")
    # The first run: the README's venv-installed Snakemake (its process is `.../python3
    # .../snakemake ...`), holding this directory's lock while its one job sleeps.
    sleeper = tmp_path / "Snakefile"
    sleeper.write_text(f'rule sleep:\n    output: "{tmp_path}/slept"\n    shell: "sleep 60"\n')
    holder = subprocess.Popen(
        ["snakemake", "--snakefile", str(sleeper), "--cores", "1"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        locks = project / ".snakemake" / "locks"
        for _ in range(600):
            if any(locks.glob("*")) or holder.poll() is not None:
                break
            time.sleep(0.1)
        assert any(locks.glob("*")), "the first Snakemake took no lock"
        result = subprocess.run(
            ["snakemake", "-n", "--cores", "1", "--config", "profile=smoke"],
            cwd=project,
            capture_output=True,
            text=True,
        )
    finally:
        holder.kill()
    expected = f"Another Snakemake run (pid {holder.pid}) is working in this directory"
    assert expected in result.stderr and "rather than --unlock" in result.stderr


# Table 3's (c) overrides nothing: the baseline, which five other tables' rows also train, and
# which its run's name says (its rows are its tags).
SHARED_ROW = "table3:c"
SHARED_NAME = "baseline-seed0-"


def _shared_hash() -> str:
    from simsiam_lab.config import config_hash
    from simsiam_lab.study import Params

    params = Params(ROOT / "params")
    return config_hash(params.resolve("smoke", params.row(SHARED_ROW)))


def _tracked_run(out: Path):
    """The MLflow run of a run directory, through the client (as the UI reads it)."""
    from simsiam_lab.track import Tracker

    client = Tracker().client
    return client, client.get_run((out / "mlflow_run_id").read_text().strip())


def _killed_after_epoch_1(monkeypatch, argv: list[str]) -> None:
    """Runs `simsiam argv` and stops it after its first epoch as a kill between epochs would:
    no clean-up, so its MLflow run is left RUNNING and its state.pt in place."""
    import simsiam_lab.train as train

    real = train.pretrain

    def killed(cfg, data, out, log_epoch, keep_state=False):
        def log_then_kill(record):
            log_epoch(record)
            if record["epoch"] == 1:
                raise KeyboardInterrupt

        return real(cfg, data, out, log_then_kill, keep_state=keep_state)

    monkeypatch.setattr(train, "pretrain", killed)
    assert main(argv) == 130  # Ctrl-C's one line: the run is left as a kill leaves it
    monkeypatch.setattr(train, "pretrain", real)


@pytest.mark.slow  # a killed and a resumed pretraining
def test_a_resumed_pretraining_appends_to_its_journal_and_keeps_its_mlflow_run(
    monkeypatch, tmp_path, write_prepared
):
    import torch

    import simsiam_lab.train as train
    from simsiam_lab.study import Params

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    prepared = write_prepared(
        tmp_path / "prepared", classes=10, train_per_class=40, test_per_class=20
    )
    args = ["pretrain", "--profile", "smoke", "--row", SHARED_ROW, "--data", str(prepared)]
    args += ["--out", str(tmp_path / "run")]
    _killed_after_epoch_1(monkeypatch, [*args, "--engine", "dvc", "--experiment", "exp-1"])
    assert main(args) == 0  # resumed by hand: still the run DVC started
    journal = (tmp_path / "run" / "pretrain.log").read_text().splitlines()
    starts = [line for line in journal if line.startswith("=== ")]
    assert len(starts) == 2 and "started" in starts[0] and "resumed from" in starts[1]
    assert journal.index(starts[1]) > journal.index(next(x for x in journal if "epoch 1:" in x))
    assert "ok after 2 epochs" in journal[-1]
    summary = json.loads((tmp_path / "run" / "pretrain.json").read_text())
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert (summary["dataset"], summary["data_source"]) == ("cifar10", "random images")
    assert summary["data_source_sha256"] == manifest["source_sha256"]
    assert summary["data_prepared"] == str(prepared)

    # One MLflow run across both attempts, with the tags it began with and the run's files.
    client, run = _tracked_run(tmp_path / "run")
    tags = run.data.tags
    assert tags["mlflow.runName"] == SHARED_NAME + _shared_hash()[:6]  # not hypothesis-k1-… only
    assert tags["engine"] == "dvc" and tags["engine.experiment"] == "exp-1"
    assert len(tags["mlflow.source.git.commit"]) == 40 and tags["git_dirty"] in ("true", "false")
    params = Params(ROOT / "params")
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.note.content"].startswith(params.description("smoke"))
    assert "tags.engine = 'snakemake'" in experiment.tags["mlflow.note.content"]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "config.yaml",
        "history.json",
        "curves.png",
        "encoder.pt",
    }
    # encoder.pt: the trained backbone, the whole of the ResNet the config builds.
    backbone = train.build_model(params.resolve("smoke", params.row(SHARED_ROW))).backbone
    logged = client.download_artifacts(run.info.run_id, "encoder.pt", str(tmp_path))
    backbone.load_state_dict(torch.load(logged, weights_only=True))  # strict: every key
    trained = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(v, trained[f"backbone.{k}"]) for k, v in backbone.state_dict().items())


@pytest.mark.slow  # two pretrainings
def test_training_over_an_unreadable_state_ends_the_earlier_mlflow_run_and_says_so(
    capsys, monkeypatch, tmp_path, write_prepared
):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    prepared = write_prepared(
        tmp_path / "prepared", classes=10, train_per_class=40, test_per_class=20
    )
    out = tmp_path / "run"
    args = ["pretrain", "--profile", "smoke", "--row", "table3:a", "--data", str(prepared)]
    args += ["--out", str(out), "--encoder-artifact", "false"]
    _killed_after_epoch_1(monkeypatch, args)
    first = (out / "mlflow_run_id").read_text().strip()
    state = out / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])  # truncated, as a full disk leaves it
    capsys.readouterr()
    assert main(args) == 0

    moved = f"{state}: unreadable, moved to state.pt.unreadable; training starts over"
    ended = f"the earlier attempt's MLflow run {first} ended as FAILED (abandoned)"
    console, journal = capsys.readouterr().out, (out / "pretrain.log").read_text()
    assert all(line in console and line in journal for line in (moved, ended)), console
    client, second = _tracked_run(out)
    abandoned = client.get_run(first)
    assert (abandoned.info.status, abandoned.data.tags["status"]) == ("FAILED", "abandoned")
    assert (second.info.status, second.data.tags["status"]) == ("FINISHED", "ok")
    runs = client.search_runs([second.info.experiment_id])
    assert {r.info.run_id for r in runs} == {first, second.info.run_id}


@pytest.mark.slow  # pretrainings through the CLI
def test_a_planned_run_has_its_rows_name_and_the_encoder_can_be_left_out(
    monkeypatch, tmp_path, write_prepared
):
    """What an engine's job does: the plan step writes the plan into the run's directory, and
    `pretrain --out` trains it, reading nothing else."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    prepared = write_prepared(
        tmp_path / "prepared", classes=10, train_per_class=40, test_per_class=20
    )
    cfg_hash = _shared_hash()
    planned = ["plan", "--profile", "smoke", "--out", str(tmp_path / "runs")]
    assert main([*planned, "--encoder-artifact", "false", "--table", "similarity"]) == 0
    assert {p.name for p in (tmp_path / "runs").iterdir()} == {
        run for run, trials in Params("params").plan("smoke", ["similarity"]).items()
    }
    out = tmp_path / "runs" / cfg_hash
    assert main(["pretrain", "--data", str(prepared), "--out", str(out)]) == 0
    client, run = _tracked_run(out)
    assert run.data.tags["mlflow.runName"] == SHARED_NAME + cfg_hash[:6]  # as by --row, above
    assert run.data.tags["engine"] == "cli" and "engine.experiment" not in run.data.tags
    assert run.data.tags["status"] == "ok"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"config.yaml", "history.json", "curves.png"}


@pytest.mark.slow  # three smoke pretrainings and two evaluations through the CLI
def test_a_store_trains_a_config_once_for_every_view_and_again_for_other_code(
    capsys, monkeypatch, tmp_path, write_prepared
):
    """--store (DVC's stages): the config trains in store/<hash> and its files are linked into
    each view; a second view finds it trained; a summary of other training code trains again.
    The evaluation with the store's settings is made there once and shared."""
    from simsiam_lab.codedeps import training_code_digest
    from simsiam_lab.track import Tracker

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    data = write_prepared(tmp_path / "data", 10, 40, 20)
    store, first, second = tmp_path / "runs", tmp_path / "view1", tmp_path / "view2"
    row = ["--row", "table3:a", "--profile", "smoke", "--data", str(data), "--store", str(store)]
    assert main(["pretrain", *row, "--out", str(first), "--encoder-artifact", "false"]) == 0
    (home,) = store.iterdir()
    assert home.name == json.loads((first / "plan.json").read_text())["config_hash"]
    summary = json.loads((home / "pretrain.json").read_text())
    assert summary["training_code"] == training_code_digest()
    for name in ("checkpoint.pt", "history.json", "pretrain.json"):
        assert (first / name).read_bytes() == (home / name).read_bytes()
    capsys.readouterr()

    assert main(["pretrain", *row, "--out", str(second), "--encoder-artifact", "false"]) == 0
    assert f"{home}: trained already" in capsys.readouterr().out
    assert (second / "checkpoint.pt").samefile(home / "checkpoint.pt")
    client = Tracker().client
    experiment = client.get_experiment_by_name("simsiam-smoke").experiment_id
    assert len(client.search_runs([experiment])) == 1  # trained once

    for view in (first, second):
        evaluate = ["evaluate", "--run", str(view), "--data", str(data), "--store", str(store)]
        assert main(evaluate) == 0
        assert (view / "metrics.json").read_bytes() == (home / "metrics.json").read_bytes()
    assert capsys.readouterr().out.count(f"{home}: kNN") == 1  # evaluated once, in the store

    (home / "pretrain.json").write_text(json.dumps(summary | {"training_code": "other"}))
    assert main(["pretrain", *row, "--out", str(second), "--encoder-artifact", "false"]) == 0
    assert "trained already" not in capsys.readouterr().out
    assert len(client.search_runs([experiment])) == 2  # trained again, by today's code


@pytest.mark.slow  # pretrainings through the CLI
def test_a_finished_run_of_another_config_is_refused_not_overwritten(
    capsys, monkeypatch, tmp_path, write_prepared
):
    from simsiam_lab.track import Tracker

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    prepared = write_prepared(
        tmp_path / "prepared", classes=10, train_per_class=40, test_per_class=20
    )
    out = tmp_path / "run"
    args = ["pretrain", "--profile", "smoke", "--data", str(prepared), "--out", str(out)]
    assert main([*args, "--row", "table3:a", "--encoder-artifact", "false"]) == 0
    finished = {path.name: path.read_bytes() for path in out.iterdir()}
    capsys.readouterr()
    _one_line_error(capsys, [*args, "--row", "table3:b"], f"{out} holds the run of another")
    assert {path.name: path.read_bytes() for path in out.iterdir()} == finished
    client = Tracker().client
    (experiment,) = [e for e in client.search_experiments() if e.name == "simsiam-smoke"]
    assert len(client.search_runs([experiment.experiment_id])) == 1  # no second run opened


def test_an_out_that_cannot_be_written_is_one_line_and_leaves_nothing(
    capsys, monkeypatch, tmp_path, write_prepared
):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    prepared = write_prepared(
        tmp_path / "prepared", classes=10, train_per_class=40, test_per_class=20
    )
    args = ["pretrain", "--profile", "smoke", "--row", "table3:a", "--data", str(prepared)]
    (tmp_path / "a-file").write_text("")  # root may write anywhere, but not under a file
    _one_line_error(
        capsys, [*args, "--out", str(tmp_path / "a-file" / "run")], "cannot write there"
    )
    if os.geteuid() != 0:  # a directory without write permission, as a user sees it
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        _one_line_error(capsys, [*args, "--out", str(locked)], "cannot write there")
    # A refusal after the directory was made (here: the tracking store) removes it again.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://store")
    assert main([*args, "--out", str(tmp_path / "new" / "run")]) == 2
    assert not (tmp_path / "new" / "run").exists()


class _Planted:
    """A pickle that, loaded as PyTorch's pickle format allows without weights_only, runs a
    command: it would write `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_run_directory_s_planted_pickle_is_refused_and_never_run(
    capsys, monkeypatch, tmp_path, write_prepared
):
    import torch

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    data = write_prepared(tmp_path / "data", 10, 40, 20)
    marker, out = tmp_path / "ran", tmp_path / "run"
    out.mkdir()
    planted = {"config": {}, "model": _Planted(marker)}
    # Resuming: state.pt is read to see whose interrupted run it holds.
    torch.save(planted, out / "state.pt")
    common = ["--profile", "smoke", "--data", str(data)]
    pretrain = ["pretrain", "--row", "table3:a", *common, "--out", str(out)]
    _one_line_error(capsys, pretrain, "state.pt: refused, it is not a file this project writes")
    assert not marker.exists()
    # Evaluating: checkpoint.pt of a run that says it finished.
    (out / "state.pt").unlink()
    assert (out / "config.yaml").is_file() and (out / "plan.json").is_file()  # --row's plan
    (out / "pretrain.json").write_text(json.dumps({"status": "ok", "mlflow_run_id": "x"}))
    torch.save(planted, out / "checkpoint.pt")
    evaluate = ["evaluate", "--run", str(out), "--data", str(data)]
    _one_line_error(capsys, evaluate, "checkpoint.pt: refused, it is not a file this project")
    assert not marker.exists()


@pytest.mark.slow  # a smoke pretraining, once the directory is free
def test_a_second_trainer_is_refused_and_a_killed_one_leaves_no_lock(
    capsys, monkeypatch, tmp_path, write_prepared
):
    """One trainer per run directory: while another process holds the directory (here one
    that only holds it, as a live trainer would), `pretrain` says which pid in one line and
    touches nothing; once that process is killed with SIGKILL the kernel has released the
    lock, and training goes ahead."""
    import signal

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    data = write_prepared(tmp_path / "data", 10, 40, 20)
    out = tmp_path / "run"
    out.mkdir()
    hold = (
        "import sys, time; from simsiam_lab.rundir import RunDir\n"
        "with RunDir(sys.argv[1]).exclusive():\n    print('held', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        argv = ["pretrain", "--row", "table3:a", "--profile", "smoke", "--data", str(data)]
        argv += ["--out", str(out), "--encoder-artifact", "false"]
        _one_line_error(capsys, argv, f"another trainer (pid {holder.pid}) is training this run")
        assert sorted(p.name for p in out.iterdir()) == [".trainer.lock"]
        assert not (tmp_path / "mlflow.db").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert main(argv) == 0
    assert json.loads((out / "pretrain.json").read_text())["status"] == "ok"


@pytest.mark.slow  # a smoke pretraining, then its rerun
def test_a_full_disk_while_recording_loses_no_training(
    capsys, monkeypatch, tmp_path, write_prepared
):
    """The end of a run: its files first, then MLflow, then state.pt. A full tracking store at
    MLflow's turn is one line, and the rerun resumes at the last epoch and only records."""
    import errno

    from simsiam_lab.track import PretrainRun

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    data = write_prepared(tmp_path / "data", 10, 40, 20)
    out = tmp_path / "run"
    argv = ["pretrain", "--row", "table3:a", "--profile", "smoke", "--data", str(data)]
    argv += ["--out", str(out), "--encoder-artifact", "false"]
    store = str(tmp_path / "mlflow-artifacts" / "curves.png")
    finish = PretrainRun.finish

    def full(self, status, artifacts):
        raise OSError(errno.ENOSPC, "No space left on device", store)

    monkeypatch.setattr(PretrainRun, "finish", full)
    assert main(argv) == 2
    err = capsys.readouterr().err  # MLflow's own INFO lines as it makes the store, then ours
    assert "Traceback" not in err and f"{store}: no space left on device" in err.splitlines()[-1]
    assert (out / "state.pt").is_file() and (out / "pretrain.json").is_file()
    monkeypatch.setattr(PretrainRun, "finish", finish)
    assert main(argv) == 0
    assert not (out / "state.pt").exists()
    journal = (out / "pretrain.log").read_text()
    assert f"resumed from {out / 'state.pt'}" in journal
    assert journal.count("epoch 2:") == 1  # the epochs trained once, not again on the rerun


# Both places on a real full disk: tmpfs mounts in a private mount namespace (root, or
# unprivileged user namespaces). Its mounts vanish with it, so the script copies out the store.
FULL_DISK = """
set -u
pretrain() {  # pretrain OUT LOG: a pretraining of table3:a at smoke; its exit status in LOG.rc
    simsiam pretrain --row table3:a --profile smoke --data "$DATA" --out "$1" \
        --encoder-artifact false > "$2" 2>&1
    echo $? > "$2.rc"
}
mount -t tmpfs -o size=100k tmpfs "$SMALL"  # too small for the first state.pt
pretrain "$SMALL/run" "$LOGS/out"
ls -A "$SMALL/run" > "$LOGS/out.ls"
mount -o remount,size=64m "$SMALL"
pretrain "$SMALL/run" "$LOGS/out-rerun"

mount -t tmpfs -o size=20m tmpfs "$STORE"  # filled up once training has begun
export MLFLOW_TRACKING_URI="sqlite:///$STORE/mlflow.db"
pretrain "$RUN" "$LOGS/store" &
until grep -qs ": started, MLflow run" "$RUN/pretrain.log"; do  # or it ended before starting
    kill -0 $! 2> /dev/null || exit 1
    sleep 0.1
done
dd if=/dev/zero of="$STORE/fill" bs=64k 2> /dev/null
wait
rm "$STORE/fill"
pretrain "$RUN" "$LOGS/store-rerun"
cp "$STORE/mlflow.db" "$LOGS/"
"""


def _mount_namespace() -> list[str]:
    """unshare's command for a private mount namespace where tmpfs can be mounted, or a skip."""
    cmd = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "-rm"]
    probe = subprocess.run([*cmd, "mount", "-t", "tmpfs", "tmpfs", "/mnt"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({' '.join(cmd)}: {probe.stderr.decode()[:80]})")
    return cmd


@pytest.mark.slow  # four smoke pretrainings, two cut short by the disk
def test_a_full_disk_under_the_run_or_the_store_is_one_line_and_the_rerun_finishes(
    monkeypatch, tmp_path, write_prepared
):
    """A tmpfs too small for state.pt, and a store whose tmpfs fills mid-training: each is one
    line naming the file and "no space left", leaves no temporary, and the rerun ends ok with
    one MLflow run finished (the cut attempt's ended as abandoned)."""
    from mlflow import MlflowClient

    namespace = _mount_namespace()
    places = {name: tmp_path / name for name in ("SMALL", "STORE", "LOGS")}
    for place in places.values():
        place.mkdir()
    env = dict(os.environ)  # SIMSIAM_DATA as write_prepared read it
    env |= {k: str(v) for k, v in places.items()}
    env["DATA"] = str(write_prepared(tmp_path / "data", 10, 40, 20))
    env["RUN"] = str(tmp_path / "run")
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path}/out-store.db"
    script = [*namespace, "bash", "-c", FULL_DISK]
    subprocess.run(script, cwd=ROOT, env=env, check=True, timeout=600)
    logs = places["LOGS"]

    def said(log: str) -> tuple[int, str]:
        return int((logs / f"{log}.rc").read_text()), (logs / log).read_text().splitlines()[-1]

    small, store = places["SMALL"], places["STORE"]
    assert said("out") == (
        2,
        f"simsiam pretrain: error: {small}/run/state.pt: no space left on device; free space "
        "there and run this again (a finished training is kept, and the rerun only records it)",
    )
    assert "Traceback" not in (logs / "out").read_text()
    assert not [name for name in (logs / "out.ls").read_text().split() if ".tmp" in name]
    assert said("out-rerun")[0] == 0

    code, line = said("store")
    assert code == 2 and line.startswith(f"simsiam pretrain: error: {store}/mlflow.db: no space")
    assert "Traceback" not in (logs / "store").read_text()
    assert said("store-rerun")[0] == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{logs}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("simsiam-smoke").experiment_id])
    statuses = sorted((r.info.status, r.data.tags["status"]) for r in runs)
    assert statuses in ([("FINISHED", "ok")], [("FAILED", "abandoned"), ("FINISHED", "ok")])


def test_a_job_stops_once_the_process_it_watches_has_ended_even_with_sigint_ignored():
    """--stop-with: the job stops as Ctrl-C would once its engine has ended, also where it was
    started with SIGINT ignored (inherited), where interrupting it would otherwise do nothing."""
    engine = subprocess.Popen(["sleep", "1"])
    job = f"""
import signal, sys, time
from simsiam_lab import cli
cli._end_with({engine.pid}, "pretrain")
began = time.monotonic()
try:
    while time.monotonic() - began < 30:
        time.sleep(0.05)
except KeyboardInterrupt:
    print("stopped")
"""
    watcher = subprocess.Popen(
        [sys.executable, "-c", job],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    engine.wait()
    out, err = watcher.communicate(timeout=30)
    assert out == "stopped\n"
    assert f"the process that started it (pid {engine.pid}) has ended; stopping" in err


def test_small_mistakes_in_params_are_one_line_each(capsys, tmp_path, monkeypatch):
    """A duplicate key (the second would win silently), a paper number that is no accuracy,
    and `simsiam` run away from the project's params/."""
    import shutil

    params = tmp_path / "params"
    shutil.copytree(ROOT / "params", params)
    table = params / "tables" / "table3.yaml"
    text = table.read_text()
    table.write_text(text.replace("    paper: 68.2\n", "    paper: 68.2\n    paper: 60.0\n", 1))
    with pytest.raises(
        ConfigError,
        match=r"table3.yaml: malformed YAML \(line \d+, column 5\): "
        "duplicate key 'paper'",
    ):
        Params(params).table("table3")
    table.write_text(text.replace("    paper: 68.2\n", "    paper: -5\n", 1))
    with pytest.raises(ConfigError, match=r"table3.yaml: rows\.\w+\.paper = -5: must be >= 0"):
        Params(params).table("table3")
    monkeypatch.chdir(tmp_path / "params" / "tables")
    _one_line_error(
        capsys,
        ["pretrain", "--profile", "smoke", "--row", "table3:a", "--data", "x", "--out", "y"],
        "no params directory at",
    )


def test_a_run_is_tagged_with_its_rows_with_and_without_their_seeds():
    params = Params("params")
    cfg = params.resolve("smoke", params.row("table3:c"), 0)
    trials = params.plan("smoke", params.table_names())[config_hash(cfg)]
    tags = jobs.run_tags("smoke", "abc", tuple(t.ref for t in trials))
    assert tags["table.table3"] == "c@0" and tags["row.table3"] == "c"
    # The baseline of §4.3 on: one run, each of its tables' rows named.
    assert tags["row.similarity"] == "cosine" and tags["table.similarity"] == "cosine@0"


def test_ctrl_c_and_a_refused_write_are_one_line(capsys, monkeypatch):
    """Ctrl-C in any command, and a write the file system refuses (a read-only path: tested as
    the error it raises, since root, which runs CI, may write anywhere), print one line."""
    from simsiam_lab import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "prepare", interrupted)
    assert main(["prepare", "--profile", "smoke", "--out", "x"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "simsiam prepare: interrupted; run it again" in err
    for number, says in ((errno.EROFS, "read-only file system"), (errno.EACCES, "permission")):

        def refused(args, number=number):
            raise OSError(number, os.strerror(number), "/reports/table3.md")

        monkeypatch.setitem(cli.COMMANDS, "report", refused)
        argv = ["report", "--profile", "smoke", "--table", "table3", "--data", "d", "--out", "o"]
        _one_line_error(capsys, argv, f"/reports/table3.md: {says}")
