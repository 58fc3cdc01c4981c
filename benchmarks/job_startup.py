"""What a pretrain or evaluate job spends turning its config hash back into a config, before and
after Snakemake hands the resolved config over (`--resolved`), on a large data source; and what
a DVC stage's job (`--row`) spends resolving its row, with and without the fingerprint that DVC's
source stage recorded (`--source-record`).

    python benchmarks/job_startup.py [--files 100000] [--archive-gb 2] [--dir /tmp/startup]

Before, every job rebuilt the whole plan (`Params.run_config`: every table's configs) and so
fingerprinted the data source again: an archive's sha256, or a walk of every file of a tree.
After, the job reads the config from its command line and checks its hash. A DVC job resolves
its row, which fingerprints the source, unless it reads the source stage's record. All are measured
in the same run on a generated ImageFolder tree of `--files` files and a `--archive-gb` GB tar
(their content is never decoded: only names, sizes and bytes are read), each in a fresh
process, as a job starts. Prints one line per source and path.
"""

from __future__ import annotations

import argparse
import json
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
from simsiam_lab.study import Params
params = Params("params")
t = time.perf_counter()
params.run_config("folder", sys.argv[1])
print(time.perf_counter() - t)
"""
AFTER = """
import sys, time
from simsiam_lab.jobs import handed_over
from simsiam_lab.study import Params
params = Params("params")
t = time.perf_counter()
handed_over(params, sys.stdin.read(), sys.argv[1])
print(time.perf_counter() - t)
"""

# A DVC stage's job: its row resolved, the source fingerprinted, or read from the record.
DVC = """
import sys, time
from simsiam_lab.study import Params
params = Params("params")
t = time.perf_counter()
if len(sys.argv) > 2:
    params.use_source_record("folder", sys.argv[2])
params.resolve("folder", params.trial(sys.argv[1]).row, params.trial(sys.argv[1]).seed)
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


def timed(code: str, source: Path, *argv: str, stdin: str = "") -> float:
    env = dict(os.environ, SIMSIAM_DATA=str(source))
    done = subprocess.run(
        [sys.executable, "-c", code, *argv],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def plan_of(source: Path, record: Path) -> tuple[str, str, str, float]:
    """A run hash, its --resolved JSON and its first trial for the source, and what planning
    took (once per pipeline run, in Snakemake); writes the source's record as DVC's stage does."""
    os.environ["SIMSIAM_DATA"] = str(source)
    from simsiam_lab.study import Params

    params = Params(ROOT / "params")
    started = time.perf_counter()
    plan = params.plan(PROFILE, params.table_names())
    run, trials = next(iter(plan.items()))
    cfg = params.resolve(PROFILE, trials[0].row, trials[0].seed)
    took = time.perf_counter() - started
    fingerprint = cfg.data.source_sha256
    record.write_text(json.dumps({"dataset": cfg.data.dataset, "source_sha256": fingerprint}))
    resolved = json.dumps({"config": cfg.to_dict(), "trials": [t.ref for t in trials]})
    return run, resolved, trials[0].ref, took


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
        record = args.dir / f"{source.name}.source.json"
        run, resolved, trial, planning = plan_of(source, record)
        before = timed(BEFORE, source, run)
        after = timed(AFTER, source, run, stdin=resolved)
        print(
            f"{name}: before {before:.2f} s a job (plan rebuilt, source fingerprinted), "
            f"after {after * 1000:.1f} ms (handed over, hash checked); "
            f"planning once per pipeline run {planning:.2f} s"
        )
        fingerprinted = timed(DVC, source, trial)
        recorded = timed(DVC, source, trial, str(record))
        print(
            f"{name}, a DVC stage's job: {fingerprinted:.2f} s fingerprinting the source, "
            f"{recorded * 1000:.1f} ms with the source stage's record"
        )


if __name__ == "__main__":
    main()
