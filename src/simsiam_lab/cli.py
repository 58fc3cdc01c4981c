"""`simsiam` command line: the steps that Snakemake rules and DVC stages call."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import yaml

from .config import (
    EVALUATION,
    Config,
    ConfigError,
    Params,
    PlacementError,
    ReportError,
    Row,
    Trial,
    config_hash,
    flatten,
    load_yaml,
    training_config,
    validate,
)
from .data import DataError, DataSpec, check_source, open_split, prepare
from .rundir import RunDir, make_writable_dir
from .track import TrackingError


def check_prepared(data: dict, prepared: Path) -> dict:
    """The prepared data must be what this config asks for; a mismatch means a stale directory."""
    manifest_path = prepared / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(f"{manifest_path}: not found; run `simsiam prepare` for this profile first")
    manifest = json.loads(manifest_path.read_text())
    # The manifest records the spec's every field, the source by its resolved path (checked by
    # its fingerprint below), and the class list's fingerprint.
    expected = {
        field.name: data[field.name]
        for field in fields(DataSpec)
        if field.name not in ("source", "source_sha256")
    } | {"class_list_sha256": data.get("class_list_sha256")}
    if manifest.get("source_sha256") != data["source_sha256"]:
        raise DataError(
            f"{manifest_path}: prepared from {manifest.get('source')} "
            f"({str(manifest.get('source_sha256'))[:12]}), but the config's data source is now "
            f"{data['source'] or '$SIMSIAM_DATA'} ({str(data['source_sha256'])[:12]}); "
            "re-run `simsiam prepare` for this profile"
        )
    for key, value in expected.items():
        if manifest.get(key) != value:
            raise DataError(
                f"{manifest_path}: {key} = {manifest.get(key)!r} but the config asks for "
                f"{value!r}; re-run `simsiam prepare` for this profile"
            )
    return manifest


def cmd_prepare(args: argparse.Namespace) -> None:
    cfg = Params(args.params).resolve(args.profile)
    manifest = prepare(
        DataSpec.of(cfg["data"]), Path(args.out), download_root=Path(args.download_root)
    )
    counts = {split: sum(c.values()) for split, c in manifest["counts"].items()}
    print(f"prepared {manifest['dataset']} into {args.out}: {counts}")


def cmd_source(args: argparse.Namespace) -> None:
    from .data import resolve_source

    data = Params(args.params).resolve(args.profile)["data"]
    spec = DataSpec.of(data)
    path = resolve_source(spec)
    # Content only, no path: the same archive elsewhere is the same data.
    record = {"dataset": data["dataset"], "source_sha256": data["source_sha256"]}
    out = Path(args.out)
    if not out.is_file() or json.loads(out.read_text()) != record:
        check_source(spec)  # before DVC's prepare deletes the data it has
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    where = Path(path).resolve() if path else "torchvision"
    print(f"data source of {args.profile}: {where} ({record['source_sha256']})")


def _run_tags(profile: str, cfg_hash: str, trials: list[Trial]) -> dict[str, str]:
    """One tag per table whose rows resolve to this config (a shared config is one run)."""
    tags = {"profile": profile, "config_hash": cfg_hash}
    for trial in trials:
        key = f"table.{trial.row.table}"
        tags[key] = ",".join(filter(None, [tags.get(key), trial.ref.split(":", 1)[1]]))
    return tags


def _engine_tags(engine: str, experiment: str) -> dict[str, str]:
    """Which engine started the run and, under `dvc exp run`, the DVC experiment's name (empty
    under `dvc repro`: no tag)."""
    return {"engine": engine} | ({"engine.experiment": experiment} if experiment else {})


def _run_name(cfg: Config, cfg_hash: str, trials: list[Trial], row: Row) -> str:
    """The config's name, whichever engine trains it: every row that trains it, over the tables
    sorted by name (`similarity-cosine+table3-c-seed0-…`), so a shared config is not named
    after one table only, nor after the row it was asked for (DVC asks by a row, Snakemake by
    the hash). A config that no table plans (a --seed beyond the row's trials) is its row's."""
    rows = [trial.row for trial in trials] or [row]
    return f"{'+'.join(f'{r.table}-{r.id}' for r in rows)}-seed{cfg['seed']}-{cfg_hash[:6]}"


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


def handed_over(params: Params, resolved: str, run: str | None) -> tuple[Config, list[Trial]]:
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
    return cfg, [params.trial(ref) for ref in refs]


def cmd_pretrain(args: argparse.Namespace) -> None:
    from .progress import progress, write
    from .track import PretrainRun, experiment_description, experiment_name
    from .train import (
        atomic_write_json,
        check_finished,
        check_resumable,
        pretrain,
        save_encoder,
    )

    params = Params(args.params)
    # The trials that train this config, over every table: its MLflow run's table tags, name.
    if args.resolved:
        cfg, trials = handed_over(params, args.resolved, args.config_hash)
        row = trials[0].row
    elif args.row:
        row = params.row(args.row)
        cfg = params.resolve(args.profile, row, args.seed)
        trials = params.plan(args.profile, params.table_names()).get(config_hash(cfg), [])
    else:
        trials = params.run_trials(args.profile, args.config_hash)
        row = trials[0].row
        cfg = params.resolve(args.profile, row, trials[0].seed)
    cfg_hash = config_hash(cfg)
    manifest = check_prepared(cfg["data"], Path(args.data))
    run = RunDir(Path(args.out))
    check_finished(run.root, cfg)
    new = _make_out_dir(run.root)
    if int(os.environ.get("RANK", "0")) != 0:
        pretrain(cfg, Path(args.data), run.root)  # torchrun's other processes: rank 0 records
        return

    def say(line: str) -> None:
        """The console (above the progress bar) and the run's journal, pretrain.log."""
        write(line)
        with run.journal.open("a") as f:
            f.write(line + "\n")

    resuming = check_resumable(run.root, cfg, say)
    try:
        tracked = PretrainRun.open(
            run,
            resuming,
            experiment_name(args.profile),
            _run_name(cfg, cfg_hash, trials, row),
            _run_tags(args.profile, cfg_hash, trials) | _engine_tags(args.engine, args.experiment),
            flatten(training_config(cfg)),
            manifest,
            description=experiment_description(params.description(args.profile)),
        )
    except BaseException:
        if new:  # a refused run leaves no directory behind
            shutil.rmtree(run.root, ignore_errors=True)
        raise
    began = f"resumed from {run.state}" if resuming else "started"
    say(
        f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {row.ref} seed {cfg['seed']} [{cfg_hash}]: "
        f"{began}, MLflow run {tracked.run_id} ==="
    )
    if tracked.abandoned:
        say(f"the earlier attempt's MLflow run {tracked.abandoned} ended as FAILED (abandoned)")

    epochs = progress(total=cfg["optim"]["epochs"], desc="pretrain", unit="epoch")

    def log_epoch(record: dict) -> None:
        step = int(record["epoch"])
        epochs.update(max(0, step - epochs.n))  # a resumed run's replayed epochs count once
        if logged := tracked.log_epoch(record):
            say(f"epoch {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in logged.items()))

    try:
        summary = pretrain(cfg, Path(args.data), run.root, log_epoch)
    except Exception:
        tracked.fail()
        raise
    finally:
        epochs.close()
    summary |= {"config_hash": cfg_hash, "mlflow_run_id": tracked.run_id, "profile": args.profile}
    # What it trained on: the dataset, where it was read from and its content, and the path
    # (data.loader decides that from the data and the config alone).
    summary |= {
        "dataset": manifest["dataset"],
        "data_source": manifest["source"],
        "data_source_sha256": manifest["source_sha256"],
        "data_prepared": str(Path(args.data)),
        "data_format": manifest.get("format"),
    }
    history = json.loads(run.history.read_text())
    # What training read; `evaluate` takes the evaluation settings from params/ at its time.
    run.config.write_text(yaml.safe_dump(training_config(cfg), sort_keys=False))
    artifacts = [run.config, run.history]
    if summary["status"] != "skipped":
        from .report import plot_curves  # matplotlib and scipy: only once training is done

        plot_curves([(f"{row.ref} seed {cfg['seed']}", cfg, history)], run.curves)
        artifacts.append(run.curves)
    # The encoder goes to MLflow only, not into the run directory (the engines' outputs).
    with tempfile.TemporaryDirectory() as scratch:
        if summary["status"] == "ok" and encoder_artifact(params, args.encoder_artifact):
            artifacts.append(save_encoder(run.checkpoint, Path(scratch)))
        tracked.finish(summary["status"], artifacts)
    atomic_write_json(summary, run.summary)
    say(
        f"{row.ref} [{cfg_hash}]: {summary['status']} after {summary['epochs_completed']} "
        f"epochs, {summary['wall_s']:.0f} s, final loss {summary['final_loss']}"
    )


def cmd_evaluate(args: argparse.Namespace) -> None:
    import torch

    from .distributed import device
    from .evaluate import evaluation_metrics
    from .track import log_evaluation
    from .train import atomic_write_json, build_model, initial_weights

    run = RunDir(Path(args.run))
    if missing := [p.name for p in (run.config, run.summary) if not p.is_file()]:
        raise DataError(
            f"{run.root}: no finished pretraining ({', '.join(missing)} missing); run "
            f"`simsiam pretrain --out {run.root}` first"
        )
    trained_with = yaml.safe_load(run.config.read_text())
    if args.settings:
        settings = json.loads(args.settings)
    else:
        settings = Params(args.params).run_config(args.profile, config_hash(trained_with))
        settings = settings[EVALUATION]
    cfg = trained_with | {EVALUATION: settings}
    summary = json.loads(run.summary.read_text())
    final = ("knn_acc", "linear_acc", "random_init_knn", "random_init_linear", "z_top_share")
    metrics = dict(summary) | dict.fromkeys(final)
    if summary["status"] == "ok":
        dev = device()
        model = build_model(cfg).to(dev)
        state = torch.load(run.checkpoint, map_location=dev, weights_only=True)
        model.load_state_dict(state["model"])
        train, test = open_split(Path(args.data), "train"), open_split(Path(args.data), "test")
        metrics |= evaluation_metrics(model, cfg, train, test, initial_weights(cfg))
    metrics["evaluated_at"] = round(time.time(), 1)  # the end of the run's last job
    atomic_write_json(metrics | {EVALUATION: settings}, run.metrics)
    logged = {k: metrics[k] for k in final if metrics[k] is not None}
    log_evaluation(
        summary["mlflow_run_id"], logged, summary["epochs_completed"], settings, run.metrics
    )
    print(
        f"{run.root}: kNN {metrics['knn_acc']}, linear {metrics['linear_acc']} (random init: "
        f"kNN {metrics['random_init_knn']}, linear {metrics['random_init_linear']})"
    )


def cmd_report(args: argparse.Namespace) -> None:
    import pandas as pd

    from .report import (
        accuracy_bars,
        build_context,
        curves_by_row,
        plot_accuracy_bars,
        plot_table_curves,
        render,
        row_results,
        runs_table,
        summary_json,
        table_metrics,
        trial_record,
    )
    from .track import git_commit

    params = Params(args.params)
    table = params.table(args.table)
    run_dirs: dict[str, list[Path]] = {}
    for item in args.run:
        row, eq, path = item.partition("=")
        if not eq or not path:
            raise ConfigError(f"report {args.table}: --run {item!r}: expected ROW=DIR")
        run_dirs.setdefault(row, []).append(Path(path))
    if missing := [r for r in table.rows if r not in run_dirs]:
        raise ConfigError(f"report {args.table}: no --run given for row(s) {', '.join(missing)}")
    manifest_path = Path(args.data) / "manifest.json"
    if not manifest_path.is_file():
        raise ReportError(f"{manifest_path}: missing; run `simsiam prepare` for {args.data} first")
    manifest = json.loads(manifest_path.read_text())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    test_images = sum(manifest.get("counts", {}).get("test", {}).values()) or None
    records = [trial_record(table.name, r, d, test_images) for r in table.rows for d in run_dirs[r]]
    # The report and its verdicts are computed from the tidy table as published, so a reader
    # of <table>.runs.csv has every number they rest on.
    runs_csv = out.with_suffix(".runs.csv")
    runs_table(records).to_csv(runs_csv, index=False)
    rows = row_results(pd.read_csv(runs_csv))
    plot_table_curves(table, rows, out.with_suffix(".png"))
    context = build_context(
        table,
        args.profile,
        rows,
        manifest,
        git_commit(),
        judged=params.verdicts(args.profile),
        curves=out.with_suffix(".png").name,
    )
    out.write_text(render(context))
    out.with_suffix(".html").write_text(render(context, "html"))  # what a browser shows
    out.with_suffix(".json").write_text(json.dumps(summary_json(context), indent=2) + "\n")
    accuracy_bars(table, context).to_csv(out.with_suffix(".accuracy.csv"), index=False)
    # Numbers only, for `dvc metrics` and `dvc exp show` (they drop or garble the rest).
    out.with_suffix(".metrics.json").write_text(json.dumps(table_metrics(context), indent=2))
    for quantity, curve in curves_by_row(table, rows).items():
        # "NaN" where a row has no value at an epoch: Vega skips it, and draws an empty cell as 0
        curve.to_csv(out.with_suffix(f".{quantity}.csv"), index=False, na_rep="NaN")
    plot_accuracy_bars(table, context, out.with_suffix(".accuracy.png"))
    print(f"wrote {out} and {out.with_suffix('.html').name}")


def cmd_index(args: argparse.Namespace) -> None:
    import pandas as pd

    from .report import index_json, load_summary, render_index
    from .track import git_commit

    paths = [Path(path) for path in args.summaries]
    summaries = [load_summary(path) for path in paths]
    tables = [path.with_suffix(".runs.csv") for path in paths]
    if missing := [p for p in tables if not p.is_file()]:
        raise ReportError(f"{missing[0]}: missing; rerun `simsiam report` for its table")
    out = Path(args.out)
    commit = git_commit()
    out.write_text(render_index(summaries, commit))
    out.with_suffix(".html").write_text(render_index(summaries, commit, "html"))
    out.with_suffix(".json").write_text(json.dumps(index_json(summaries, commit), indent=2) + "\n")
    # Every table's trials in one tidy table, for pandas or a spreadsheet.
    runs = out.with_name("runs.csv")
    pd.concat(map(pd.read_csv, tables), ignore_index=True).to_csv(runs, index=False)
    print(f"wrote {out}, {out.with_suffix('.html')}, {out.with_suffix('.json')} and {runs}")


def cmd_init_tracking(args: argparse.Namespace) -> None:
    from .track import Tracker, experiment_description, experiment_name, tracking_uri

    description = experiment_description(Params(args.params).description(args.profile))
    Tracker().experiment_id(experiment_name(args.profile), description)
    print(f"MLflow store {tracking_uri()}: experiment {experiment_name(args.profile)} ready")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: use a whole number of threads >= 1")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simsiam", description=__doc__)
    parser.add_argument("--params", default="params", help="params directory (default: params)")
    parser.add_argument("--threads", type=_positive_int, help="CPU threads for torch")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "prepare", help="decode a profile's dataset once into uint8 arrays, or index it to stream"
    )
    p.add_argument("--profile", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--download-root", default="data/downloads")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("source", help="record a profile's data source and its fingerprint")
    p.add_argument("--profile", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_source)

    p = sub.add_parser("pretrain", help="train one table row's config")
    p.add_argument("--profile", required=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--row", help="TABLE:ROW, e.g. table3:c")
    which.add_argument(
        "--config-hash",
        help="a resolved config's hash (Snakemake's run name): the config itself, whichever "
        "tables' rows share it, so adding a table never renames a run",
    )
    p.add_argument("--seed", type=int, help="one trial of a row with several seeds")
    p.add_argument(
        "--resolved",
        help="with --config-hash: that config and its trials as JSON, "
        '{"config": {...}, "trials": ["table3:c@0", ...]}, as the planner resolved them '
        "(Snakemake hands them over: the job then neither rebuilds the plan nor fingerprints "
        "the data source again)",
    )
    p.add_argument("--data", required=True, help="prepared data directory")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument(
        "--engine",
        default="cli",
        help="what started the run, its MLflow tag `engine` (Snakemake passes snakemake, "
        "dvc.yaml dvc; default: cli)",
    )
    p.add_argument(
        "--experiment",
        default="",
        help="the DVC experiment's name ($DVC_EXP_NAME), its MLflow tag `engine.experiment`; "
        "empty: no tag",
    )
    p.add_argument(
        "--encoder-artifact",
        choices=("true", "false"),
        help="log the trained backbone's state_dict as encoder.pt on the MLflow run when it "
        "ends ok (default: params/pipeline.yaml's encoder_artifact, else true; not part of the "
        "config: it changes nothing that trains)",
    )
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("evaluate", help="kNN and linear probe on frozen features of a run")
    p.add_argument(
        "--profile", required=True, help="the profile whose eval settings apply (params/)"
    )
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True)
    p.add_argument(
        "--settings",
        help="the eval settings as JSON, as the planner resolved them (Snakemake hands them "
        "over); default: the profile's for this run's config, which rebuilds the plan",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="render a table's report from its rows' runs")
    p.add_argument("--profile", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--data", required=True, help="prepared data directory (for its manifest)")
    p.add_argument(
        "--run", action="append", default=[], metavar="ROW=DIR", help="once per trial of a row"
    )
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("index", help="one page of every table's claims and verdicts")
    p.add_argument("summaries", nargs="+", help="reports/<table>.json files")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("init-tracking", help="create the MLflow store and the profile's experiment")
    p.add_argument("--profile", required=True)
    p.set_defaults(func=cmd_init_tracking)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        args.func(args)
    except (ConfigError, DataError, PlacementError, ReportError, TrackingError) as err:
        print(f"simsiam {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
