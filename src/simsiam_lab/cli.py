"""`simsiam` command line, the steps that Snakemake's rules and DVC's stages call: the
arguments only; what each command does is jobs.py's."""

from __future__ import annotations

import _thread
import argparse
import errno
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

from . import jobs
from .errors import BusyError, ConfigError, DataError, PlacementError, ReportError
from .runplan import RunPlan
from .study import Params
from .track import TrackingError


def _params(args: argparse.Namespace) -> Params:
    """params/, with the data's fingerprint from --source-record where a command has one."""
    params = Params(args.params)
    if getattr(args, "source_record", None):
        params.use_source_record(args.profile, Path(args.source_record))
    return params


def _named_row(args: argparse.Namespace) -> RunPlan | None:
    """pretrain's --row: that row's plan, resolved here; else None (the plan in --out)."""
    if args.row is None:
        if args.seed is not None or args.profile is not None:
            raise ConfigError("--profile and --seed go with --row: without it, --out's plan is run")
        return None
    if args.profile is None:
        raise ConfigError(f"--row {args.row}: name its profile too (--profile smoke, cpu, ...)")
    return jobs.plan_row(_params(args), args.profile, args.row, args.seed, args.encoder_artifact)


def _report() -> ModuleType:
    """The report commands' module: scipy, pandas and matplotlib, only where a report is made."""
    from .verdicts import report

    return report


# Each command's job (jobs.py, verdicts/report.py), from its parsed arguments.
COMMANDS = {
    "prepare": lambda a: jobs.prepare_data(
        _params(a), a.profile, Path(a.out), Path(a.download_root)
    ),
    "source": lambda a: jobs.record_source(Params(a.params), a.profile, Path(a.out)),
    "plan": lambda a: jobs.plan_runs(
        _params(a),
        a.profile,
        Path(a.out),
        a.encoder_artifact,
        a.table or Params(a.params).table_names(),
        a.dirs == "first-trial",
    ),
    "pretrain": lambda a: jobs.pretrain_run(
        _params(a),
        Path(a.data),
        Path(a.out),
        plan=_named_row(a),
        store=a.store and Path(a.store),
        engine=a.engine,
        experiment=a.experiment,
        artifact=a.encoder_artifact,
    ),
    "evaluate": lambda a: jobs.evaluate_run(Path(a.run), Path(a.data), a.store and Path(a.store)),
    "report": lambda a: _report().report_table(
        Params(a.params), a.profile, a.table, Path(a.data), a.run, Path(a.out)
    ),
    "index": lambda a: _report().report_index([Path(s) for s in a.summaries], Path(a.out)),
    "seeds": lambda a: _report().next_look(
        Params(a.params), a.profile, Path(a.reports), a.dry_run, a.budget_hours
    ),
    "init-tracking": lambda a: jobs.init_tracking(Params(a.params), a.profile),
}


def _stop_with_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stop-with",
        type=_positive_int,
        metavar="PID",
        help="stop, as Ctrl-C would, once process PID has ended: the engine that started this "
        "job ($PPID in Snakemake's and DVC's commands), so a killed engine leaves no orphan",
    )


def _store_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--store",
        help=f"the profile's runs by config hash (results/PROFILE/runs, Snakemake's): {what}, "
        "and its files are linked into this directory (dvc.yaml's stages pass it)",
    )


def _alive(pid: int) -> bool:
    """Whether process `pid` runs: a zombie (killed, not yet reaped) has ended."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):  # no /proc (macOS): kill's answer stands
        return True


def _end_with(pid: int, command: str) -> None:
    """Interrupt the main thread once `pid` has ended. A pretraining then keeps its state.pt
    and its MLflow run, as after Ctrl-C, and the engine's rerun resumes it alone."""

    def watch() -> None:
        while _alive(pid):
            time.sleep(0.5)
        print(
            f"simsiam {command}: the process that started it (pid {pid}) has ended; stopping",
            file=sys.stderr,
        )
        _thread.interrupt_main()

    # A process started with SIGINT ignored (inherited: its starter's own choice) would take
    # interrupt_main for nothing: Ctrl-C's default, once its engine is gone, is what it wants.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=watch, name="stop-with", daemon=True).start()


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: use a whole number of threads >= 1")
    return int(text)


def _source_record(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--source-record",
        help="the profile's data fingerprint as `simsiam source` recorded it (DVC's stages pass "
        "it): the job reads it instead of fingerprinting the data source again",
    )


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
    _source_record(p)

    p = sub.add_parser("source", help="record a profile's data source and its fingerprint")
    p.add_argument("--profile", required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser(
        "plan",
        help="write every config's plan (config.yaml, eval.json, plan.json) into its run "
        "directory under --out: what each pretraining and evaluation then reads",
    )
    p.add_argument("--profile", required=True)
    p.add_argument("--out", required=True, help="the profile's runs, e.g. results/cpu/runs")
    p.add_argument(
        "--table", action="append", help="only these tables' configs (default: every table)"
    )
    p.add_argument(
        "--dirs",
        choices=("config-hash", "first-trial"),
        default="config-hash",
        help="name each run directory by its config's hash (Snakemake's runs), or by its first "
        "trial over every table, table3-a-s0 (dvc.yaml's, fixed when it is written)",
    )
    p.add_argument(
        "--encoder-artifact",
        choices=("true", "false"),
        default="true",
        help="log each trained backbone as encoder.pt on its MLflow run (not part of a config: "
        "it changes nothing that trains)",
    )
    _source_record(p)

    p = sub.add_parser(
        "pretrain",
        help="train the config planned in --out (by the plan step), or a row named here",
    )
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--data", required=True, help="prepared data directory")
    p.add_argument(
        "--row", help="TABLE:ROW, e.g. table3:c: plan that row's config into --out, then train it"
    )
    p.add_argument("--profile", help="with --row: the profile it trains at")
    p.add_argument("--seed", type=int, help="with --row: one trial of a row with several seeds")
    _source_record(p)
    _stop_with_option(p)
    _store_option(p, "the config trains there, or is found there trained by either engine")
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
        "ends ok (default: the plan's, which the pipeline's encoder_artifact sets; true for "
        "--row)",
    )

    p = sub.add_parser(
        "evaluate", help="kNN and linear probe on frozen features of a run, as its plan says"
    )
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--data", required=True, help="prepared data directory")
    _stop_with_option(p)
    _store_option(p, "an evaluation with the settings the store planned is made there once")

    p = sub.add_parser("report", help="render a table's report from its rows' runs")
    p.add_argument("--profile", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--data", required=True, help="prepared data directory (for its manifest)")
    p.add_argument(
        "--run", action="append", default=[], metavar="ROW=DIR", help="once per trial of a row"
    )
    p.add_argument("--out", required=True)

    p = sub.add_parser("index", help="one page of every table's claims and verdicts")
    p.add_argument("summaries", nargs="+", help="reports/<table>.json files")
    p.add_argument("--out", required=True)

    p = sub.add_parser(
        "seeds",
        help="the sequential study's next look: add the seeds its waiting claims need to "
        "params/seeds/PROFILE.yaml, which Snakemake and dvc.yaml read",
    )
    p.add_argument("--profile", required=True)
    p.add_argument(
        "--reports", default="reports", help="the folder of the profile's <table>.json reports"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be trained and its cost only"
    )
    p.add_argument(
        "--budget-hours",
        type=float,
        help="CPU-hours this look may cost: the claims fewest seeds from a decision go first, "
        "the rest wait for a later look",
    )

    p = sub.add_parser("init-tracking", help="create the MLflow store and the profile's experiment")
    p.add_argument("--profile", required=True)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        if getattr(args, "stop_with", None):
            _end_with(args.stop_with, args.command)
        COMMANDS[args.command](args)
    except (BusyError, ConfigError, DataError, PlacementError, ReportError, TrackingError) as err:
        print(f"simsiam {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"simsiam {args.command}: interrupted; run it again to go on (a pretraining "
            "resumes from its last finished epoch)",
            file=sys.stderr,
        )
        return 130
    except OSError as err:
        if err.errno not in WRITE_ERRORS:
            raise
        where = err.filename or "a file it writes"
        print(f"simsiam {args.command}: error: {where}: {WRITE_ERRORS[err.errno]}", file=sys.stderr)
        return 2
    return 0


# What a write refused by the file system means for the user, by errno.
WRITE_ERRORS = {
    errno.ENOSPC: "no space left on device; free space there and run this again (a finished "
    "training is kept, and the rerun only records it)",
    errno.EACCES: "permission denied; make it writable, or write elsewhere (--out)",
    errno.EROFS: "read-only file system; write elsewhere (--out)",
}


if __name__ == "__main__":
    sys.exit(main())
