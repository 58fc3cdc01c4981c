"""MLflow tracking: one run per pretraining, one experiment per profile.

The store is `MLFLOW_TRACKING_URI` or, by default, a SQLite file in `.mlflow/` under the working
directory. SQLite serialises writers badly across processes (a fresh store even crashes when two
processes create its tables at once), so every write to a SQLite store goes through one file lock.
Across machines (a cluster) use an MLflow server instead, `http://host:port`: it takes no lock and
keeps the artifacts where the server was told to (workflow/scripts/tracking_server.py starts one).
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import json
import logging
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from filelock import FileLock

from .config import digest
from .rundir import STEP, STEP_LOSS, RunDir, make_writable_dir

if TYPE_CHECKING:
    from mlflow.entities import Run

    from .data import Manifest

DEFAULT_STORE = Path(".mlflow")
# MLflow's usage telemetry, off unless the user turned it on: these machines reach no telemetry
# host, and MLflow 3.17 sets and unsets its session variable in os.environ from a background
# thread while a request copies the environment, which failed one of five concurrent pretraining
# jobs against a tracking server (KeyError '_MLFLOW_TELEMETRY_SESSION_ID' in rest_utils).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# MLflow's SQL store logs each database error's traceback before raising it as an
# MlflowException, which reaches the console as one line (a full disk: _store_lock).
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
# The schemes MLflow's client can store runs under; anything else is a typo in the URI.
SCHEMES = ("", "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


class TrackingError(Exception):
    """The tracking store cannot be used; the message names the URI and the fix."""


def check_tracking_uri(uri: str) -> None:
    """Refuse a URI MLflow cannot store runs under before any training starts."""
    scheme = uri.partition("://")[0] if "://" in uri else ""
    fix = "set MLFLOW_TRACKING_URI to e.g. sqlite:///.mlflow/mlflow.db or http://host:5000"
    if scheme.split("+")[0] not in SCHEMES:
        raise TrackingError(f"MLFLOW_TRACKING_URI={uri}: unknown scheme '{scheme}'; {fix}")
    if db := _sqlite_path(uri):
        try:
            _check_writable(db)
        except OSError as err:
            where = err.filename if err.filename in (str(db), f"{db}.lock") else db.parent
            raise TrackingError(
                f"MLFLOW_TRACKING_URI={uri}: cannot write {where} ({err.strerror}); {fix}"
            ) from None
    if scheme in ("http", "https") and not urlparse(uri).hostname:
        raise TrackingError(f"MLFLOW_TRACKING_URI={uri}: no host; {fix}")


def _check_writable(db: Path) -> None:
    """Writes what the store writes, for real: its directory, the database and its lock where
    they exist (a lock that cannot be made would have every job wait out its timeout)."""
    make_writable_dir(db.parent)
    for path in (db, Path(f"{db}.lock")):
        if path.exists():
            with path.open("r+b"):
                pass


def check_server(uri: str, timeout: float = 10.0) -> None:
    """An http(s) store must answer before a job trains: MLflow's client would retry for
    minutes at the first write, then fail with a traceback."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # a server answered: MLflow reports its own errors (auth, path)
    except urllib.error.URLError as err:
        if isinstance(err.reason, ssl.SSLError):
            return  # TLS settings are MLflow's (MLFLOW_TRACKING_INSECURE_TLS and the like)
        reason = getattr(err.reason, "strerror", None) or str(err.reason)
    except OSError as err:  # a timeout
        reason = err.strerror or str(err) or type(err).__name__
    raise TrackingError(
        f"MLFLOW_TRACKING_URI={uri}: no MLflow server answers ({reason}); start it "
        "(workflow/scripts/tracking_server.py start) or fix the host and port"
    )


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the project's own store: `.mlflow/` in the project root (the
    nearest folder up from here that holds params/baseline.yaml), so a command run from a
    subfolder (src/) writes where the others do; here where no project is found."""
    if found := os.environ.get("MLFLOW_TRACKING_URI"):
        return found
    here = Path.cwd()
    root = next((d for d in (here, *here.parents) if (d / PROJECT_MARK).is_file()), here)
    store = DEFAULT_STORE if root == here else root / DEFAULT_STORE
    return f"sqlite:///{store}/mlflow.db"


PROJECT_MARK = Path("params") / "baseline.yaml"  # what makes a folder the project root


def experiment_name(profile: str) -> str:
    return f"simsiam-{profile}"


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


# How each store says that its disk is full: SQLite, PostgreSQL (DiskFull), a server relaying one.
DISK_FULL = ("database or disk is full", "No space left on device", "DiskFull")


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """One writer at a time on a SQLite store. A store whose disk is full raises ENOSPC naming
    it, as a full run directory does, so the CLI says so in one line."""
    db = _sqlite_path(uri)
    with contextlib.ExitStack() as held:
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            held.enter_context(FileLock(str(db) + ".lock", timeout=600))
        try:
            yield
        except OSError:
            raise
        except Exception as err:
            if any(words in str(err) for words in DISK_FULL):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(db or uri)) from err
            raise


def _git(*args: str) -> str | None:
    """A git command's output in the working directory; None outside a repository or when it
    fails (a fresh `git init` has no HEAD)."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def git_commit() -> str:
    """What the reports print: a short, readable `git describe` (with -dirty)."""
    return _git("describe", "--always", "--dirty", "--abbrev=12") or "unknown"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in the environment nor in the passwd file
        return "unknown"


def source_tags(command: str = "simsiam pretrain") -> dict[str, str]:
    """MLflow's standard tags (the source, commit and creator the UI shows) for a run that
    `command` started here: the full commit, so `git show` finds it, and whether the tracked
    files differed from it (what `-dirty` says in the reports). Both "unknown" outside git or
    before a first commit."""
    commit = _git("rev-parse", "--verify", "--quiet", "HEAD")
    changes = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "mlflow.source.git.commit": commit or "unknown",
        "git_dirty": "unknown" if changes is None else str(bool(changes)).lower(),
        "mlflow.user": _user(),
        "mlflow.source.name": command,
        "mlflow.source.type": "LOCAL",
    }


# MLflow shows this experiment tag as the experiment's description.
DESCRIPTION_TAG = "mlflow.note.content"


def experiment_description(profile_description: str) -> str:
    """The profile's description, and how to pick one table's or one engine's runs out of the
    experiment (it holds every engine's runs of the profile)."""
    return (
        f"{profile_description.strip()}\n\n"
        "One run per config; a table's runs: tags.`table.table3` LIKE '%', an engine's: "
        "tags.engine = 'snakemake' (or 'dvc', 'cli')."
    )


def _retry_duplicate(call: Callable[[], object], attempts: int = 5) -> None:
    """`call`, again where a server store refused it for a row another job inserted at the same
    moment: MLflow's server looks a dataset up, then inserts it, so two jobs logging the same
    dataset at once through it fail the second with a duplicate key (PostgreSQL's UniqueViolation),
    and a retry finds the row and links it."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            call()
            return
        except MlflowException as err:
            if attempt == attempts - 1 or "duplicate key" not in str(err):
                raise
            time.sleep(0.2 * (attempt + 1))


class Tracker:
    """Writes one MLflow run; reopened by run id from the evaluation step."""

    def __init__(self, uri: str | None = None) -> None:
        from mlflow import MlflowClient  # heavy import, only where tracking happens

        self.uri = uri or tracking_uri()
        check_tracking_uri(self.uri)
        check_server(self.uri)
        with _store_lock(self.uri):  # the client creates a fresh store's tables
            self.client = MlflowClient(tracking_uri=self.uri)

    def experiment_id(self, name: str, description: str = "") -> str:
        """The experiment's id, created if need be; a description is set on it when it has
        none (one written in the UI stays)."""
        from mlflow.exceptions import MlflowException

        note = {DESCRIPTION_TAG: description} if description else {}
        with _store_lock(self.uri):
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                db = _sqlite_path(self.uri)
                # Beside the store and named after it (sqlite:///runs.db: runs-artifacts/), so a
                # store in the project root leaves no bare ./artifacts behind.
                artifacts = db.with_name(f"{db.stem}-artifacts").resolve().as_uri() if db else None
                try:
                    return self.client.create_experiment(
                        name, artifact_location=artifacts, tags=note
                    )
                except MlflowException as err:
                    # A server store has no file lock: another job may have created it just now.
                    if err.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    exp = self.client.get_experiment_by_name(name)
            if note and not exp.tags.get(DESCRIPTION_TAG):
                self.client.set_experiment_tag(exp.experiment_id, DESCRIPTION_TAG, description)
            return exp.experiment_id

    def start(
        self,
        experiment: str,
        run_name: str,
        tags: dict[str, str],
        params: dict,
        description: str = "",
    ) -> str:
        from mlflow.entities import Param

        exp_id = self.experiment_id(experiment, description)
        with _store_lock(self.uri):
            run = self.client.create_run(exp_id, run_name=run_name, tags=tags)
            run_id = run.info.run_id
            items = [Param(k, str(v)) for k, v in params.items()]
            for i in range(0, len(items), 100):  # MLflow's per-batch limit on params
                self.client.log_batch(run_id, params=items[i : i + 100])
        return run_id

    def find_or_create(
        self, experiment_id: str, where: str, run_name: str, tags: dict[str, str]
    ) -> tuple[str, bool]:
        """The run of the experiment that the filter `where` finds, else a new one with this
        name and these tags; whether it was found (a report's run, a nested evaluation)."""
        with _store_lock(self.uri):
            found = self.client.search_runs([experiment_id], filter_string=where, max_results=1)
            if found:
                return found[0].info.run_id, True
            created = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
        return created.info.run_id, False

    def reopen(self, run_id: str) -> None:
        with _store_lock(self.uri):
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "status", "running")

    def logged(self, run_id: str) -> set[tuple[str, int]]:
        """(metric, step) pairs already in the run."""
        with _store_lock(self.uri):
            keys = self.client.get_run(run_id).data.metrics
            return {
                (key, m.step) for key in keys for m in self.client.get_metric_history(run_id, key)
            }

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        self.log_points(run_id, [(k, step, v) for k, v in metrics.items()])

    def log_points(self, run_id: str, points: list[tuple[str, int, float]]) -> None:
        """(metric, step, value) points, in batches of MLflow's 1,000 a call."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, step, v in points]
        with _store_lock(self.uri):
            for i in range(0, len(batch), 1000):
                self.client.log_batch(run_id, metrics=batch[i : i + 1000])

    def log_dataset(self, run_id: str, manifest: Manifest) -> None:
        """The prepared data as the run's MLflow dataset input (the UI's "Datasets used"):
        its name, content fingerprint, source, classes and counts."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=manifest.dataset,
            digest=str(manifest.source_sha256)[:36],  # MLflow stores at most 36 characters
            source_type="torchvision" if manifest.source == "torchvision" else "local",
            source=json.dumps({"uri": manifest.source, "sha256": manifest.source_sha256}),
            schema=json.dumps({"classes": manifest.classes}),
            profile=json.dumps(
                {
                    "counts": {split: manifest.images(split) for split in manifest.counts},
                    "stored_size": manifest.stored_size,
                    "format": manifest.format,  # in memory or streamed from the files
                }
            ),
        )
        inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])]
        with _store_lock(self.uri):
            _retry_duplicate(lambda: self.client.log_inputs(run_id, inputs))

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        with _store_lock(self.uri):  # one request, not one a tag (a server is remote)
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: Path) -> None:
        with _store_lock(self.uri):
            self.client.log_artifact(run_id, str(path))

    def finish(self, run_id: str, failed: bool = False) -> None:
        with _store_lock(self.uri):
            self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")

    def end_abandoned(self, run_id: str) -> bool:
        """Ends as FAILED (tag status: abandoned) an earlier attempt's run still RUNNING, which
        training over will not continue; whether there was one."""
        from mlflow.exceptions import MlflowException

        with _store_lock(self.uri):
            try:
                running = self.client.get_run(run_id).info.status == "RUNNING"
            except MlflowException:  # not in this store (another URI then), or deleted
                return False
        if running:
            self.set_tags(run_id, {"status": "abandoned"})
            self.finish(run_id, failed=True)
        return running


class PretrainRun:
    """The MLflow run of one pretraining, from its start, or its reopening after a kill, to
    its end: epochs logged once each however often a run resumes, then artifacts and status."""

    def __init__(
        self,
        tracker: Tracker,
        run_id: str,
        logged: set[tuple[str, int]],
        abandoned: str | None = None,
    ) -> None:
        self.tracker, self.run_id, self._logged = tracker, run_id, logged
        self.abandoned = abandoned  # the earlier attempt's run, ended as FAILED

    @classmethod
    def open(
        cls,
        run_dir: RunDir,
        resuming: bool,
        experiment: str,
        name: str,
        tags: dict[str, str],
        params: dict[str, Any],
        manifest: Manifest,
        description: str = "",
    ) -> PretrainRun:
        """Continues the MLflow run of the interrupted run in run_dir, with the tags it started
        with, else starts one, with MLflow's own tags (so the UI shows the commit, the user and
        the source) and the dataset input, in the experiment with this description."""
        tracker = Tracker()
        if resuming and run_dir.mlflow_run_id.is_file():
            run_id = run_dir.mlflow_run_id.read_text().strip()
            tracker.reopen(run_id)
            return cls(tracker, run_id, tracker.logged(run_id))
        # Training over (a state.pt unreadable, or killed before its first): the earlier
        # attempt's run would stay RUNNING beside this one, with the same tags.
        earlier = run_dir.mlflow_run_id
        earlier_id = earlier.read_text().strip() if earlier.is_file() else None
        abandoned = earlier_id if earlier_id and tracker.end_abandoned(earlier_id) else None
        tags = tags | source_tags() | {"status": "running"}
        run_id = tracker.start(experiment, name, tags, params, description)
        tracker.log_dataset(run_id, manifest)
        run_dir.mlflow_run_id.write_text(run_id + "\n")
        return cls(tracker, run_id, set(), abandoned)

    def log_epoch(self, record: dict[str, Any]) -> dict[str, float]:
        """Logs the epoch's metrics not yet in the run (a resume replays its history), at the
        epoch as their step, and its per-step losses as `step_loss` at each SGD step; returns
        the epoch's metrics it logged."""
        epoch = int(record["epoch"])
        new = {
            k: v
            for k, v in record.items()
            if k not in ("epoch", STEP, STEP_LOSS) and (k, epoch) not in self._logged
        }
        points = [(k, epoch, v) for k, v in new.items()]
        losses = record.get(STEP_LOSS, [])
        first = record.get(STEP, 0) - len(losses) + 1
        points += [
            (STEP_LOSS, first + i, v)
            for i, v in enumerate(losses)
            if (STEP_LOSS, first + i) not in self._logged
        ]
        if points:
            self.tracker.log_points(self.run_id, points)
            self._logged.update((k, step) for k, step, _ in points)
        return new

    def fail(self) -> None:
        self.tracker.set_tags(self.run_id, {"status": "failed"})
        self.tracker.finish(self.run_id, failed=True)

    def finish(self, status: str, artifacts: list[Path]) -> None:
        self.tracker.set_tags(self.run_id, {"status": status})
        for path in artifacts:
            self.tracker.log_artifact(self.run_id, path)
        self.tracker.finish(self.run_id)


# The evaluation settings a record holds (a digest of them): the training run's own (its
# first evaluation's), or a nested run's of its own (tag mlflow.parentRunId).
EVAL_SETTINGS = "eval.settings"


def log_evaluation(
    run_id: str, metrics: dict[str, float], settings: dict[str, Any], path: Path
) -> str:
    """An evaluation as its own record: on the pretraining's run where it holds none yet or
    one with these same settings; else on a run nested under it, one per settings (found again
    by them), so that an evaluation with other settings (a DVC experiment's) never rewrites
    the first's numbers. The settings, the metrics and the metrics file; the record's run id."""
    tracker = Tracker()
    key = digest(settings)
    tags = {EVAL_SETTINGS: key} | {f"eval.{k}": v for k, v in settings.items()}
    with _store_lock(tracker.uri):
        trained = tracker.client.get_run(run_id)
    record = run_id
    if trained.data.tags.get(EVAL_SETTINGS, key) != key:
        record = _nested_evaluation(tracker, trained, key, tags)
    if metrics:
        # At step 0: MLflow's chart view draws a metric no run logged past step 0 as a bar per
        # run (its value), where a single point at the last epoch drew a one-dot line.
        tracker.log_metrics(record, metrics, step=0)
    tracker.set_tags(record, tags)
    tracker.log_artifact(record, path)
    if record != run_id:
        tracker.finish(record)
    return record


def _nested_evaluation(tracker: Tracker, trained: Run, key: str, tags: dict[str, str]) -> str:
    """The run nested under a pretraining's run that holds its evaluation with these settings
    (digest `key`), made if there is none."""
    parent = trained.info.run_id
    run_id, _ = tracker.find_or_create(
        trained.info.experiment_id,
        f"tags.`mlflow.parentRunId` = '{parent}' and tags.`{EVAL_SETTINGS}` = '{key}'",
        f"{trained.info.run_name}-eval-{key[:6]}",
        tags | {"mlflow.parentRunId": parent} | source_tags("simsiam evaluate"),
    )
    return run_id


def log_report(profile: str, summary: dict[str, Any], files: list[Path]) -> str:
    """A table report as one MLflow run in the profile's experiment (`report-<table>`, tag
    `report`), so that the verdicts sit beside the runs they rest on: the counts as metrics,
    each claim's verdict as a tag, a description linking every trial's run, and the pages as
    artifacts. A report rendered again updates its run; returns the run's id."""
    tracker = Tracker()
    experiment = tracker.experiment_id(experiment_name(profile))
    table = summary["table"]
    counts = {v: sum(c["verdict"] == v for c in summary["claims"]) for v in REPORT_VERDICTS}
    claims = {
        f"claim.{i + 1:02d}": f"{c['verdict']}: {c['text']}"[:5000]
        for i, c in enumerate(summary["claims"])
    }
    links = " ".join(
        f"[{run[:8]}](#/experiments/{experiment}/runs/{run})" for run in summary["mlflow_runs"]
    )
    note = "\n".join(
        [f"**{summary['title']}**, profile `{profile}`: its claims and verdicts.", ""]
        + [f"- **{c['verdict']}**: {c['text']}" for c in summary["claims"]]
        + ["", f"Its trials' runs: {links}"]
    )
    tags = {"report": table, "profile": profile, DESCRIPTION_TAG: note} | claims
    tags |= source_tags("simsiam report")
    where = f"tags.report = '{table}'"
    run_id, found = tracker.find_or_create(experiment, where, f"report-{table}", tags)
    if found:
        tracker.reopen(run_id)
    tracker.set_tags(run_id, tags | {"status": "ok"})
    tracker.log_metrics(run_id, {k.replace(" ", "_"): float(n) for k, n in counts.items()}, 0)
    for path in files:
        tracker.log_artifact(run_id, path)
    tracker.finish(run_id)
    return run_id


REPORT_VERDICTS = ("reproduced", "not reproduced", "inconclusive", "not testable", "not judged")
