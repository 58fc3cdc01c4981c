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

import yaml

from .config import EVALUATION, RunConfig, config_hash, flatten, load_yaml, validate
from .data import Manifest, check_source, open_split, prepare
from .errors import ConfigError, DataError
from .rundir import RunDir, make_writable_dir
from .study import Params, Row, Trial

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


def run_tags(profile: str, cfg_hash: str, trials: list[Trial]) -> dict[str, str]:
    """Two tags per table whose rows resolve to this config (a shared config is one run): its
    rows with their seeds (`table.table3`: `c@0`), and without (`row.table3`: `c`), on which
    MLflow's group-by gives a row's mean, min and max over its seeds."""
    tags = {"profile": profile, "config_hash": cfg_hash}
    for trial in trials:
        for key, name in (
            (f"table.{trial.row.table}", trial.ref.split(":", 1)[1]),
            (f"row.{trial.row.table}", trial.row.id),
        ):
            tags[key] = ",".join(filter(None, [tags.get(key), name]))
    return tags


def _engine_tags(engine: str, experiment: str) -> dict[str, str]:
    """Which engine started the run and, under `dvc exp run`, the DVC experiment's name (empty
    under `dvc repro`: no tag)."""
    return {"engine": engine} | ({"engine.experiment": experiment} if experiment else {})


def _run_name(cfg: RunConfig, cfg_hash: str, trials: list[Trial], row: Row) -> str:
    """The config's name, whichever engine trains it: every row that trains it, over the tables
    sorted by name (`similarity-cosine+table3-c-seed0-…`), so a shared config is not named
    after one table only, nor after the row it was asked for (DVC asks by a row, Snakemake by
    the hash). A config that no table plans (a --seed beyond the row's trials) is its row's."""
    rows = [trial.row for trial in trials] or [row]
    return f"{'+'.join(f'{r.table}-{r.id}' for r in rows)}-seed{cfg.seed}-{cfg_hash[:6]}"


def encoder_artifact(params: Params, flag: str | None) -> bool:
    """--encoder-artifact, else params/pipeline.yaml's `encoder_artifact` (what DVC's stage
    reads: a flag in its command would retrain every run when it changes), else true."""
    if flag is not None:
        return flag == "true"
    pipeline = params.root / "pipeline.yaml"
    setting = load_yaml(pipeline).get("encoder_artifact", True) if pipeline.is_file() else True
    return str(setting).lower() == "true"


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


def handed_over(params: Params, resolved: str, run: str | None) -> tuple[RunConfig, list[Trial]]:
    """The config and trials that the planner resolved for run `run` (`--resolved`, JSON), so
    that a job neither rebuilds the plan nor fingerprints the data again; its hash is checked."""
    try:
        found = json.loads(resolved)
        cfg, refs = found["config"], found["trials"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            '--resolved: expected JSON {"config": {...}, "trials": ["TABLE:ROW@SEED", ...]}'
        ) from None
    if run is None or config_hash(cfg) != run:
        raise ConfigError(
            f"--resolved holds config {config_hash(cfg)}, not --config-hash {run}: "
            "pass the two from the same plan (rerun snakemake)"
        )
    validate(cfg, "--resolved")
    return RunConfig.of(cfg), [params.trial(ref) for ref in refs]


def _what_to_train(
    params: Params,
    profile: str,
    run: str | None,
    row_ref: str | None,
    seed: int | None,
    resolved: str | None,
) -> tuple[RunConfig, list[Trial], Row]:
    """The config a pretraining trains, the trials over every table that share it (its MLflow
    run's table tags and name), and the row it was asked for."""
    if resolved:
        cfg, trials = handed_over(params, resolved, run)
        return cfg, trials, trials[0].row
    if row_ref:
        row = params.row(row_ref)
        cfg = params.resolve(profile, row, seed)
        return cfg, params.plan(profile, params.table_names()).get(config_hash(cfg), []), row
    trials = params.run_trials(profile, run)
    return params.resolve(profile, trials[0].row, trials[0].seed), trials, trials[0].row


def pretrain_run(
    params: Params,
    profile: str,
    data: Path,
    out: Path,
    *,
    run: str | None = None,
    row_ref: str | None = None,
    seed: int | None = None,
    resolved: str | None = None,
    engine: str = "cli",
    experiment: str = "",
    artifact: str | None = None,
) -> None:
    """Trains one config into run directory `out` (resuming from its state.pt), tracked in
    MLflow. The config is named by its hash (`run`, with `resolved` as the planner resolved it)
    or by a row and seed (`row_ref`)."""
    from .progress import progress, write
    from .track import PretrainRun, experiment_description, experiment_name
    from .train import (
        atomic_write_json,
        check_finished,
        check_resumable,
        pretrain,
        save_encoder,
    )

    cfg, trials, row = _what_to_train(params, profile, run, row_ref, seed, resolved)
    cfg_hash = config_hash(cfg)
    manifest = Manifest.read(data)
    manifest.check(cfg.data, data)
    rundir = RunDir(out)
    check_finished(rundir.root, cfg)
    new = _make_out_dir(rundir.root)
    if int(os.environ.get("RANK", "0")) != 0:
        pretrain(cfg, data, rundir.root)  # torchrun's other processes: rank 0 records
        return

    with rundir.exclusive():  # one trainer per run directory

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
                experiment_name(profile),
                _run_name(cfg, cfg_hash, trials, row),
                run_tags(profile, cfg_hash, trials) | _engine_tags(engine, experiment),
                flatten(cfg.training()),
                manifest,
                description=experiment_description(params.description(profile)),
            )
        except BaseException:
            if new:  # a refused run leaves no directory behind
                shutil.rmtree(rundir.root, ignore_errors=True)
            raise
        began = f"resumed from {rundir.state}" if resuming else "started"
        say(
            f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {row.ref} seed {cfg.seed} [{cfg_hash}]: "
            f"{began}, MLflow run {tracked.run_id} ==="
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
        summary |= {"config_hash": cfg_hash, "mlflow_run_id": tracked.run_id, "profile": profile}
        # What it trained on: the dataset, where it was read from and its content, and the path
        # (data.loader decides that from the data and the config alone).
        summary |= {
            "dataset": manifest.dataset,
            "data_source": manifest.source,
            "data_source_sha256": manifest.source_sha256,
            "data_prepared": str(data),
            "data_format": manifest.format,
        }
        history = json.loads(rundir.history.read_text())
        # What training read; `evaluate` takes the evaluation settings from params/ at its time.
        rundir.config.write_text(yaml.safe_dump(cfg.training(), sort_keys=False))
        artifacts = [rundir.config, rundir.history]
        if summary["status"] != "skipped":
            from .curves import plot_curves  # matplotlib: only once training is done

            plot_curves([(f"{row.ref} seed {cfg.seed}", cfg, history)], rundir.curves)
            artifacts.append(rundir.curves)
        # The run's files first, then MLflow, then state.pt: a failure while recording (a full
        # disk, the tracking store) leaves state.pt at the last epoch, and a rerun only records.
        atomic_write_json(summary, rundir.summary)
        # The encoder goes to MLflow only, not into the run directory (the engines' outputs).
        with tempfile.TemporaryDirectory() as scratch:
            if summary["status"] == "ok" and encoder_artifact(params, artifact):
                artifacts.append(save_encoder(rundir.checkpoint, Path(scratch)))
            tracked.finish(summary["status"], artifacts)
        rundir.state.unlink(missing_ok=True)
        say(
            f"{row.ref} [{cfg_hash}]: {summary['status']} after {summary['epochs_completed']} "
            f"epochs, {summary['wall_s']:.0f} s, final loss {summary['final_loss']}"
        )


def evaluate_run(
    params: Params, profile: str, run: Path, data: Path, settings: str | None = None
) -> None:
    """kNN and linear probe of a finished pretraining's frozen features and of the same network
    at random init, into its metrics.json and MLflow run. `settings`: the eval section as JSON,
    as the planner resolved it; default: the profile's for this run's config (rebuilds the
    plan)."""

    from .distributed import device
    from .evaluate import evaluation_metrics
    from .track import log_evaluation
    from .train import atomic_write_json, build_model, initial_weights, load_tensors

    started = time.time()
    rundir = RunDir(run)
    if missing := [p.name for p in (rundir.config, rundir.summary) if not p.is_file()]:
        raise DataError(
            f"{rundir.root}: no finished pretraining ({', '.join(missing)} missing); run "
            f"`simsiam pretrain --out {rundir.root}` first"
        )
    trained_with = yaml.safe_load(rundir.config.read_text())
    if settings:
        evaluation = json.loads(settings)
    else:
        evaluation = asdict(params.run_config(profile, config_hash(trained_with)).eval)
    evaluated = trained_with | {EVALUATION: evaluation}
    validate(evaluated, f"{rundir.config} with its eval settings")
    cfg = RunConfig.of(evaluated)
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
    log_evaluation(
        summary["mlflow_run_id"], logged, summary["epochs_completed"], evaluation, rundir.metrics
    )
    print(
        f"{rundir.root}: kNN {metrics['knn_acc']}, linear {metrics['linear_acc']} (random init: "
        f"kNN {metrics['random_init_knn']}, linear {metrics['random_init_linear']})"
    )


def init_tracking(params: Params, profile: str) -> None:
    from .track import Tracker, experiment_description, experiment_name, tracking_uri

    description = experiment_description(params.description(profile))
    Tracker().experiment_id(experiment_name(profile), description)
    print(f"MLflow store {tracking_uri()}: experiment {experiment_name(profile)} ready")
