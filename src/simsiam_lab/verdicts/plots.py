"""A table's pictures: every row's training curves, and the accuracy bars (the paper's beside
ours, each trial a tick, the random-init line)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..curves import plot_curves
from ..study import Table
from .page import paper_and_ours
from .results import RowResult

if TYPE_CHECKING:  # matplotlib is imported only when a plot is drawn
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.container import BarContainer


def plot_table_curves(table: Table, rows: dict[str, RowResult], path: Path) -> None:
    """Every row's curves, one trial per row (more would make the plot unreadable)."""
    first = {row_id: rows[row_id].trials[0] for row_id in table.rows}
    plot_curves(
        [(row.label, first[i].config, first[i].history) for i, row in table.rows.items()], path
    )


BAR_HEIGHT = 0.38  # of each of a row's two accuracy bars (paper, ours), in row heights


def plot_accuracy_bars(table: Table, context: dict[str, Any], path: Path) -> None:
    """accuracy_bars as a picture: per row, the paper's linear accuracy above our mean, each
    trial a tick on our bar, and the random-init encoder's line (what "learned" is tested
    against)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records, papers, ours = (list(c) for c in zip(*paper_and_ours(table, context), strict=True))
    fig, ax = plt.subplots(figsize=(10, 1.6 + 0.62 * len(records)), layout="constrained")
    half, rows = BAR_HEIGHT / 2, range(len(records))
    xmax = 1.05 * max([v for v in papers + ours if v is not None], default=1)
    legend = [
        _bars(
            ax,
            [i - half for i in rows],
            papers,
            [r["paper"] for r in records],
            xmax,
            color="#9aa5b1",
            label="the paper's",  # its setting (one or two lines) is in the report's header
        ),
        _bars(
            ax,
            [i + half for i in rows],
            ours,
            [r["status"].split(":")[0] for r in records],  # "skipped", without its long reason
            xmax,
            color="#2f6fb3",
            label=f"ours at the {context['profile']} profile, mean of the trials",
        ),
        *_our_trials(ax, records, [i + half for i in rows], context["random_init"]["linear"]),
    ]
    ax.set_yticks(rows, [textwrap.fill(r["label"], 34) for r in records])
    ax.invert_yaxis()  # the table's first row on top, as in the report
    ax.set_xlim(0, xmax)
    ax.set_xlabel("linear top-1 accuracy (%)")
    ax.set_title(f"{table.title}: paper vs ours", fontsize=10)
    fig.legend(handles=legend, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(
    ax: Axes,
    y: list[float],
    values: list[float | None],
    missing: list[str],
    xmax: float,
    **style: Any,
) -> BarContainer:
    """Horizontal bars, each with its value at its start (clear of the trials' ticks at its
    end): white inside a bar, dark beside one too short to hold it (the paper's 0.1 of a
    collapse). A missing value is no bar, only why (the paper's 'unstable', a skipped run)."""
    bars = ax.barh(y, [0 if v is None else v for v in values], BAR_HEIGHT, **style)
    for at, value, why in zip(y, values, missing, strict=True):
        text = why if value is None else f"{value:.1f}"
        color = "white" if value is not None and value > 0.08 * xmax else "#52606d"
        ax.annotate(
            text,
            (0, at),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            color=color,
            fontweight="bold",
        )
    return bars


def _our_trials(
    ax: Axes, records: list[dict[str, Any]], y: list[float], random_init: float | None
) -> list[Artist]:
    """A tick per trial of each row that has several, and the random-init line; their
    legend handles."""
    ticks = [
        (t["linear_acc"], at)
        for r, at in zip(records, y, strict=True)
        if len(r["trials"]) > 1
        for t in r["trials"]
        if t["linear_acc"] is not None
    ]
    drawn = []
    if ticks:
        drawn += ax.plot(*zip(*ticks, strict=True), "|", color="black", label="ours, one trial")
    if random_init is not None:
        style = {"color": "grey", "linestyle": "--", "linewidth": 0.8}
        drawn.append(ax.axvline(random_init, label="ours at random init", **style))
    return drawn
