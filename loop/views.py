"""The dashboard: the whole loop on one page, with server-side PNG plots beside small tables.

Same access rule as the review screens (active staff with ``annotate.view_item``); the plots are
drawn per request from live data and never cached. The loop panel at the top is
``loop.selectors.loop_status()``, rendered here and refreshed in place every 10 s by
``loop/static/loop/dashboard.js`` from ``/api/v1/loop/``.
"""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_GET

from loop import dashboard
from review.views import admin_frame_context, can_view

#: The loop panel lists this many recent events; its refresh asks the API for as many.
LOOP_EVENTS = 10


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


def _run_url_template(request: HttpRequest) -> str:
    """The admin page of a training run, with ``dashboard.RUN_ID`` for its id; empty for a user
    who may not open training runs (the panel then shows the run without a link)."""
    if not request.user.has_perm("training.view_trainingrun"):
        return ""
    try:
        return reverse("admin:training_trainingrun_change", args=[dashboard.RUN_ID])
    except NoReverseMatch:
        return ""


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
    run_url_template = _run_url_template(request)
    return render(
        request,
        "loop/dashboard.html",
        admin_frame_context(
            request,
            title="Dashboard",
            loop=dashboard.loop_panel(events=LOOP_EVENTS, run_url_template=run_url_template),
            loop_api_url=f"{reverse('api-loop')}?events={LOOP_EVENTS}",
            run_url_template=run_url_template,
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
