from __future__ import annotations

from django.urls import path

from training import views

app_name = "training"

urlpatterns = [
    path("runs/<int:pk>/progress.json", views.run_progress, name="run-progress"),
    path("runs/<int:pk>/metrics.png", views.run_metrics_png, name="run-metrics-png"),
    # The Grad-CAM overlay, and the bare map to lay over the page's own <img> (see the view).
    path("items/<int:item_id>/explain/<slug:concept>.png", views.item_explain_png,
         name="item-explain-png"),
    path("items/<int:item_id>/explain/<slug:concept>.map.png", views.item_explain_png,
         {"layer": "map"}, name="item-explain-map-png"),
]
