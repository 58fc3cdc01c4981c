"""A fresh copy of the project's DAG (Snakefile, dvc.yaml, params, workflow, library), so a run
starts from nothing and leaves the checkout alone; the pipeline tests and the benchmark use it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
TRACKED = ["Snakefile", "dvc.yaml", ".dvc", ".dvcignore", ".gitignore", "params", "workflow", "src"]


def copy_project(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in TRACKED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "tmp"))
        else:
            shutil.copy2(src, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)  # DVC needs a repository
    return dest


def use_dvc_profile(project: Path, profile: str) -> None:
    """Switch the copy's DVC pipeline to another profile, as the README says (params/pipeline.yaml
    and dvc.yaml, regenerated for that profile's trials)."""
    subprocess.run(
        [sys.executable, "workflow/scripts/dvc_yaml.py", "--profile", profile],
        cwd=project,
        check=True,
        capture_output=True,
    )
