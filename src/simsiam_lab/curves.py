"""A run's training curves as the paper's Figure 2 draws them: the loss, the std of the
l2-normalised z, and the kNN monitor, per epoch."""

from __future__ import annotations

import math
from pathlib import Path

from .config import RunConfig
from .loss import batch_norm_std_floor


def plot_curves(series: list[tuple[str, RunConfig, list[dict]]], path: Path) -> None:
    """The paper's Figure 2 panels for each (label, config, history): loss, std of
    l2-normalised z, kNN accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    dims = set()
    for label, config, history in series:
        dims.add(config.model.dim)
        for ax, key in zip(axes, ("loss", "z_std", "knn"), strict=True):
            points = [(r["epoch"], r[key]) for r in history if key in r]
            if points:
                ax.plot(
                    *zip(*points, strict=True),
                    label=label,
                    marker="." if key == "knn" else None,
                )
    for d in sorted(dims):
        axes[1].axhline(1 / math.sqrt(d), color="grey", linestyle="--", linewidth=0.8)
        _label_line(axes[1], f"1/√{d}", 1 / math.sqrt(d))
    # The lowest std the affine-free BN on z allows at the first series' batch (loss.py).
    first = series[0][1]
    batch, d = first.optim.batch_size, first.model.dim
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
