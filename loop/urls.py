"""The dashboard, mounted beside the review screens under /review/ by config/urls.py."""

from __future__ import annotations

from django.urls import path

from loop import dashboard_plots, views  # noqa: F401 - dashboard_plots registers its plots
from review.views import plot_png

app_name = "loop"

urlpatterns = [
    path("dashboard/", views.dashboard_page, name="dashboard"),
    # The plots of the dashboard board (registered by importing loop.dashboard_plots), served
    # by the one plot view.
    path("dashboard/<slug:name>.png", plot_png, {"board": "dashboard"}, name="dashboard_plot"),
]
