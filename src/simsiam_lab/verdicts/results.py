"""A table's trials as its run directories hold them: each trial's config, metrics and history,
grouped by row, and the tidy table of every number a verdict is computed from."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..config import EVALUATION, RunConfig, flatten, training_config
from ..errors import ReportError
from ..rundir import RunDir
from . import stability
from .collapse import COLLAPSED, NOT_COLLAPSED, RULE, Signals
from .stability import FINAL_WINDOW_LOSS
from .stats import Interval, mean_interval


@dataclass(frozen=True)
class RunResult:
    """One trial: its resolved config, final metrics and per-epoch history."""

    config: RunConfig
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    run_dir: Path | None = None  # where it was read from (None: made in memory, by a test)

    @property
    def status(self) -> str:
        return self.metrics["status"]

    @cached_property
    def final(self) -> tuple[float, str] | None:
        """Where the loss ended and how it was read (stability.final_loss)."""
        return stability.final_loss(self.history)

    def __post_init__(self) -> None:
        # The final loss beside the metrics it is compared with, as the collapse rule and the
        # loss comparisons read it.
        self.metrics.setdefault(FINAL_WINDOW_LOSS, None if self.final is None else self.final[0])

    @property
    def signals(self) -> Signals | None:
        """What the collapse rule reads; None for a trial that did not finish training."""
        return Signals.of(self.config, self.metrics) if self.status == "ok" else None

    def collapse(self) -> str | None:
        """collapsed, not collapsed or signals disagree; None for an unfinished trial."""
        signals = self.signals
        return None if signals is None else signals.outcome(RULE)

    @property
    def collapsed(self) -> bool:
        return self.collapse() == COLLAPSED

    @property
    def unstable(self) -> bool:
        """Diverged, or its loss rose (what a trial shows without a reference row's noise)."""
        rise = stability.loss_rise(self.history)
        return self.status == "diverged" or (rise is not None and rise > stability.RULE.rise)


def _read(path: Path, parse: Callable[[str], Any], step: str) -> Any:
    try:
        return parse(path.read_text())
    except FileNotFoundError:
        raise ReportError(
            f"{path}: missing; run `simsiam {step}` for {path.parent} first"
        ) from None
    except (OSError, ValueError, yaml.YAMLError) as err:
        # The least that redoes it: an evaluation's file alone (the training is kept).
        redo = (
            f"delete {path} alone and rerun: `simsiam evaluate --run {path.parent}` evaluates "
            "again and keeps the training"
            if step == "evaluate"
            else f"delete {path.parent} and rerun: it trains again"
        )
        raise ReportError(f"{path}: unreadable ({err}); {redo}") from None


def read_trial(run_dir: Path, test_images: int | None = None) -> RunResult:
    """One trial from its run directory: the config it trained and was evaluated with, the
    pretraining's summary with the evaluation's metrics, and its history. `test_images`: what
    the evaluation was measured on, for runs whose metrics predate it."""
    run = RunDir(run_dir)
    config = _read(run.config, yaml.safe_load, "pretrain")
    metrics = _read(run.metrics, json.loads, "evaluate")
    metrics.setdefault("test_images", test_images)
    # Runs evaluated before metrics.json recorded its settings were evaluated as configured.
    evaluation = metrics.pop(EVALUATION, None) or config.get(EVALUATION)
    config = RunConfig.of(training_config(config) | {EVALUATION: evaluation})
    return RunResult(config, metrics, _read(run.history, json.loads, "pretrain"), run.root)


def read_rows(run_dirs: dict[str, list[Path]], test_images: int | None) -> dict[str, RowResult]:
    """A table's rows, each with the trials read from its run directories."""
    return {
        row: RowResult(row, [read_trial(d, test_images) for d in dirs])
        for row, dirs in run_dirs.items()
    }


def runs_table(table: str, rows: dict[str, RowResult]) -> pd.DataFrame:
    """The tidy results table, one line a trial: its table, row and run directory, then its
    metrics (the final loss the collapse rule reads among them), then its config (dotted
    keys): every number a verdict is computed from."""
    return pd.DataFrame.from_records(
        [
            {"table": table, "row": row.id, "run_dir": str(trial.run_dir)}
            | trial.metrics
            | flatten(trial.config.to_dict())
            for row in rows.values()
            for trial in row.trials
        ]
    )


@dataclass(frozen=True)
class RowResult:
    """A table row: one or more trials (seeds) of one config."""

    id: str
    trials: list[RunResult]

    def values(self, metric: str) -> list[float]:
        return [t.metrics[metric] for t in self.trials if t.metrics.get(metric) is not None]

    def by_seed(self, metric: str) -> dict[int, float]:
        return {
            t.config.seed: t.metrics[metric]
            for t in self.trials
            if t.metrics.get(metric) is not None
        }

    def mean(self, metric: str) -> float | None:
        values = self.values(metric)
        return statistics.fmean(values) if values else None

    def std(self, metric: str) -> float | None:
        values = self.values(metric)
        return statistics.stdev(values) if len(values) > 1 else None

    @property
    def collapsed(self) -> bool:
        return all(t.collapsed for t in self.trials)

    @property
    def unstable(self) -> bool:
        return any(t.unstable for t in self.trials)

    @property
    def status(self) -> str:
        if any(t.status == "skipped" for t in self.trials):
            return "skipped"
        if any(t.status == "diverged" for t in self.trials):
            return "diverged"
        if self.unstable:
            return "unstable"
        if self.collapsed:
            return "collapsed"
        outcomes = [t.collapse() for t in self.trials]
        if all(o == NOT_COLLAPSED for o in outcomes):
            return "ok"
        return "some trials collapsed" if COLLAPSED in outcomes else "collapse signals disagree"

    def gain_over_init(self, alpha: float) -> Interval | None:
        """Linear accuracy minus the same network's at random init, paired by seed."""
        trained, init = self.by_seed("linear_acc"), self.by_seed("random_init_linear")
        gains = [trained[s] - init[s] for s in sorted(trained) if s in init]
        return mean_interval(gains, alpha, f"paired t, {len(gains)} seeds")
