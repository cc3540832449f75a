from __future__ import annotations

from django.urls import path

from training import views

app_name = "training"

urlpatterns = [
    path("runs/<int:pk>/progress.json", views.run_progress, name="run-progress"),
    path("runs/<int:pk>/metrics.png", views.run_metrics_png, name="run-metrics-png"),
    path("items/<int:item_id>/explain/<slug:concept>.png", views.item_explain_png,
         name="item-explain-png"),
]
