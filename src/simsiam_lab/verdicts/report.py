"""The report commands: `simsiam report`, a table's report from its rows' run directories;
`simsiam index`, the index from the tables' reports; `simsiam seeds`, the sequential study's
next look from them."""

from __future__ import annotations

import base64
import json
import os
import statistics
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from ..data import Manifest
from ..errors import ConfigError, ReportError
from ..rundir import IndexFiles, ReportFiles
from ..study import Params, Table, Trial
from ..track import git_commit, log_report
from .allocation import job_seconds, waiting
from .compare import comparison_count
from .index import index_json, render_index, study_verdicts
from .page import (
    accuracy_bars,
    build_context,
    curves_by_row,
    load_summary,
    render,
    summary_json,
    table_metrics,
)
from .plots import plot_accuracy_bars, plot_table_curves
from .results import read_rows, runs_table


def _runs_of_rows(table: str, rows: list[str], runs: list[str]) -> dict[str, list[Path]]:
    """--run ROW=DIR, once per trial, grouped by row; every row of the table needs one."""
    found: dict[str, list[Path]] = {}
    for item in runs:
        row, eq, path = item.partition("=")
        if not eq or not path:
            raise ConfigError(f"report {table}: --run {item!r}: expected ROW=DIR")
        found.setdefault(row, []).append(Path(path))
    if missing := [r for r in rows if r not in found]:
        raise ConfigError(f"report {table}: no --run given for row(s) {', '.join(missing)}")
    return found


def report_table(
    params: Params, profile: str, table_name: str, data: Path, runs: list[str], out: Path
) -> None:
    """A table's report from its rows' run directories (`runs`: ROW=DIR, once per trial): the
    page `out` and the files beside it (rundir.ReportFiles)."""
    table = params.table(table_name)
    run_dirs = _runs_of_rows(table_name, list(table.rows), runs)
    manifest = Manifest.read(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Every file is made in a scratch directory beside `out`, then all are moved into place:
    # a report that fails half-way leaves the previous one whole (where the engine kept it).
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.stem}.tmp-") as scratch:
        made = ReportFiles(Path(scratch) / out.name)
        summary = _write_report(params, profile, table, run_dirs, manifest, made)
        files = ReportFiles(out)
        for new, old in zip(
            [*made.outputs, made.metrics], [*files.outputs, files.metrics], strict=True
        ):
            os.replace(new, old)
    # The verdicts beside the runs they rest on, in MLflow (one run per table report).
    run = log_report(profile, summary, [files.html, files.page, files.summary])
    print(f"wrote {files.page} and {files.html.name}; MLflow run report-{table_name}: {run}")


def _write_report(
    params: Params,
    profile: str,
    table: Table,
    run_dirs: dict[str, list[Path]],
    manifest: Manifest,
    files: ReportFiles,
) -> dict:
    """A table's report files; its summary (the JSON)."""
    test_images = manifest.images("test") or None
    rows = read_rows({row: run_dirs[row] for row in table.rows}, test_images)
    # Every number the verdicts rest on, one line a trial, for a reader to recompute them.
    runs_table(table.name, rows).to_csv(files.runs, index=False)
    plot_table_curves(table, rows, files.curves)
    context = build_context(
        table,
        profile,
        rows,
        manifest,
        git_commit(),
        judged=params.verdicts(profile),
        family=sum(comparison_count(params.table(t).claims) for t in params.table_names()),
        curves=files.curves.name,
        looks=params.looks(profile),
    )
    plot_accuracy_bars(table, context, files.accuracy_plot)
    files.page.write_text(render(context))
    # What a browser shows, its figures inside it: one file to open, attach or move.
    figures = [
        {"src": _data_uri(files.curves), "alt": CURVES_ALT},
        {"src": _data_uri(files.accuracy_plot), "alt": BARS_ALT},
    ]
    files.html.write_text(render(context | {"figures": figures}, "html"))
    summary = summary_json(context)
    files.summary.write_text(json.dumps(summary, indent=2) + "\n")
    accuracy_bars(table, context).to_csv(files.accuracy, index=False)
    # Numbers only, for `dvc metrics` and `dvc exp show` (they drop or garble the rest).
    files.metrics.write_text(json.dumps(table_metrics(context), indent=2))
    for quantity, curve in curves_by_row(table, rows).items():
        # "NaN" where a row has no value at an epoch: Vega skips it, and draws an empty cell as 0
        curve.to_csv(files.curve_table(quantity), index=False, na_rep="NaN")
    return summary


CURVES_ALT = "Training loss, std of l2-normalised z and kNN accuracy per epoch, by row"
BARS_ALT = "Linear accuracy by row: the paper's, ours (mean over seeds) and the random init's"


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def report_index(summaries: list[Path], out: Path) -> None:
    """One page of every table's claims and verdicts, from the tables' reports (their JSON
    summaries and runs tables), and every trial in one runs.csv."""
    tables = [ReportFiles(path.with_suffix(".md")) for path in summaries]
    loaded = [load_summary(f.summary) for f in tables]
    if missing := [f.runs for f in tables if not f.runs.is_file()]:
        raise ReportError(f"{missing[0]}: missing; rerun `simsiam report` for its table")
    files = IndexFiles(out)
    commit = git_commit()
    files.page.write_text(render_index(loaded, commit))
    files.html.write_text(render_index(loaded, commit, "html"))
    files.counts.write_text(json.dumps(index_json(loaded, commit), indent=2) + "\n")
    # Every table's trials in one tidy table, for pandas or a spreadsheet.
    pd.concat([pd.read_csv(f.runs) for f in tables], ignore_index=True).to_csv(
        files.runs, index=False
    )
    print(f"wrote {files.page}, {files.html}, {files.counts} and {files.runs}")


def next_look(
    params: Params, profile: str, reports: Path, dry_run: bool, hours: float | None = None
) -> None:
    """The sequential study's next look: from the table reports in `reports` (each table's
    `<table>.json` there, the tables a pipeline built), the trials each waiting claim's rows
    need; print what that adds to the plan and its cost from the measured run times, and
    (unless `dry_run`) write the profile's seeds file, which both engines read. `hours`: a
    budget in CPU-hours, spent on the most decidable claims first."""
    paths = [reports / f"{name}.json" for name in params.table_names()]
    if not (paths := [p for p in paths if p.is_file()]):
        raise ConfigError(
            f"seeds: no table report in {reports}; build the reports of profile {profile} "
            f"first (snakemake --cores all all --config profile={profile})"
        )
    print(f"the looks of {len(paths)} table reports: {', '.join(p.stem for p in paths)}")
    loaded = [load_summary(path) for path in paths]
    if wrong := [s["table"] for s in loaded if s["profile"] != profile]:
        raise ConfigError(
            f"seeds --profile {profile}: the report of {wrong[0]} in {reports} is another "
            f"profile's; pass the folder of profile {profile}'s reports"
        )
    before = dict(params.allotted(profile))
    tables = params.table_names()
    old = params.plan(profile, tables, read_data=False)
    seconds = job_seconds(loaded)

    def look(allotted: dict[str, int]) -> tuple[list[Trial], float]:
        """The runs these trials add to the plan, and their cost in seconds."""
        params.allot(profile, allotted)
        new = params.plan(profile, tables, read_data=False)
        added = [trials[0] for run, trials in new.items() if run not in old]
        known = [seconds[t.row.ref] for t in added if t.row.ref in seconds]
        typical = statistics.median(known) if known else 0.0
        return added, sum(seconds.get(t.row.ref, typical) for t in added)

    after, added, cost, left = before, [], 0.0, []
    for claim in waiting(study_verdicts(loaded)):
        more = after | {ref: max(after.get(ref, 0), n) for ref, n in claim.trials.items()}
        runs, seconds_then = look(more)
        if hours is not None and seconds_then > hours * 3600:
            left.append(claim)
            continue
        after, added, cost = more, runs, seconds_then
    params.allot(profile, before)  # the plan as the seeds file has it, until it is written
    for trial in added:
        print(f"train {trial.ref}")
    for claim in left:
        print(f"left for a later look, past the budget of {hours:g} CPU-hours: {claim.text}")
    if not added:
        print(
            f"no claim of profile {profile} waits for seeds"
            + (" within the budget" if left else "")
            + ": every one is decided, futile or out of seeds (or its reports predate the "
            "seeds it has)"
        )
        return
    timed = any(t.row.ref in seconds for t in added)
    print(
        f"{len(added)} runs to train, about {cost / 3600:.1f} CPU-hours at the median "
        "measured time of each row's trials so far (pretraining and evaluation, or pretraining "
        "alone for runs that predate the evaluation's record)"
        if timed
        else f"{len(added)} runs to train; their cost is unknown: no trial of these reports "
        "recorded its time"
    )
    if dry_run:
        return
    path = params.seeds_file(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SEEDS_HEADER.format(profile=profile) + yaml.safe_dump(after, sort_keys=True))
    print(f"wrote {path}: run the pipeline again (snakemake or dvc repro) to train them")


SEEDS_HEADER = """\
# Written by `simsiam seeds --profile {profile}`: the trials each row has after the sequential
# looks so far (TABLE:ROW: trials). Snakemake's plan and dvc.yaml read it; do not edit.
"""
