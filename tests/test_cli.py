import subprocess
import sys
from pathlib import Path

from simsiam_lab.cli import main

ROOT = Path(__file__).parents[1]


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


def test_dvc_yaml_is_generated_from_params():
    result = subprocess.run(
        [sys.executable, "workflow/scripts/dvc_yaml.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


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
