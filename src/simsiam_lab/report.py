"""Render a paper table beside our measurements, with a computed verdict per claim."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from .config import Config, Table, flatten

COLLAPSE_RATIO = 0.1  # std(z)·sqrt(d) below this: the outputs have collapsed to one direction
UNSTABLE_RISE = 0.1  # loss that ends this far above its minimum counts as unstable
DEFAULT_MARGIN = 1.0  # accuracy points; differences inside it are within single-run noise

RULES = {
    "collapsed": f"collapsed: final std(z)·√d < {COLLAPSE_RATIO} (isotropic outputs give ≈ 1)",
    "better": "X better than Y: X's linear accuracy exceeds Y's by more than the margin "
    "(reproduced); falls short of it by more than the margin (not reproduced); otherwise "
    "inconclusive",
    "similar": "X similar to Y: linear accuracies within the margin",
    "learned": "a comparison is inconclusive unless both rows' kNN accuracy beats the same "
    "network at random init by more than the margin",
    "unstable": "unstable: the loss became non-finite (diverged), or ended more than "
    f"{UNSTABLE_RISE} above its minimum",
}


@dataclass(frozen=True)
class RunResult:
    row_id: str
    config: Config
    metrics: dict[str, Any]
    history: list[dict[str, float]]

    @property
    def status(self) -> str:
        return self.metrics["status"]

    @property
    def collapsed(self) -> bool:
        ratio = self.metrics.get("final_z_std_ratio")
        return self.status == "ok" and ratio is not None and ratio < COLLAPSE_RATIO

    def learned(self, margin: float) -> bool:
        """Whether training beat the same network at random init, without which a comparison
        of accuracies says nothing about the method."""
        knn, random_knn = self.metrics.get("knn_acc"), self.metrics.get("random_init_knn")
        return knn is not None and (random_knn is None or knn > random_knn + margin)

    @property
    def unstable(self) -> bool:
        if self.status == "diverged":
            return True
        losses = [r["loss"] for r in self.history if "loss" in r]
        return bool(losses) and losses[-1] - min(losses) > UNSTABLE_RISE


def load_run(row_id: str, run_dir: Path) -> RunResult:
    return RunResult(
        row_id=row_id,
        config=yaml.safe_load((run_dir / "config.yaml").read_text()),
        metrics=json.loads((run_dir / "metrics.json").read_text()),
        history=json.loads((run_dir / "history.json").read_text()),
    )


def _compare(diff: float | None, margin: float, similar: bool) -> str:
    if diff is None:
        return "inconclusive"
    if similar:
        return "reproduced" if abs(diff) <= margin else "not reproduced"
    if diff > margin:
        return "reproduced"
    return "not reproduced" if diff < -margin else "inconclusive"


def verdict(check: dict[str, str], runs: dict[str, RunResult], margin: float) -> tuple[str, str]:
    """Return (verdict, the evidence behind it) for one claim's check."""

    def acc(row: str) -> float | None:
        return runs[row].metrics.get("linear_acc")

    if "not_collapsed" in check:
        run = runs[check["not_collapsed"]]
        ratio = run.metrics.get("final_z_std_ratio")
        evidence = f"{run.row_id}: status {run.status}, std(z)·√d = {_fmt(ratio, 3)}"
        if run.status != "ok":
            return "inconclusive", evidence
        return ("not reproduced" if run.collapsed else "reproduced"), evidence
    if "unstable" in check:
        run = runs[check["unstable"]]
        final = next((r["loss"] for r in reversed(run.history) if "loss" in r), None)
        evidence = f"{run.row_id}: status {run.status}, final loss {_fmt(final, 3)}"
        return ("reproduced" if run.unstable else "not reproduced"), evidence
    kind, other_key = ("better", "than") if "better" in check else ("similar", "to")
    x, y = check[kind], check[other_key]
    ax, ay = acc(x), acc(y)
    diff = None if ax is None or ay is None else ax - ay
    evidence = f"linear {x} {_fmt(ax)} vs {y} {_fmt(ay)} (Δ {_fmt(diff)}, margin {margin})"
    if untrained := [r for r in (x, y) if not runs[r].learned(margin)]:
        return "inconclusive", evidence + f"; {', '.join(untrained)}: kNN not above random init"
    return _compare(diff, margin, similar=kind == "similar"), evidence


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _mark(value: Any) -> str:
    if isinstance(value, bool):
        return "✓" if value else ""
    return str(value)


def build_context(
    table: Table, profile: str, runs: dict[str, RunResult], manifest: dict, commit: str
) -> dict[str, Any]:
    margin = DEFAULT_MARGIN
    first = next(iter(runs.values())).config
    rows = []
    for row_id, row in table.rows.items():
        run = runs[row_id]
        flat = flatten(run.config)
        m = run.metrics
        rows.append(
            {
                "id": row_id,
                "label": row.label,
                "columns": [_mark(flat[key]) for key in table.columns.values()],
                "paper": row.paper if isinstance(row.paper, str) else f"{row.paper:.1f}",
                "paper_note": row.paper_note,
                "knn_acc": m.get("knn_acc"),
                "linear_acc": m.get("linear_acc"),
                "knn": _fmt(m.get("knn_acc")),
                "linear": _fmt(m.get("linear_acc")),
                "random_knn": _fmt(m.get("random_init_knn")),
                "ratio": _fmt(m.get("final_z_std_ratio"), 3),
                "status": "unstable"
                if run.unstable
                else ("collapsed" if run.collapsed else m["status"]),
                "run_id": m.get("mlflow_run_id", "–"),
                "config_hash": m.get("config_hash", "–"),
            }
        )
    claims = []
    for claim in table.claims:
        result, evidence = verdict(claim["check"], runs, margin)
        claims.append({"text": claim["text"], "verdict": result, "evidence": evidence})
    distinct = {r.metrics.get("config_hash"): r.metrics.get("wall_s", 0.0) for r in runs.values()}
    return {
        "table": table,
        "profile": profile,
        "dataset": first["data"]["dataset"],
        "counts": {s: sum(c.values()) for s, c in manifest["counts"].items()},
        "image_size": first["data"]["image_size"],
        "backbone": f"{first['model']['backbone']} (width {first['model']['width']}"
        + (", CIFAR stem)" if first["model"]["cifar_stem"] else ")"),
        "dim": first["model"]["dim"],
        "epochs": first["optim"]["epochs"],
        "batch_size": first["optim"]["batch_size"],
        "wall_min": sum(distinct.values()) / 60,
        "n_runs": len(distinct),
        "commit": commit,
        "columns": list(table.columns),
        "rows": rows,
        "claims": claims,
        "rules": RULES,
        "margin": margin,
    }


def render(context: dict[str, Any]) -> str:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("simsiam_lab", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("table.md.j2").render(**context)


def summary_json(context: dict[str, Any]) -> dict[str, Any]:
    """The numbers of the report, for `dvc metrics show`."""
    return {
        "profile": context["profile"],
        "rows": {
            row["id"]: {"knn": row["knn_acc"], "linear": row["linear_acc"], "status": row["status"]}
            for row in context["rows"]
        },
        "claims_reproduced": sum(c["verdict"] == "reproduced" for c in context["claims"]),
        "claims": len(context["claims"]),
    }
