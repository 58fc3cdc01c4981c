"""The files each step writes, declared once: a pretraining's directory (`RunDir`), a table's
report (`ReportFiles`) and the index over the tables (`IndexFiles`).

The plan step writes a run's config and plan, `pretrain` the training's files, `evaluate` adds
metrics.json, and `report` reads config, history and metrics; Snakemake's rules and dvc.yaml's
stages declare the paths these classes give.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BusyError


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """`path` written whole or not at all: into a temporary file beside it, then renamed; a
    failed write leaves no temporary behind. torch's zip writer reports a full disk as a
    RuntimeError without the path: that is an OSError ENOSPC naming it here."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except RuntimeError as err:
        tmp.unlink(missing_ok=True)
        if shutil.disk_usage(path.parent).free < DISK_FULL_BYTES:
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2) + "\n"))


# Free space below which a failed write is taken for a full disk (a checkpoint is megabytes).
DISK_FULL_BYTES = 1 << 20


def make_writable_dir(directory: Path) -> None:
    """Creates a directory (a run's, the tracking store's) and writes a probe file in it;
    raises OSError where it cannot. Permission bits say nothing for root, nor on a read-only
    mount: only writing does."""
    directory.mkdir(parents=True, exist_ok=True)
    tempfile.TemporaryFile(dir=directory).close()


# Keys of a history.json record beside the epoch's means: the SGD steps done at the epoch's
# end, and the loss of each of the epoch's steps (in order).
STEP, STEP_LOSS = "step", "step_loss"


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        """The training config, whose hash names the run (written by the plan step)."""
        return self.root / "config.yaml"

    @property
    def evaluation(self) -> Path:
        """The eval settings the run is evaluated with (written by the plan step)."""
        return self.root / "eval.json"

    @property
    def plan(self) -> Path:
        """What the pipeline asks of the run beyond its config (runplan.RunPlan)."""
        return self.root / "plan.json"

    @property
    def checkpoint(self) -> Path:
        """The final weights (the last finite ones of a diverged run)."""
        return self.root / "checkpoint.pt"

    @property
    def history(self) -> Path:
        """One record per epoch: loss, std(z), lr, the kNN monitor, each step's loss."""
        return self.root / "history.json"

    @property
    def summary(self) -> Path:
        """Status, steps, wall time and finals of the pretraining."""
        return self.root / "pretrain.json"

    @property
    def state(self) -> Path:
        """Everything a killed run resumes from; deleted when training ends."""
        return self.root / "state.pt"

    @property
    def mlflow_run_id(self) -> Path:
        return self.root / "mlflow_run_id"

    @property
    def journal(self) -> Path:
        """Every attempt's log lines, appended (Snakemake empties its own log per job)."""
        return self.root / "pretrain.log"

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"

    @property
    def metrics(self) -> Path:
        """The evaluation: kNN, linear, random-init controls, with the pretraining summary."""
        return self.root / "metrics.json"

    @property
    def lock(self) -> Path:
        """Held by the one process that trains here (`exclusive`); it holds that process's pid."""
        return self.root / ".trainer.lock"

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """The directory for one trainer while the block runs: an OS lock on `lock`, which the
        kernel releases when the process ends, kill -9 included, so no stale lock is left.
        Another trainer is refused in one line naming the pid that holds it, before it touches
        anything here."""
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode().strip() or "unknown"
            os.close(fd)
            raise BusyError(
                f"{self.root}: another trainer (pid {holder}) is training this run; wait for "
                f"it to end (or stop it: kill {holder}), then run this again"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            # Half-written files of an earlier trainer that died mid-write (a full disk, a
            # kill): no other trainer is here, so none of them is being written.
            for stale in self.root.glob(".*.tmp-*"):
                stale.unlink(missing_ok=True)
            yield
        finally:
            os.close(fd)

    def planned(self) -> list[Path]:
        """What the plan step writes."""
        return [self.config, self.evaluation, self.plan]

    def trained(self) -> list[Path]:
        """What `pretrain` writes that later steps read."""
        return [self.checkpoint, self.history, self.summary]

    def finished(self) -> bool:
        """Whether a training ended here and was recorded (state.pt goes last)."""
        return all(p.is_file() for p in self.trained()) and not self.state.exists()

    def share(self, home: RunDir, files: list[Path]) -> None:
        """These files of `home` (another run directory) in this one, each hard-linked (the
        same bytes, no copy) or copied where the file system has no links between them."""
        self.root.mkdir(parents=True, exist_ok=True)
        for src in files:
            dst = self.root / src.name
            dst.unlink(missing_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)


# The history's per-epoch quantities a table's curves show (one CSV each): their axis labels.
CURVES = {
    "loss": "training loss",
    "z_std_ratio": "std(z)·√d (1 when isotropic, 0 when collapsed)",
    "knn": "kNN accuracy (%)",
}


@dataclass(frozen=True)
class _Page:
    """A rendered page (`page`, Markdown) and the files named after it."""

    page: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "page", Path(self.page))

    def _beside(self, suffix: str) -> Path:
        return self.page.with_suffix(suffix)

    @property
    def html(self) -> Path:
        """The same page for a browser."""
        return self._beside(".html")


@dataclass(frozen=True)
class ReportFiles(_Page):
    """What `simsiam report` writes for one table: `page` (reports/<table>.md) and the files
    named after it."""

    @classmethod
    def of(cls, table: str, root: str | Path = "reports") -> ReportFiles:
        return cls(Path(root) / f"{table}.md")

    @property
    def summary(self) -> Path:
        """Claims, verdicts and rows as JSON: what the index reads."""
        return self._beside(".json")

    @property
    def curves(self) -> Path:
        """The rows' training curves."""
        return self._beside(".png")

    @property
    def accuracy(self) -> Path:
        """The linear accuracy, paper beside ours, a bar a row (for `dvc plots`)."""
        return self._beside(".accuracy.csv")

    @property
    def accuracy_plot(self) -> Path:
        return self._beside(".accuracy.png")

    @property
    def runs(self) -> Path:
        """One line a trial: every number the verdicts are computed from."""
        return self._beside(".runs.csv")

    @property
    def metrics(self) -> Path:
        """Numbers only, per row: what `dvc metrics` and `dvc exp show` read."""
        return self._beside(".metrics.json")

    def curve_table(self, quantity: str) -> Path:
        """One of CURVES per epoch, a column a row (for `dvc plots`)."""
        return self._beside(f".{quantity}.csv")

    @property
    def curve_tables(self) -> list[Path]:
        return [self.curve_table(quantity) for quantity in CURVES]

    @property
    def outputs(self) -> list[Path]:
        """Every file the report writes, the page first, but `metrics` (dvc.yaml declares it
        under `metrics:`, not `outs:`)."""
        return [
            self.page,
            self.html,
            self.curves,
            self.summary,
            self.runs,
            self.accuracy,
            self.accuracy_plot,
            *self.curve_tables,
        ]

    @property
    def index_inputs(self) -> list[Path]:
        """What `simsiam index` reads of it."""
        return [self.summary, self.runs]


@dataclass(frozen=True)
class IndexFiles(_Page):
    """What `simsiam index` writes: `page` (reports/index.md) and the files beside it."""

    @classmethod
    def of(cls, root: str | Path = "reports") -> IndexFiles:
        return cls(Path(root) / "index.md")

    @property
    def counts(self) -> Path:
        """The verdict counts, per table and study-wide."""
        return self._beside(".json")

    @property
    def runs(self) -> Path:
        """Every table's trials in one tidy table."""
        return self.page.with_name("runs.csv")

    @property
    def outputs(self) -> list[Path]:
        return [self.page, self.html, self.counts, self.runs]
