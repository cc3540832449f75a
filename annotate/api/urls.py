from __future__ import annotations

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from annotate.api import docs, root, views

app_name = "api"

router = SimpleRouter()
router.register("concepts", views.ConceptViewSet, basename="concept")
router.register("items", views.ItemViewSet, basename="item")
router.register("labels", views.LabelViewSet, basename="label")
router.register("reviews", views.ReviewViewSet, basename="review")
router.register("volunteers", views.VolunteerViewSet, basename="volunteer")
router.register("rounds", views.RoundViewSet, basename="round")
router.register("releases", views.ReleaseViewSet, basename="release")

urlpatterns = [
    path("", root.ApiRootApi.as_view(), name="root"),
    path("schema/", docs.schema_view, name="schema"),
    path("docs/", docs.api_docs, name="docs"),
    path("", include(router.urls)),
]
