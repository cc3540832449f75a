"""The dashboard, mounted beside the review screens under /review/ by config/urls.py."""

from __future__ import annotations

from django.urls import path

from loop import views

app_name = "loop"

urlpatterns = [
    path("dashboard/", views.dashboard_page, name="dashboard"),
    path("dashboard/<slug:name>.png", views.dashboard_plot, name="dashboard_plot"),
]
