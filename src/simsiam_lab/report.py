"""Render a paper table beside our measurements, with a computed verdict per claim."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from .config import CHECKS, Config, Table, flatten

COLLAPSE_RATIO = 0.1  # std(z)·sqrt(d) below this: the outputs have collapsed to a constant
COLLAPSE_SHARE = 0.99  # ... or this share of z's variance lies along one direction
COLLAPSE_LOSS_GAP = 0.02  # ... and the cosine loss sits this close to the lowest it can reach
UNSTABLE_RISE = 0.1  # loss that ends this far above its minimum counts as unstable
DEFAULT_MARGIN = 1.0  # accuracy points; differences inside it are within single-run noise

RULES = [
    f"collapsed: final std(z)·√d < {COLLAPSE_RATIO} (isotropic outputs give ≈ 1), or at least "
    f"{COLLAPSE_SHARE:.0%} of z's variance on the test images along one direction (BN in eval "
    "mode). The second test is there because the affine-free BN on z keeps every channel's "
    "batch variance at 1: a batch of identical outputs but one scores std(z)·√d = 2/√B, "
    "0.25 at B = 64 and 0.09 at the paper's 512, so below 0.1 is out of reach at small batches. "
    f"For the cosine loss, the final loss must also be at most -1 + 4/B + {COLLAPSE_LOSS_GAP}: "
    "-1 + 4/B is the loss of such a batch when the image set apart differs between the two "
    "views. A row with several trials is collapsed only if every trial is",
    "unstable: a trial's loss became non-finite (diverged), or ended more than "
    f"{UNSTABLE_RISE} above its minimum",
    "X better than Y: X's mean linear accuracy exceeds Y's by more than the margin "
    "(reproduced), falls short by more than the margin (not reproduced), otherwise inconclusive; "
    "X not worse than Y: X is at most the margin below Y; X similar to Y: within the margin",
    f"the margin is {DEFAULT_MARGIN} accuracy points unless the claim states another, or the "
    "larger std over the two rows' trials if that is wider",
    "a claim about a row that was not run at this scale (e.g. a batch larger than the training "
    "set) is inconclusive",
    "a claim that X is better than, not worse than or similar to Y is inconclusive unless X's "
    "(and, for similar, Y's) kNN accuracy beats the same network at random init by the margin: "
    "chance-level accuracy alone says nothing (paper, footnote 4)",
]


def batch_norm_std_floor(batch: int) -> float:
    """std(z)·sqrt(d) of a batch whose outputs are identical but for one image, as close to
    constant as an affine-free BN on z lets a batch be (each channel keeps batch variance 1).

    The paper's collapse to 0 needs a large batch: 0.25 at B = 64, 0.09 at the paper's 512.
    """
    return 2 / math.sqrt(batch)


@dataclass(frozen=True)
class RunResult:
    """One trial: its resolved config, final metrics and per-epoch history."""

    config: Config
    metrics: dict[str, Any]
    history: list[dict[str, float]]

    @property
    def status(self) -> str:
        return self.metrics["status"]

    @property
    def losses(self) -> list[float]:
        return [r["loss"] for r in self.history if "loss" in r]

    @property
    def collapsed(self) -> bool:
        if self.status != "ok":
            return False
        ratio, share = self.metrics.get("final_z_std_ratio"), self.metrics.get("z_top_share")
        if not (
            (ratio is not None and ratio < COLLAPSE_RATIO)
            or (share is not None and share >= COLLAPSE_SHARE)
        ):
            return False
        if self.config["loss"]["similarity"] != "cosine":
            return True
        lowest = -1.0 + 4 / self.config["optim"]["batch_size"]
        return self.metrics["final_loss"] <= lowest + COLLAPSE_LOSS_GAP

    @property
    def unstable(self) -> bool:
        losses = self.losses
        return self.status == "diverged" or (
            bool(losses) and losses[-1] - min(losses) > UNSTABLE_RISE
        )


def load_run(run_dir: Path) -> RunResult:
    return RunResult(
        config=yaml.safe_load((run_dir / "config.yaml").read_text()),
        metrics=json.loads((run_dir / "metrics.json").read_text()),
        history=json.loads((run_dir / "history.json").read_text()),
    )


@dataclass(frozen=True)
class RowResult:
    """A table row: one or more trials (seeds) of one config."""

    id: str
    trials: list[RunResult]

    def values(self, metric: str) -> list[float]:
        return [t.metrics[metric] for t in self.trials if t.metrics.get(metric) is not None]

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
        return "collapsed" if self.collapsed else "ok"

    def learned(self, margin: float) -> bool:
        """Whether training beat the same network at random init."""
        knn, random_knn = self.mean("knn_acc"), self.mean("random_init_knn")
        return knn is not None and (random_knn is None or knn > random_knn + margin)


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


def _fmt_trials(row: RowResult, metric: str, digits: int = 1) -> str:
    std = row.std(metric)
    mean = _fmt(row.mean(metric), digits)
    return mean if std is None else f"{mean} ± {_fmt(std, digits)}"


def _compare(kind: str, diff: float, margin: float) -> str:
    if kind == "similar":
        return "reproduced" if abs(diff) <= margin else "not reproduced"
    if kind == "not_worse":
        return "reproduced" if diff >= -margin else "not reproduced"
    if diff > margin:
        return "reproduced"
    return "not reproduced" if diff < -margin else "inconclusive"


def verdict(check: dict[str, Any], rows: dict[str, RowResult], margin: float) -> tuple[str, str]:
    """Return (verdict, the evidence behind it) for one claim's check."""
    margin = float(check.get("margin", margin))
    named = [rows[v] for k, v in check.items() if k in CHECKS or k in ("than", "to")]
    if skipped := [r.id for r in named if r.status == "skipped"]:
        return "inconclusive", f"{', '.join(skipped)}: not run at this scale"
    for kind in ("collapsed", "not_collapsed", "unstable"):
        if kind in check:
            row = rows[check[kind]]
            evidence = (
                f"{row.id}: {row.status}, std(z)·√d {_fmt_trials(row, 'final_z_std_ratio', 3)}, "
                f"top-direction share {_fmt_trials(row, 'z_top_share', 4)}, "
                f"final loss {_fmt_trials(row, 'final_loss', 3)}"
            )
            if kind == "unstable":
                return ("reproduced" if row.unstable else "not reproduced"), evidence
            if row.unstable:
                return "inconclusive", evidence
            collapsed = row.collapsed if kind == "collapsed" else not row.collapsed
            return ("reproduced" if collapsed else "not reproduced"), evidence
    kind = next(k for k, other in CHECKS.items() if other and k in check)
    x, y = rows[check[kind]], rows[check[CHECKS[kind]]]
    spread = max((r.std("linear_acc") or 0.0 for r in (x, y)), default=0.0)
    margin = max(margin, spread)
    ax, ay = x.mean("linear_acc"), y.mean("linear_acc")
    diff = None if ax is None or ay is None else ax - ay
    evidence = (
        f"linear {x.id} {_fmt(ax)} vs {y.id} {_fmt(ay)} (Δ {_fmt(diff)}, margin {margin:.1f})"
    )
    if diff is None:
        return "inconclusive", evidence
    must_learn = [x, y] if kind == "similar" else [x]
    if untrained := [r.id for r in must_learn if not r.learned(margin)]:
        return "inconclusive", evidence + f"; {', '.join(untrained)}: kNN not above random init"
    return _compare(kind, diff, margin), evidence


def _mark(value: Any) -> str:
    if isinstance(value, bool):
        return "✓" if value else ""
    return str(value)


def build_context(
    table: Table,
    profile: str,
    rows: dict[str, RowResult],
    manifest: dict,
    commit: str,
    curves: str | None = None,
) -> dict[str, Any]:
    first = next(iter(rows.values())).trials[0].config
    table_rows = []
    for row_id, row in table.rows.items():
        result = rows[row_id]
        flat = flatten(result.trials[0].config)
        table_rows.append(
            {
                "id": row_id,
                "label": row.label,
                "columns": [_mark(flat[key]) for key in table.columns.values()],
                "paper": row.paper if isinstance(row.paper, str) else f"{row.paper:.1f}",
                "paper_note": row.paper_note,
                "knn_acc": result.mean("knn_acc"),
                "linear_acc": result.mean("linear_acc"),
                "knn": _fmt_trials(result, "knn_acc"),
                "linear": _fmt_trials(result, "linear_acc"),
                "ratio": _fmt_trials(result, "final_z_std_ratio", 3),
                "share": _fmt_trials(result, "z_top_share", 3),
                "trials": len(result.trials),
                "status": result.status
                + (f": {result.trials[0].metrics['reason']}" if result.status == "skipped" else ""),
                "run_ids": [t.metrics.get("mlflow_run_id", "–") for t in result.trials],
            }
        )
    claims = []
    for claim in table.claims:
        result, evidence = verdict(claim["check"], rows, DEFAULT_MARGIN)
        claims.append({"text": claim["text"], "verdict": result, "evidence": evidence})
    distinct = {
        t.metrics.get("config_hash"): t.metrics.get("wall_s", 0.0)
        for r in rows.values()
        for t in r.trials
    }
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
        "rows": table_rows,
        "random_init_knn": _fmt_trials(next(iter(rows.values())), "random_init_knn"),
        "claims": claims,
        "rules": RULES,
        "curves": curves,
    }


def _template(name: str) -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("simsiam_lab", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(name)


def render(context: dict[str, Any]) -> str:
    return _template("table.md.j2").render(**context)


def plot_curves(table: Table, rows: dict[str, RowResult], path: Path) -> None:
    """The paper's Figure 2 panels for every row: loss, std of l2-normalised z, kNN accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    dims = set()
    for row_id, row in table.rows.items():
        history = rows[row_id].trials[0].history  # one trial per row keeps the plot readable
        dims.add(rows[row_id].trials[0].config["model"]["dim"])
        for ax, key in zip(axes, ("loss", "z_std", "knn"), strict=True):
            points = [(r["epoch"], r[key]) for r in history if key in r]
            if points:
                ax.plot(
                    *zip(*points, strict=True),
                    label=row.label,
                    marker="." if key == "knn" else None,
                )
    for d in sorted(dims):
        axes[1].axhline(1 / math.sqrt(d), color="grey", linestyle="--", linewidth=0.8)
        _label_line(axes[1], f"1/√{d}", 1 / math.sqrt(d))
    # The lowest std the affine-free BN on z allows at the first row's batch (see RULES).
    first = rows[next(iter(table.rows))].trials[0].config
    batch, d = first["optim"]["batch_size"], first["model"]["dim"]
    floor = batch_norm_std_floor(batch) / math.sqrt(d)
    axes[1].axhline(floor, color="grey", linestyle=":", linewidth=0.8)
    _label_line(axes[1], f"BN floor at B = {batch}", floor)
    for ax, title in zip(
        axes, ("training loss", "std of l2-normalised z", "kNN accuracy (%)"), strict=True
    ):
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[2].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _label_line(ax, text: str, y: float) -> None:
    ax.annotate(text, (0.01, y), xycoords=("axes fraction", "data"), color="grey", fontsize=8)


def summary_json(context: dict[str, Any]) -> dict[str, Any]:
    """The report's numbers and verdicts: for `dvc metrics show` and for the index."""
    table = context["table"]
    return {
        "table": table.name,
        "title": table.title,
        "section": table.section,
        "profile": context["profile"],
        "scale": f"{context['dataset']}, {context['counts']['train']} train images at "
        f"{context['image_size']} px, {context['backbone']}, {context['epochs']} epochs",
        "rows": {
            row["id"]: {"knn": row["knn_acc"], "linear": row["linear_acc"], "status": row["status"]}
            for row in context["rows"]
        },
        "claims_reproduced": sum(c["verdict"] == "reproduced" for c in context["claims"]),
        "claims_total": len(context["claims"]),
        "claims": context["claims"],
        "mlflow_runs": sorted({i for row in context["rows"] for i in row["run_ids"]}),
    }


def render_index(summaries: list[dict[str, Any]], commit: str) -> str:
    """Every table's claims and verdicts on one page, linking to each table's report."""
    return _template("index.md.j2").render(tables=summaries, rules=RULES, commit=commit)
