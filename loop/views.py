"""The dashboard: the whole loop on one page, with server-side PNG plots beside small tables.

Same access rule as the review screens (active staff with ``annotate.view_item``); the plots are
drawn per request from live data and never cached.
"""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_GET

from annotate.review_views import _context, can_view
from loop import dashboard, dashboard_plots


def _release_links(release) -> list[tuple[str, str]]:
    """(label, url) of a release's API record and its file downloads; none if the API is absent."""
    if release is None:
        return []
    try:
        links = [("record (API)", reverse("api:release-detail", args=[release.pk]))]
        links += [
            (what, reverse("api:release-download", args=[release.pk, what]))
            for what in release.formats or []
        ]
    except NoReverseMatch:
        return []
    return links


def _model_admin_url() -> str:
    try:
        return reverse("admin:training_modelversion_changelist")
    except NoReverseMatch:
        return ""


@staff_member_required
@require_GET
def dashboard_page(request: HttpRequest) -> HttpResponse:
    if not can_view(request):
        raise PermissionDenied
    rounds, n_rounds = dashboard.rounds_recent()
    labels = dashboard.label_stats()
    releases = dashboard.release_summary()
    models = dashboard.model_versions_curve()
    return render(
        request,
        "loop/dashboard.html",
        _context(
            request,
            title="Dashboard",
            rounds=rounds,
            n_rounds=n_rounds,
            daily=dashboard.classifications_per_day(),
            states=dashboard.item_states(),
            retirement=dashboard.retirement_counts(),
            labels=labels,
            skills=dashboard.skill_summary(),
            models=models,
            latest_model=models[-1] if models else None,
            model_admin_url=_model_admin_url(),
            releases=releases,
            release_links=_release_links(releases.latest),
        ),
    )


@staff_member_required
@require_GET
def dashboard_plot(request: HttpRequest, name: str) -> HttpResponse:
    if not can_view(request):
        raise PermissionDenied
    if name not in dashboard_plots.DASHBOARD_PLOTS:
        raise Http404("no such plot")
    response = HttpResponse(dashboard_plots.dashboard_plot_png(name), content_type="image/png")
    # Drawn from live data on each request; a cached copy would show yesterday's loop.
    response["Cache-Control"] = "no-store"
    return response
