"""A table's report: the paper's table beside our rows, each claim with its verdict and
evidence, as one context that the Markdown and HTML pages, the JSON summary and DVC's metrics
and plots files are all made from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ..claims import Claim
from ..config import flatten
from ..data import Manifest
from ..errors import ReportError
from ..rundir import CURVES
from ..study import Table
from .compare import claim_margin, compared, comparison_count, power
from .judge import verdict
from .render import template
from .results import RowResult, RunResult
from .rules import RULES
from .sequential import LOOKS
from .verdict import ALPHA, NOT_JUDGED, VERDICTS, Verdict, fmt_trials

# A pause longer than this with no run of a table in progress ends a sitting: the table's runs
# were trained on another day (a re-measured row beside rows reused from before), and the
# calendar time between the sittings is no part of how long the table took. Shorter pauses are
# the pipeline's other tables' runs, scheduled in between (up to 59 min in the cpu study).
SITTING_GAP_S = 3 * 3600


def elapsed(trials: list[dict]) -> str:
    """The wall time a table's runs took, in words: from the first pretraining's start to the
    last evaluation's end, or where they were trained in several sittings, each sitting's."""
    spans = [(m.get("started_at"), m.get("evaluated_at")) for m in trials]
    if not spans or any(None in span for span in spans):
        return "not recorded (these runs predate pretrain.json's start and end times)"
    spans.sort()
    sittings = [list(spans[0])]
    for start, end in spans[1:]:
        if start - sittings[-1][1] > SITTING_GAP_S:
            sittings.append([start, end])
        else:
            sittings[-1][1] = max(sittings[-1][1], end)
    busy = sum(end - start for start, end in sittings) / 60
    if len(sittings) == 1:
        return f"{busy:.1f} min, from the first pretraining's start to the last evaluation's end"
    span = (sittings[-1][1] - spans[0][0]) / 60
    return (
        f"{busy:.1f} min in {len(sittings)} sittings, each from its first pretraining's start "
        f"to its last evaluation's end (pauses of over {SITTING_GAP_S // 3600} h with none of "
        f"its runs in progress left out; {span:.1f} min from the first start to the last end)"
    )


def _trial_summary(trial: RunResult) -> dict[str, Any]:
    keep = ("status", "knn_acc", "linear_acc", "random_init_knn", "random_init_linear")
    return (
        {"seed": trial.config.seed}
        | {k: trial.metrics.get(k) for k in keep}
        | {
            "collapsed": trial.collapsed,
            "mlflow_run_id": trial.metrics.get("mlflow_run_id"),
            "job_s": _job_seconds(trial.metrics),
        }
    )


def _job_seconds(metrics: dict[str, Any]) -> float | None:
    """One trial's measured cost: its pretraining's seconds and its evaluation's (runs that
    predate `eval_s` give their pretraining's alone)."""
    if metrics.get("wall_s") is None:
        return None
    return metrics["wall_s"] + (metrics.get("eval_s") or 0.0)


def _choices(found: Verdict, kind: str) -> list[dict[str, Any]]:
    """Each choice a verdict was decided with, its value, and the value at which the verdict
    would change (and to what): a threshold of the collapse or instability rule, a
    comparison's margin, the slope an improving claim needs. None changes a verdict that is
    the same over the choice's whole range."""
    if found.thresholds:
        return [{"choice": name} | t for name, t in found.thresholds.items()]
    if found.flips_at is None:
        return []
    name = "slope" if kind == "improving" else "margin"
    rule = 0.0 if kind == "improving" else found.margin
    return [{"choice": name, "rule": rule, "flips_at": found.flips_at, "to": found.flips_to}]


def _paper_difference(table: Table, claim: Claim) -> float | None:
    """The paper's X − Y for a comparison claim of accuracies, where both rows print one."""
    if not claim.compares or compared(claim.kind).metric != "linear_acc":
        return None
    x, y = table.rows[claim.row].paper, table.rows[claim.other].paper
    numbers = all(isinstance(v, int | float) for v in (x, y))
    return round(x - y, 2) if numbers else None


def _mark(value: Any) -> str:
    if isinstance(value, bool):
        return "✓" if value else ""
    return str(value)


def build_context(
    table: Table,
    profile: str,
    rows: dict[str, RowResult],
    manifest: Manifest,
    commit: str,
    judged: bool,
    family: int,
    curves: str | None = None,
    looks: tuple[int, ...] = LOOKS,
) -> dict[str, Any]:
    """Everything a table's report shows. `judged`: whether the profile's runs can test the
    paper's claims; where not, each claim is listed with its evidence and `not judged`.
    `family`: the study's comparison claims, over which each comparison's share of ALPHA is
    split (Bonferroni, fixed before any run, so a claim's looks never wait on another table).
    `looks`: the seeds a row has at each look, the profile's (Params.looks)."""
    first_row = next(iter(rows.values()))  # the random-init control is the first row's network
    first = first_row.trials[0].config
    table_rows, paper_notes = [], []
    for row_id, row in table.rows.items():
        if row.paper_note:  # under the table, numbered, so the row table reads in a terminal
            paper_notes.append(row.paper_note)
        result = rows[row_id]
        flat = flatten(result.trials[0].config.to_dict())
        table_rows.append(
            {
                "id": row_id,
                "label": row.label,
                "columns": [_mark(flat[key]) for key in table.columns.values()],
                "paper": row.paper if isinstance(row.paper, str) else f"{row.paper:.1f}",
                "paper_note": len(paper_notes) if row.paper_note else None,
                "knn_acc": result.mean("knn_acc"),
                "linear_acc": result.mean("linear_acc"),
                "knn": fmt_trials(result, "knn_acc"),
                "linear": fmt_trials(result, "linear_acc"),
                "z_std_ratio": result.mean("final_z_std_ratio"),
                "z_top_share": result.mean("z_top_share"),
                "ratio": fmt_trials(result, "final_z_std_ratio", 3),
                "share": fmt_trials(result, "z_top_share", 3),
                "trials": [_trial_summary(t) for t in result.trials],
                "status": result.status
                + (f": {result.trials[0].metrics['reason']}" if result.status == "skipped" else ""),
                "run_ids": [t.metrics.get("mlflow_run_id", "–") for t in result.trials],
            }
        )
    k = comparison_count(table.claims)
    alpha = ALPHA / max(1, family)
    claims = []
    for claim in table.claims:
        found = verdict(claim, rows, alpha, looks)
        declared = claim_margin(claim, rows)
        interval = found.interval
        claims.append(
            {
                "text": claim.text,
                "rows": claim.named,
                "verdict": found.result if judged else NOT_JUDGED,
                "evidence": found.evidence
                + (f"; {found.sensitivity}" if judged and found.sensitivity else ""),
                "paper_difference": _paper_difference(table, claim),
                "interval": None if interval is None else [interval.lo, interval.hi],
                "estimate": None if interval is None else interval.estimate,
                "test": None if interval is None else interval.test,
                "level": found.level,
                # As declared, also where no interval was made (a row skipped at this scale).
                # In points: as declared or resolved from a share of the reference's gain.
                "margin": found.margin if declared is None else declared.points,
                "kind": claim.kind,
                "sequence": found.sequence,
                # put to its test (rows trained and learned, margin testable): in the study's
                # family (index.tested)
                "tested": claim.compares and found.sensitivity is not None,
                "resolution": found.resolution,
                "diffs": found.diffs,
                "flips_at": found.flips_at,
                "power": found.detects,
                "margin_reason": claim.margin_reason,
                "margin_text": None
                if declared is None or not declared.declared
                else declared.describe(),
                "margin_of_gain": declared and declared.share,
                "reference_gain": declared and declared.reference_gain,
                "flips_at_share": None
                if found.flips_at is None or not (declared and declared.reference_gain)
                else found.flips_at / declared.reference_gain,
                "rate_bound": found.rate_bound,
                "thresholds": found.thresholds,
                "choices": _choices(found, claim.kind) if judged else [],
            }
        )
    distinct = {
        t.metrics.get("config_hash"): t.metrics.get("wall_s", 0.0)
        for r in rows.values()
        for t in r.trials
    }
    return {
        "table": table,
        "profile": profile,
        "judged": judged,
        "dataset": first.data.dataset,
        "counts": {split: manifest.images(split) for split in manifest.counts},
        "classes": len(manifest.classes),
        "source": Path(manifest.source).name,
        "source_sha256": str(manifest.source_sha256)[:12],
        "image_size": first.data.image_size,
        "backbone": f"{first.model.backbone} (width {first.model.width}"
        + (", CIFAR stem)" if first.model.cifar_stem else ")"),
        "dim": first.model.dim,
        "epochs": first.optim.epochs,
        "batch_size": first.optim.batch_size,
        "linear_probe": first.eval.linear_probe,
        "wall_min": sum(distinct.values()) / 60,
        "elapsed": elapsed([t.metrics for r in rows.values() for t in r.trials]),
        "n_runs": len(distinct),
        "commit": commit,
        "columns": list(table.columns),
        "rows": table_rows,
        "paper_notes": paper_notes,
        "random_init": {
            "linear": first_row.mean("random_init_linear"),
            "knn": first_row.mean("random_init_knn"),
        },
        "random_init_knn": fmt_trials(first_row, "random_init_knn"),
        "random_init_linear": fmt_trials(first_row, "random_init_linear"),
        "claims": claims,
        "comparisons": k,
        "family": family,
        "alpha": alpha,
        "looks": list(looks),
        "power": power(table, rows, claims),
        "rules": RULES,
        "curves": curves,
        "figures": [],  # the HTML page's images, inline (report.report_table fills them)
    }


def render(context: dict[str, Any], fmt: str = "md") -> str:
    """The table's report as Markdown (`md`) or as one self-contained HTML page (`html`), both
    from the same context, so they print the same numbers and verdicts."""
    return template(f"table.{fmt}.j2").render(**context)


def summary_json(context: dict[str, Any]) -> dict[str, Any]:
    """The report's numbers and verdicts: for `dvc metrics show` and for the index."""
    table = context["table"]
    return {
        "table": table.name,
        "title": table.title,
        "section": table.section,
        "profile": context["profile"],
        "judged": context["judged"],
        "scale": f"{context['dataset']}, {context['counts']['train']} train images at "
        f"{context['image_size']} px, {context['backbone']}, {context['epochs']} epochs",
        "rows": {
            row["id"]: {
                "knn": row["knn_acc"],
                "linear": row["linear_acc"],
                "status": row["status"],
                "trials": row["trials"],
            }
            for row in context["rows"]
        },
        "claims_reproduced": sum(c["verdict"] == "reproduced" for c in context["claims"]),
        "claims_total": len(context["claims"]),
        "claims": context["claims"],
        "comparisons": context["comparisons"],
        "family": context["family"],
        "alpha": context["alpha"],
        "power": context["power"],
        "mlflow_runs": sorted({i for row in context["rows"] for i in row["run_ids"]}),
    }


_SUMMARY_KEYS = (
    "table",
    "title",
    "section",
    "profile",
    "judged",
    "scale",
    "claims",
    "power",
    "family",
)


def load_summary(path: Path) -> dict[str, Any]:
    """A table report's JSON, checked to be one this version writes (the index reads it)."""
    rerun = "rerun `simsiam report` for its table (snakemake: --forcerun report)"
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: no such report; {rerun}") from None
    except (OSError, ValueError) as err:
        raise ReportError(f"{path}: not a readable report JSON ({err}); {rerun}") from None
    missing = [k for k in _SUMMARY_KEYS if not isinstance(summary, dict) or k not in summary]
    if missing:
        raise ReportError(
            f"{path}: written by another version of simsiam_lab (no {missing[0]!r}); {rerun}"
        )
    return summary


def paper_and_ours(
    table: Table, context: dict[str, Any]
) -> list[tuple[dict[str, Any], float | None, float | None]]:
    """Each report row with the paper's linear accuracy and our mean, None where there is no
    number (the paper's 'unstable', a skipped or diverged run)."""
    found = []
    for row in context["rows"]:
        paper = table.rows[row["id"]].paper
        found.append((row, None if isinstance(paper, str) else paper, row["linear_acc"]))
    return found


# What each of accuracy_bars' bars is: DVC's plot colours by it (.dvc/plots/accuracy.json).
PAPER, OURS, RANDOM_INIT = "paper", "ours", "random init"


def accuracy_bars(table: Table, context: dict[str, Any]) -> pd.DataFrame:
    """The linear accuracy per row, one bar for the paper's and one for ours (rows without a
    number, such as the paper's 'unstable' or a skipped run, have none), then the random init's
    (what "learned" is tested against): for `dvc plots`, a `source` column to colour by, so that
    a revision's bars and another's tell paper, ours and random init apart."""
    bars = []
    for row, paper, ours in paper_and_ours(table, context):
        if paper is not None:
            bars.append({"row": row["id"], "source": PAPER, "accuracy": paper})
        if ours is not None:
            bars.append({"row": row["id"], "source": OURS, "accuracy": round(ours, 2)})
    random_init = context["random_init"]["linear"]
    if random_init is not None:
        bars.append({"row": RANDOM_INIT, "source": RANDOM_INIT, "accuracy": round(random_init, 2)})
    return pd.DataFrame(bars, columns=["row", "source", "accuracy"])


def table_metrics(context: dict[str, Any]) -> dict[str, Any]:
    """The numbers a reader compares across experiments, per row (means over its trials): the
    accuracies and the collapse diagnostics; the random-init control; the verdict counts."""

    def rounded(value: float | None, digits: int) -> float | None:
        return None if value is None else round(value, digits)

    rows = {
        row["id"]: {
            "linear": rounded(row["linear_acc"], 2),
            "knn": rounded(row["knn_acc"], 2),
            "z_std_ratio": rounded(row["z_std_ratio"], 4),
            "z_top_share": rounded(row["z_top_share"], 4),
        }
        for row in context["rows"]
    }
    verdicts = [claim["verdict"] for claim in context["claims"]]
    return {
        "rows": rows,
        "random_init": {k: rounded(v, 2) for k, v in context["random_init"].items()},
        "claims": {v: verdicts.count(v) for v in (VERDICTS if context["judged"] else [NOT_JUDGED])},
    }


def curves_by_row(table: Table, rows: dict[str, RowResult]) -> dict[str, pd.DataFrame]:
    """Per quantity of the history (loss, std(z)·√d, kNN), one column per row labelled as the
    table labels it, from the row's first trial as the report's curves: an epoch column and a
    line per epoch where any row has a value (NaN where that row has none)."""
    out = {}
    for quantity in CURVES:
        columns = {
            row.label: {
                int(r["epoch"]): r[quantity]
                for r in rows[row_id].trials[0].history
                if r.get(quantity) is not None
            }
            for row_id, row in table.rows.items()
        }
        frame = pd.DataFrame(columns).sort_index()
        out[quantity] = frame.rename_axis("epoch").reset_index()
    return out
