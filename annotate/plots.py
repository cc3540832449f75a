"""Server-side PNG plots of the crowd's labels and the volunteers' skills, drawn with matplotlib.

Figures are built with the object API (``Figure`` + Agg canvas), never ``pyplot``: pyplot keeps
global state that is not thread-safe in a web server, and the Agg canvas needs no display. Data
comes grouped from the selectors, so a plot of millions of labels reads a few hundred rows. With
no data, each plot says so instead of failing.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from annotate import selectors

PLOTS = ("posteriors", "votes", "skills")
_DPI = 100
_ACCENT = "#417690"  # The admin's own blue, so the plots sit well in its pages.


def plot_png(name: str) -> bytes:
    """The PNG bytes of the plot called ``name`` (one of ``PLOTS``); ValueError otherwise."""
    if name == "posteriors":
        return posterior_histograms_png()
    if name == "votes":
        return votes_per_item_png()
    if name == "skills":
        return volunteer_skills_png()
    raise ValueError(f"unknown plot {name!r}; use one of {', '.join(PLOTS)}")


def posterior_histograms_png(*, bins: int = 20) -> bytes:
    """Small multiples: for each active concept, the histogram of the items' posteriors."""
    histograms = selectors.posterior_histograms(bins=bins)
    n = max(1, len(histograms))
    cols = min(5, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2.4 * cols, 1.9 * rows + 0.5), dpi=_DPI, layout="constrained")
    fig.suptitle("Posterior per concept (items per bin; 0.5 = coin toss)")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    edges = np.linspace(0.0, 1.0, bins + 1)
    for index, ax in enumerate(axes.flat):
        if index >= len(histograms):
            ax.set_axis_off()
            continue
        histogram = histograms[index]
        ax.bar(edges[:-1], histogram.counts, width=1.0 / bins, align="edge", color=_ACCENT)
        ax.axvline(0.5, color="#ba2121", linewidth=0.8, linestyle="--")
        ax.set_title(histogram.concept, fontsize=9)
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=7)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        if not histogram.counts.any():
            _no_data(ax, "no labels")
    if not histograms:
        _no_data(axes.flat[0], "no concepts")
    return _png(fig)


def votes_per_item_png() -> bytes:
    """How many items have 0, 1, 2, ... classifications."""
    votes, items = selectors.item_vote_counts()
    fig = Figure(figsize=(7, 3.2), dpi=_DPI, layout="constrained")
    ax = fig.subplots()
    ax.set_title("Classifications per item")
    ax.set_xlabel("classifications")
    ax.set_ylabel("items")
    if items.sum() == 0:
        _no_data(ax, "no items")
    else:
        ax.bar(votes, items, width=0.9, color=_ACCENT)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig)


def volunteer_skills_png() -> bytes:
    """One point per volunteer: sensitivity against specificity, the area showing their votes."""
    points = selectors.volunteer_skill_points()
    fig = Figure(figsize=(5.5, 5), dpi=_DPI, layout="constrained")
    ax = fig.subplots()
    ax.set_title("Volunteer skill (point area = votes)")
    ax.set_xlabel("specificity (says no when absent)")
    ax.set_ylabel("sensitivity (says yes when present)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_aspect("equal")
    # The diagonal se + sp = 1 is a volunteer who answers at random.
    ax.plot([0, 1], [1, 0], color="#999999", linewidth=0.8, linestyle="--")
    if points.votes.size == 0:
        _no_data(ax, "no volunteer skills yet")
    else:
        biggest = max(float(points.votes.max()), 1.0)
        sizes = 8 + 300 * np.sqrt(points.votes / biggest)
        ax.scatter(
            points.specificity,
            points.sensitivity,
            s=sizes,
            alpha=0.5,
            color=_ACCENT,
            edgecolors="white",
            linewidths=0.5,
        )
    return _png(fig)


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#666666")


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()
