"""The dashboard's PNG plots: votes per day, labels and agreement per concept, the learning curve.

Registered on the ``dashboard`` board of :mod:`annotate.plots` when this module is imported (by
``loop.views``), served by its one view. Drawn like the crowd's plots (``Figure`` + Agg canvas,
never pyplot, which keeps global state that is not thread-safe in a web server) and with their
helpers, so both pages look alike. The volunteer-skill scatter is
:func:`annotate.plots.volunteer_skills_png` itself, not a copy. Data comes grouped from
:mod:`loop.dashboard`; each plot says so when there is none.
"""

from __future__ import annotations

from typing import cast

import numpy as np
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from annotate import plots
from annotate.plots import ACCENT, DPI, no_data, plot_names, plot_register, png
from loop import dashboard

_SECOND = "#79aec8"  # the admin's lighter blue, for a second series beside the accent


def classifications_per_day_png() -> bytes:
    """Classifications per day, and their running total on a second axis."""
    daily = dashboard.classifications_per_day()
    fig = Figure(figsize=(7, 3.2), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.set_title("Classifications per day (UTC)")
    ax.set_ylabel("classifications")
    if not daily.days:
        no_data(ax, "no classifications yet")
        return png(fig)
    days = np.array(daily.days, dtype="datetime64[D]")
    # Bars almost a day wide read as a histogram; a single day still shows as a bar, not a dot.
    ax.bar(days, daily.counts, width=0.9, align="edge", color=ACCENT)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    total = ax.twinx()
    total.plot(days + np.timedelta64(1, "D"), np.cumsum(daily.counts), color="#ba2121")
    total.set_ylabel("running total", color="#ba2121")
    total.set_ylim(bottom=0)
    total.tick_params(axis="y", colors="#ba2121")
    return png(fig)


def label_distribution_png() -> bytes:
    """Items per concept in the final labels, the curators' share drawn darker."""
    stats = dashboard.label_stats()
    fig = Figure(figsize=(7, 0.28 * max(4, len(stats.concepts)) + 1.2), dpi=DPI)
    fig.set_layout_engine("constrained")
    ax = fig.subplots()
    ax.set_title("Final labels: items per concept")
    if not stats.concepts:
        no_data(ax, "no concepts")
        return png(fig)
    labels = [concept.label for concept in stats.concepts]
    crowd = np.array([c.final_positive - c.from_curators for c in stats.concepts])
    curated = np.array([c.from_curators for c in stats.concepts])
    y = np.arange(len(labels))
    ax.barh(y, curated, color="#264b5d", label="curator")
    ax.barh(y, crowd, left=curated, color=ACCENT, label="crowd (posterior > 0.5)")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()  # vocabulary order from the top, as in the table
    ax.set_xlabel("items")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if (crowd + curated).sum() == 0:
        no_data(ax, "no labels yet")
    else:
        ax.legend(loc="lower right", fontsize=8)
    return png(fig)


def agreement_png() -> bytes:
    """Per concept: mean |2p - 1| of the posteriors and the share of settled labels."""
    stats = dashboard.label_stats()
    fig = Figure(figsize=(7, 0.28 * max(4, len(stats.concepts)) + 1.2), dpi=DPI)
    fig.set_layout_engine("constrained")
    ax = fig.subplots()
    ax.set_title("Agreement per concept")
    if not stats.concepts:
        no_data(ax, "no concepts")
        return png(fig)
    labels = [concept.label for concept in stats.concepts]
    agreement = np.array([c.agreement if c.agreement is not None else 0.0 for c in stats.concepts])
    settled = np.array([c.settled_share or 0.0 for c in stats.concepts])
    y = np.arange(len(labels))
    height = 0.4
    ax.barh(y - height / 2, agreement, height=height, color=ACCENT, label="mean |2p − 1|")
    ax.barh(
        y + height / 2,
        settled,
        height=height,
        color=_SECOND,
        label=f"settled (p ≥ {stats.confidence:g} or ≤ {1 - stats.confidence:.2g})",
    )
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    if not any(c.labelled for c in stats.concepts):
        no_data(ax, "no aggregated labels yet")
    else:
        ax.legend(loc="lower right", fontsize=8)
    return png(fig)


def learning_curve_png() -> bytes:
    """Validation mAP of each model version in order: is the loop making the model better?"""
    points = dashboard.model_versions_curve()
    fig = Figure(figsize=(7, 3.2), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.set_title("Learning curve: validation mAP per model version")
    ax.set_xlabel("model version")
    ax.set_ylabel("validation score")
    ax.set_ylim(0, 1.02)
    scored = [p for p in points if p.val_map is not None]
    if not scored:
        no_data(ax, "no model yet" if not points else "no validation mAP yet")
        return png(fig)
    x = np.arange(len(scored))
    val_maps = cast(list[float], [p.val_map for p in scored])  # ``scored``: none is None
    ax.plot(x, val_maps, marker="o", color=ACCENT, label="mAP")
    f1 = [(i, p.micro_f1) for i, p in enumerate(scored) if p.micro_f1 is not None]
    if f1:
        ax.plot(*zip(*f1, strict=True), marker="s", linestyle="--", color=_SECOND, label="micro-F1")
        ax.legend(loc="lower right", fontsize=8)
    active = [i for i, p in enumerate(scored) if p.status == "active"]
    if active:
        ax.scatter(active, [val_maps[i] for i in active], s=140, facecolors="none",
                   edgecolors="#ba2121", linewidths=1.5, zorder=3)  # fmt: skip
    ax.set_xticks(x, [f"v{p.pk}" for p in scored], fontsize=8)
    return png(fig)


for _name, _plot in (
    ("classifications", classifications_per_day_png),
    ("labels", label_distribution_png),
    ("agreement", agreement_png),
    ("skills", plots.volunteer_skills_png),
    ("learning", learning_curve_png),
):
    plot_register(board="dashboard", name=_name, plot=_plot)
#: The dashboard's plots, in the order the page shows them.
DASHBOARD_PLOTS = plot_names("dashboard")
