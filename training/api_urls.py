from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from training import api, api_predict

router = SimpleRouter()
router.register("model-versions", api.ModelVersionViewSet, basename="api-model-version")

urlpatterns = [
    path("training-runs/", api.TrainingRunListCreateApi.as_view(), name="api-training-runs"),
    path(
        "training-runs/<int:pk>/", api.TrainingRunDetailApi.as_view(), name="api-training-run"
    ),
    path("round-requests/", api.RoundRequestListCreateApi.as_view(), name="api-round-requests"),
    path(
        "round-requests/<int:pk>/", api.RoundRequestDetailApi.as_view(), name="api-round-request"
    ),
    path("predict/", api_predict.PredictApi.as_view(), name="api-predict"),
    path("proposals/", api.ProposalCollectionApi.as_view(), name="api-proposals"),
    *router.urls,
]
