"""The plot registry, and the crowd's plots: server-side PNGs drawn with matplotlib.

A plot is a function of no argument returning PNG bytes, registered by name on a *board* (a page
that shows it) with :func:`plot_register`; :func:`plot_png` draws one by board and name
(``ValueError`` for any other), and one view (``review.views.plot_png``) serves every board. The
crowd's plots are on ``review``; ``loop.dashboard_plots`` registers the dashboard's on
``dashboard``, with the helpers here (:data:`ACCENT`, :data:`DPI`, :func:`no_data`, :func:`png`).
Figures use the object API (``Figure`` + Agg canvas), never ``pyplot``, whose global state is not
thread-safe in a web server. Data comes grouped from the selectors; with no data a plot says so.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from annotate import selectors

DPI = 100
ACCENT = "#417690"  # The admin's own blue, so the plots sit well in its pages.

#: A plot: draws itself from live data and returns PNG bytes.
Plot = Callable[[], bytes]
#: The registered plots: board -> name -> plot, in the order they were registered.
BOARDS: dict[str, dict[str, Plot]] = {}


def plot_register(*, board: str, name: str, plot: Plot) -> None:
    """Register ``plot`` as ``name`` on ``board`` (a name is a URL slug: ``<name>.png``)."""
    BOARDS.setdefault(board, {})[name] = plot


def plot_names(board: str) -> tuple[str, ...]:
    """The names of the plots on ``board``, in the order they were registered."""
    return tuple(BOARDS.get(board, {}))


def plot_png(name: str, *, board: str = "review") -> bytes:
    """The PNG bytes of the plot called ``name`` on ``board``; ValueError for any other name."""
    plots = BOARDS.get(board, {})
    if name not in plots:
        raise ValueError(f"unknown plot {name!r}; use one of {', '.join(plots)}")
    return plots[name]()


def posterior_histograms_png(*, bins: int = 20) -> bytes:
    """Small multiples: for each active concept, the histogram of the items' posteriors."""
    histograms = selectors.posterior_histograms(bins=bins)
    n = max(1, len(histograms))
    cols = min(5, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2.4 * cols, 1.9 * rows + 0.5), dpi=DPI, layout="constrained")
    fig.suptitle("Posterior per concept (items per bin; 0.5 = coin toss)")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    edges = np.linspace(0.0, 1.0, bins + 1)
    for index, ax in enumerate(axes.flat):
        if index >= len(histograms):
            ax.set_axis_off()
            continue
        histogram = histograms[index]
        ax.bar(edges[:-1], histogram.counts, width=1.0 / bins, align="edge", color=ACCENT)
        ax.axvline(0.5, color="#ba2121", linewidth=0.8, linestyle="--")
        ax.set_title(histogram.concept, fontsize=9)
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=7)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        if not histogram.counts.any():
            no_data(ax, "no labels")
    if not histograms:
        no_data(axes.flat[0], "no concepts")
    return png(fig)


def votes_per_item_png() -> bytes:
    """How many items have 0, 1, 2, ... classifications."""
    votes, items = selectors.item_vote_counts()
    fig = Figure(figsize=(7, 3.2), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.set_title("Classifications per item")
    ax.set_xlabel("classifications")
    ax.set_ylabel("items")
    if items.sum() == 0:
        no_data(ax, "no items")
    else:
        ax.bar(votes, items, width=0.9, color=ACCENT)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return png(fig)


def volunteer_skills_png() -> bytes:
    """One point per volunteer: sensitivity against specificity, the area showing their votes."""
    points = selectors.volunteer_skill_points()
    fig = Figure(figsize=(5.5, 5), dpi=DPI, layout="constrained")
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
        no_data(ax, "no volunteer skills yet")
    else:
        biggest = max(float(points.votes.max()), 1.0)
        sizes = 8 + 300 * np.sqrt(points.votes / biggest)
        ax.scatter(
            points.specificity,
            points.sensitivity,
            s=sizes,
            alpha=0.5,
            color=ACCENT,
            edgecolors="white",
            linewidths=0.5,
        )
    return png(fig)


def no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#666666")


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


for _name, _plot in (
    ("posteriors", posterior_histograms_png),
    ("votes", votes_per_item_png),
    ("skills", volunteer_skills_png),
):
    plot_register(board="review", name=_name, plot=_plot)
#: The crowd's plots, as the review screens show them.
PLOTS = plot_names("review")
