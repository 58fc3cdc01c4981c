"""What a pretrain or evaluate job spends getting its config, on a large data source: as jobs
once did, rebuilding the plan from params/ (every table's configs, the source fingerprinted
again), and as every job of both engines does now, reading the plan that the plan step wrote
into its run directory (`runplan.RunPlan.read`: config.yaml and plan.json, checked).

    python benchmarks/job_startup.py [--files 100000] [--archive-gb 2] [--dir /tmp/startup]

Measured in the same run on a generated ImageFolder tree of `--files` files and a
`--archive-gb` GB tar (their content is never decoded: only names, sizes and bytes are read),
each in a fresh process, as a job starts, beside what planning costs once per pipeline run (the
plan step). Prints one line per source.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROFILE = "folder"  # the profile for one's own ImageFolder tree or archive
# In a fresh interpreter: the library imported, then the timed part alone.
BEFORE = """
import sys, time
from simsiam_lab.config import config_hash
from simsiam_lab.study import Params
params = Params("params")
t = time.perf_counter()
first = params.plan("folder", params.table_names())[sys.argv[1]][0]
assert config_hash(params.resolve("folder", first.row, first.seed)) == sys.argv[1]
print(time.perf_counter() - t)
"""
AFTER = """
import sys, time
from simsiam_lab.rundir import RunDir
from simsiam_lab.runplan import RunPlan
t = time.perf_counter()
RunPlan.read(RunDir(sys.argv[2]))
print(time.perf_counter() - t)
"""


def make_tree(root: Path, files: int, classes: int = 100) -> Path:
    """train/ and test/ (9:1) of `classes` folders of tiny .jpg files, `files` in all."""
    if (root / "done").is_file():
        return root
    for i in range(files):
        split = "test" if i % 10 == 0 else "train"
        folder = root / split / f"class{i % classes:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:06d}.jpg").write_bytes(i.to_bytes(4, "little"))
    (root / "done").touch()
    return root


class _Zeros:
    """A file of `size` zero bytes, read as tarfile reads a member's content."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


def make_archive(path: Path, gigabytes: float) -> Path:
    """A tar of one class folder per split, one large member each: `gigabytes` GB of bytes."""
    if path.is_file():
        return path
    size = int(gigabytes * 2**30) // 2
    with tarfile.open(path, "w") as tar:
        for split in ("train", "test"):
            info = tarfile.TarInfo(f"{split}/class000/big.jpg")
            info.size = size
            tar.addfile(info, _Zeros(size))
    return path


def timed(code: str, source: Path, *argv: str) -> float:
    env = dict(os.environ, SIMSIAM_DATA=str(source))
    done = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def plan_of(source: Path, runs: Path) -> tuple[str, float]:
    """A run's hash, its plan written under `runs` as the plan step writes it, and what
    planning took (once per pipeline run)."""
    os.environ["SIMSIAM_DATA"] = str(source)
    from simsiam_lab.rundir import RunDir
    from simsiam_lab.runplan import RunPlan
    from simsiam_lab.study import Params

    params = Params(ROOT / "params")
    started = time.perf_counter()
    plan = params.plan(PROFILE, params.table_names())
    run, trials = next(iter(plan.items()))
    cfg = params.resolve(PROFILE, trials[0].row, trials[0].seed)
    took = time.perf_counter() - started
    RunPlan(PROFILE, cfg, tuple(t.ref for t in trials), True).write(RunDir(runs / run))
    return run, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--archive-gb", type=float, default=2.0)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/simsiam-startup"))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    sources = {
        f"tree of {args.files:,} files": make_tree(args.dir / "tree", args.files),
        f"{args.archive_gb:g} GB tar": make_archive(args.dir / "big.tar", args.archive_gb),
    }
    print(f"job start-up at the {PROFILE} profile: the config lookup, in a fresh process")
    for name, source in sources.items():
        runs = args.dir / f"{source.name}.runs"
        run, planning = plan_of(source, runs)
        before = timed(BEFORE, source, run)
        after = timed(AFTER, source, run, str(runs / run))
        print(
            f"{name}: before {before:.2f} s a job (plan rebuilt, source fingerprinted), "
            f"after {after * 1000:.1f} ms (the run's plan read, checked); "
            f"planning once per pipeline run {planning:.2f} s"
        )


if __name__ == "__main__":
    main()
