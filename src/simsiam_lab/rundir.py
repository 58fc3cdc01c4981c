"""The files of one pretraining's directory: who writes each, and who reads it.

`pretrain` writes all but the evaluation's files, `evaluate` adds metrics.json,
and `report` reads config, history and metrics; Snakemake and dvc.yaml declare the same paths.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path


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
        """The resolved config the run trained with."""
        return self.root / "config.yaml"

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

    def evaluation_inputs(self) -> list[Path]:
        """What `evaluate` reads from the directory."""
        return [self.config, self.checkpoint, self.summary]
