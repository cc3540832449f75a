"""The per-epoch metrics plot of a run, drawn server-side as a PNG (no pyplot, no GUI).

Not in the plot registry (:mod:`annotate.plots`, plots of no argument by name): it draws one
run's metrics, served by ``training.views.run_metrics_png`` under the run's own permission.
"""

from __future__ import annotations

import io
from typing import Any, cast


def metrics_png(metrics: list[dict[str, Any]], *, width: float = 6.4, height: float = 3.2) -> bytes:
    """Train and validation loss (left axis) and validation mAP (right axis) per epoch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    epochs: list[Any] = [row.get("epoch") for row in metrics]

    def series(name: str) -> list[float]:
        return [float("nan") if row.get(name) is None else float(row[name]) for row in metrics]

    if metrics:
        ax.plot(epochs, series("train_loss"), marker="o", label="train loss", color="#1f77b4")
        ax.plot(epochs, series("val_loss"), marker="o", label="validation loss", color="#ff7f0e")
        right = ax.twinx()
        right.plot(epochs, series("val_map"), marker="s", label="validation mAP", color="#2ca02c")
        right.set_ylim(0, 1)
        right.set_ylabel("mAP")
        lines = ax.get_lines() + right.get_lines()
        labels = [cast(str, line.get_label()) for line in lines]  # the label= strings above
        ax.legend(lines, labels, loc="lower left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no epoch finished yet", ha="center", va="center",
                transform=ax.transAxes, color="#666")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
