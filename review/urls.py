"""The curator's review screens, mounted under /review/ by config/urls.py."""

from __future__ import annotations

from django.urls import path

from review import views as review_views

app_name = "review"

urlpatterns = [
    path("", review_views.queue, name="queue"),
    path("bulk-accept/", review_views.bulk_accept, name="bulk_accept"),
    path("item/<int:pk>/", review_views.item, name="item"),
    path("plots/", review_views.plots_page, name="plots"),
    path("plots/<slug:name>.png", review_views.plot_png, name="plot"),
]
