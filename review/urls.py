"""The curator's review screens, mounted under /review/ by config/urls.py."""

from __future__ import annotations

from django.urls import path

from review import views

app_name = "review"

urlpatterns = [
    path("", views.queue, name="queue"),
    path("bulk-accept/", views.bulk_accept, name="bulk_accept"),
    path("item/<int:pk>/", views.item, name="item"),
    path("item/<int:pk>/votes.json", views.item_votes, name="item_votes"),
    path("decisions/", views.decisions, name="decisions"),
    path("decisions/<int:pk>/undo/", views.undo, name="undo"),
    path("decisions/bulk/<uuid:batch>/undo/", views.undo_batch, name="undo_batch"),
    path("plots/", views.plots_page, name="plots"),
    path("plots/<slug:name>.png", views.plot_png, name="plot"),
]
