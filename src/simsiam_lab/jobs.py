"""What each `simsiam` command does, one function a command, over the library's modules: the
layer that Snakemake's rules and DVC's stages reach through the CLI (cli.py parses, this runs)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from .config import EVALUATION, RunConfig, config_hash, flatten
from .data import Manifest, check_source, open_split, prepare
from .errors import ConfigError, DataError
from .rundir import RunDir, atomic_write_json, make_writable_dir
from .runplan import RunPlan
from .study import Params

if TYPE_CHECKING:
    from .track import PretrainRun

# The digest of the code a run was trained by, in its summary (codedeps.training_code_digest).
TRAINING_CODE = "training_code"
# What `evaluate` adds to a pretraining's summary (None where training did not end ok).
EVALUATED = ("knn_acc", "linear_acc", "random_init_knn", "random_init_linear", "z_top_share")


def prepare_data(params: Params, profile: str, out: Path, download_root: Path) -> None:
    manifest = prepare(params.resolve(profile).data, out, download_root)
    counts = {split: manifest.images(split) for split in manifest.counts}
    print(f"prepared {manifest.dataset} into {out}: {counts}")


def record_source(params: Params, profile: str, out: Path) -> None:
    """Writes the profile's data source by its content (what DVC's prepare stage depends on)."""
    from .datasource import resolve_source

    data = params.resolve(profile).data
    path = resolve_source(data.source)
    # Content only, no path: the same archive elsewhere is the same data.
    record = {"dataset": data.dataset, "source_sha256": data.source_sha256}
    if not out.is_file() or json.loads(out.read_text()) != record:
        check_source(data)  # before DVC's prepare deletes the data it has
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    where = Path(path).resolve() if path else "torchvision"
    print(f"data source of {profile}: {where} ({record['source_sha256']})")


def run_tags(profile: str, cfg_hash: str, trials: tuple[str, ...]) -> dict[str, str]:
    """Two tags per table whose rows resolve to this config (a shared config is one run): its
    rows with their seeds (`table.table3`: `c@0`), and without (`row.table3`: `c`), on which
    MLflow's group-by gives a row's mean, min and max over its seeds."""
    tags = {"profile": profile, "config_hash": cfg_hash}
    for ref in trials:
        table, trial = ref.split(":", 1)
        for key, name in ((f"table.{table}", trial), (f"row.{table}", trial.rpartition("@")[0])):
            tags[key] = ",".join(filter(None, [tags.get(key), name]))
    return tags


def _engine_tags(engine: str, experiment: str) -> dict[str, str]:
    """Which engine started the run and, under `dvc exp run`, the DVC experiment's name (empty
    under `dvc repro`: no tag)."""
    return {"engine": engine} | ({"engine.experiment": experiment} if experiment else {})


def _run_name(plan: RunPlan, params: Params) -> str:
    """The config's name, whichever engine trains it: `baseline-seed0-…` where a row that
    overrides nothing trains it (the config many tables share), else every row that trains it,
    over the tables sorted by name (`table1-no-pred+table3-…`). Its rows are its tags either way
    (run_tags)."""
    if any(not params.row(ref).overrides for ref in plan.rows):
        name = "baseline"
    else:
        name = "+".join(row.replace(":", "-") for row in plan.rows)
    return f"{name}-seed{plan.config.seed}-{plan.config_hash[:6]}"


def _make_out_dir(root: Path) -> bool:
    """Creates --out, or says in one line why it cannot; whether it is new."""
    new = not root.exists()
    try:
        make_writable_dir(root)
    except OSError as err:
        raise ConfigError(
            f"--out {root}: cannot write there ({err.strerror}); pick a writable directory"
        ) from None
    return new


def plan_row(
    params: Params, profile: str, row_ref: str, seed: int | None, artifact: str | None
) -> RunPlan:
    """The plan of one row's trial, for a person at the command line: resolved once, over
    every table (the rows that share its config name its MLflow run); a config that no table
    plans (a --seed beyond the row's trials) is its row's alone."""
    row = params.row(row_ref)
    cfg = params.resolve(profile, row, seed)
    trials = params.plan(profile, params.table_names()).get(config_hash(cfg))
    refs = tuple(t.ref for t in trials) if trials else (f"{row.ref}@{cfg.seed}",)
    return RunPlan(profile, cfg, refs, artifact != "false")


def plan_runs(
    params: Params, profile: str, root: Path, artifact: str, tables: list[str], by_trial: bool
) -> None:
    """The plan step: every config of these tables' trials at this profile, its plan written
    into its run directory under `root`, named by the config's hash (Snakemake's) or, with
    `by_trial`, by its first trial over every table (dvc.yaml's stages, whose paths are fixed
    when it is written). The trials are every table's: they name the config's MLflow run."""
    plan = {
        cfg_hash: trials
        for cfg_hash, trials in params.plan(profile, params.table_names()).items()
        if any(t.row.table in tables for t in trials)
    }
    written = 0
    for cfg_hash, trials in plan.items():
        cfg = params.resolve(profile, trials[0].row, trials[0].seed)
        run = RunPlan(profile, cfg, tuple(t.ref for t in trials), artifact == "true")
        written += run.write(RunDir(root / (trials[0].key if by_trial else cfg_hash)))
    print(f"planned {len(plan)} runs of profile {profile} under {root} ({written} files written)")


def pretrain_run(
    params: Params,
    data: Path,
    out: Path,
    *,
    plan: RunPlan | None = None,
    store: Path | None = None,
    engine: str = "cli",
    experiment: str = "",
    artifact: str | None = None,
) -> None:
    """Trains one config into run directory `out` (resuming from its state.pt), tracked in
    MLflow: the plan the plan step wrote there, or `plan` (a row named at the command line),
    which is written there first. `artifact` (true/false) overrides the plan's encoder
    artifact. With `store` (the profile's runs, where Snakemake trains), `out` is a view: the
    config trains in store/<its hash>, or is found there finished by either engine, and its
    trained files are linked into `out`, so that a config trains once whichever engine asks."""
    view = RunDir(out)
    named, plan = plan is not None, plan or RunPlan.read(view)
    if store is None:
        _pretrain(params, data, view, plan, named, False, engine, experiment, artifact)
        return
    if named:
        plan.write(view)
    home = RunDir(store / plan.config_hash)
    _pretrain(params, data, home, plan, True, True, engine, experiment, artifact)
    if int(os.environ.get("RANK", "0")) == 0:
        view.share(home, home.trained())


def _pretrain(
    params: Params,
    data: Path,
    rundir: RunDir,
    plan: RunPlan,
    write_plan: bool,
    reuse: bool,
    engine: str,
    experiment: str,
    artifact: str | None,
) -> None:
    """pretrain_run in one directory: its plan written there first where `write_plan`, and
    with `reuse`, a training found finished there kept as it is."""
    from .progress import progress, write
    from .track import PretrainRun, experiment_description, experiment_name
    from .train import check_resumable, pretrain

    cfg = plan.config
    manifest = Manifest.read(data)
    manifest.check(cfg.data, data)
    new = _make_out_dir(rundir.root)
    if int(os.environ.get("RANK", "0")) != 0:
        pretrain(cfg, data, rundir.root)  # torchrun's other processes: rank 0 records
        return

    with rundir.exclusive():  # one trainer per run directory
        if write_plan:  # the row's plan, once no other trainer holds the directory
            plan.write(rundir)
        if reuse and _trained_by_this_code(rundir):
            print(f"{rundir.root}: trained already ({plan.config_hash}); kept as it is")
            return

        def say(line: str) -> None:
            """The console (above the progress bar) and the run's journal, pretrain.log."""
            write(line)
            with rundir.journal.open("a") as f:
                f.write(line + "\n")

        resuming = check_resumable(rundir.root, cfg, say)
        try:
            tracked = PretrainRun.open(
                rundir,
                resuming,
                experiment_name(plan.profile),
                _run_name(plan, params),
                run_tags(plan.profile, plan.config_hash, plan.trials)
                | _engine_tags(engine, experiment),
                flatten(cfg.training()),
                manifest,
                description=experiment_description(params.description(plan.profile)),
            )
        except BaseException:
            if new:  # a refused run leaves no directory behind
                shutil.rmtree(rundir.root, ignore_errors=True)
            raise
        asked = plan.rows[0]
        began = f"resumed from {rundir.state}" if resuming else "started"
        say(
            f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {asked} seed {cfg.seed} "
            f"[{plan.config_hash}]: {began}, MLflow run {tracked.run_id} ==="
        )
        if tracked.abandoned:
            say(f"the earlier attempt's MLflow run {tracked.abandoned} ended as FAILED (abandoned)")

        epochs = progress(total=cfg.optim.epochs, desc="pretrain", unit="epoch")

        def log_epoch(record: dict) -> None:
            step = int(record["epoch"])
            epochs.update(max(0, step - epochs.n))  # a resumed run's replayed epochs count once
            if logged := tracked.log_epoch(record):
                say(f"epoch {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in logged.items()))

        try:
            summary = pretrain(cfg, data, rundir.root, log_epoch, keep_state=True)
        except Exception:
            tracked.fail()
            raise
        finally:
            epochs.close()
        keep_encoder = plan.encoder_artifact if artifact is None else artifact == "true"
        _record(plan, manifest, data, rundir, summary, tracked, keep_encoder)
        say(
            f"{asked} [{plan.config_hash}]: {summary['status']} after "
            f"{summary['epochs_completed']} epochs, {summary['wall_s']:.0f} s, final loss "
            f"{summary['final_loss']}"
        )


def _trained_by_this_code(rundir: RunDir) -> bool:
    """Whether a training ended there, run by today's training code (a store's run is keyed by
    its config alone: after a fix to the training, it trains again)."""
    from .codedeps import training_code_digest

    if not rundir.finished():
        return False
    try:
        summary = json.loads(rundir.summary.read_text())
    except (OSError, ValueError):
        return False
    return summary.get(TRAINING_CODE) == training_code_digest()


def _record(
    plan: RunPlan,
    manifest: Manifest,
    data: Path,
    rundir: RunDir,
    summary: dict,
    tracked: PretrainRun,
    keep_encoder: bool,
) -> None:
    """A finished training's files, then its MLflow run, then state.pt's removal: a failure
    while recording (a full disk, the tracking store) leaves state.pt at the last epoch, and a
    rerun only records."""
    from .codedeps import training_code_digest
    from .train import save_encoder

    cfg = plan.config
    summary |= {
        "config_hash": plan.config_hash,
        "mlflow_run_id": tracked.run_id,
        "profile": plan.profile,
        TRAINING_CODE: training_code_digest(),
    }
    # What it trained on: the dataset, where it was read from and its content, and the path
    # (data.loader decides that from the data and the config alone).
    summary |= {
        "dataset": manifest.dataset,
        "data_source": manifest.source,
        "data_source_sha256": manifest.source_sha256,
        "data_prepared": str(data),
        "data_format": manifest.format,
    }
    artifacts = [rundir.config, rundir.history]
    if summary["status"] != "skipped":
        from .curves import plot_curves  # matplotlib: only once training is done

        history = json.loads(rundir.history.read_text())
        label = f"{plan.rows[0]} seed {cfg.seed}"
        plot_curves([(label, cfg, history)], rundir.curves)
        artifacts.append(rundir.curves)
    atomic_write_json(summary, rundir.summary)
    # The encoder goes to MLflow only, not into the run directory (the engines' outputs).
    with tempfile.TemporaryDirectory() as scratch:
        if summary["status"] == "ok" and keep_encoder:
            artifacts.append(save_encoder(rundir.checkpoint, Path(scratch)))
        tracked.finish(summary["status"], artifacts)
    rundir.state.unlink(missing_ok=True)


def evaluate_run(run: Path, data: Path, store: Path | None = None) -> None:
    """kNN and linear probe of a finished pretraining's frozen features and of the same network
    at random init, with the eval settings of the run's plan, into its metrics.json and MLflow
    run. With `store` (a view's, as pretrain_run's), the evaluation with the settings the store
    planned is the store's, made there once and linked into the view; one with other settings
    (a DVC experiment's) is the view's own."""
    view = RunDir(run)
    if missing := [p.name for p in (view.checkpoint, view.summary) if not p.is_file()]:
        raise DataError(
            f"{view.root}: no finished pretraining ({', '.join(missing)} missing); run "
            f"`simsiam pretrain --out {view.root}` first"
        )
    planned = RunPlan.read(view)
    if store is not None:
        home = RunDir(store / planned.config_hash)
        if home.finished() and RunPlan.read(home).config.eval == planned.config.eval:
            if not _evaluated(home, asdict(planned.config.eval)):
                _evaluate(home, data, planned.config)
            view.share(home, [home.metrics])
            return
    _evaluate(view, data, planned.config)


def _evaluated(rundir: RunDir, settings: dict) -> bool:
    """Whether its metrics.json holds an evaluation with these settings of the training there
    now (the same MLflow run: not one an earlier training left)."""
    try:
        metrics = json.loads(rundir.metrics.read_text())
        trained = json.loads(rundir.summary.read_text())
    except (OSError, ValueError):
        return False
    return metrics.get(EVALUATION) == settings and metrics.get("mlflow_run_id") == trained.get(
        "mlflow_run_id"
    )


def _evaluate(rundir: RunDir, data: Path, cfg: RunConfig) -> None:
    """evaluate_run in one directory, with `cfg`, the config its plan holds."""
    from .distributed import device
    from .evaluate import evaluation_metrics
    from .track import log_evaluation
    from .train import build_model, initial_weights, load_tensors

    started = time.time()
    evaluation = asdict(cfg.eval)
    summary = json.loads(rundir.summary.read_text())
    metrics = dict(summary) | dict.fromkeys(EVALUATED)
    if summary["status"] == "ok":
        dev = device()
        model = build_model(cfg).to(dev)
        state = load_tensors(rundir.checkpoint, dev)
        model.load_state_dict(state["model"])
        train, test = open_split(data, "train"), open_split(data, "test")
        metrics |= evaluation_metrics(model, cfg, train, test, initial_weights(cfg))
    metrics["evaluated_at"] = round(time.time(), 1)  # the end of the run's last job
    metrics["eval_s"] = round(metrics["evaluated_at"] - started, 1)
    atomic_write_json(metrics | {EVALUATION: evaluation}, rundir.metrics)
    logged = {k: metrics[k] for k in EVALUATED if metrics[k] is not None}
    log_evaluation(summary["mlflow_run_id"], logged, evaluation, rundir.metrics)
    print(
        f"{rundir.root}: kNN {metrics['knn_acc']}, linear {metrics['linear_acc']} (random init: "
        f"kNN {metrics['random_init_knn']}, linear {metrics['random_init_linear']})"
    )


def init_tracking(params: Params, profile: str) -> None:
    from .track import Tracker, experiment_description, experiment_name, tracking_uri

    description = experiment_description(params.description(profile))
    Tracker().experiment_id(experiment_name(profile), description)
    print(f"MLflow store {tracking_uri()}: experiment {experiment_name(profile)} ready")
