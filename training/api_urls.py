from __future__ import annotations

from django.urls import path

from training import api

urlpatterns = [
    path("training-runs/", api.TrainingRunListCreateApi.as_view(), name="api-training-runs"),
    path(
        "training-runs/<int:pk>/", api.TrainingRunDetailApi.as_view(), name="api-training-run"
    ),
    path("round-requests/", api.RoundRequestListCreateApi.as_view(), name="api-round-requests"),
    path(
        "round-requests/<int:pk>/", api.RoundRequestDetailApi.as_view(), name="api-round-request"
    ),
]
