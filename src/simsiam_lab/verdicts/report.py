"""The report commands, `simsiam report` and `simsiam index`: a table's report from its rows'
run directories, and the index from the tables' reports."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..data import Manifest
from ..errors import ConfigError, ReportError
from ..rundir import IndexFiles, ReportFiles
from ..study import Params
from ..track import git_commit
from .index import index_json, render_index
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
    files = ReportFiles(out)
    files.page.parent.mkdir(parents=True, exist_ok=True)
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
        curves=files.curves.name,
    )
    files.page.write_text(render(context))
    files.html.write_text(render(context, "html"))  # what a browser shows
    files.summary.write_text(json.dumps(summary_json(context), indent=2) + "\n")
    accuracy_bars(table, context).to_csv(files.accuracy, index=False)
    # Numbers only, for `dvc metrics` and `dvc exp show` (they drop or garble the rest).
    files.metrics.write_text(json.dumps(table_metrics(context), indent=2))
    for quantity, curve in curves_by_row(table, rows).items():
        # "NaN" where a row has no value at an epoch: Vega skips it, and draws an empty cell as 0
        curve.to_csv(files.curve_table(quantity), index=False, na_rep="NaN")
    plot_accuracy_bars(table, context, files.accuracy_plot)
    print(f"wrote {files.page} and {files.html.name}")


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
