"""The admin's staff actions page: sync now, request the next round, push a round, make a release.

Mounted by ``loop.admin`` under the admin site (``/admin/loop/loopstep/actions/``), so the
admin's login and ``is_staff`` check come first. Each action then needs its own permission
(:data:`ACTION_PERMISSIONS`); a staff account holding none of them gets 403 on the page, and
403 on any form or list it may not use.

No action runs in the request: each one goes to the service its API or command uses, which
records a row and sends a Celery task after commit (the pipeline's pull step; a round request;
the round request push task; the release build). The page lists each action's recent runs
(``loop.staff_selectors``) and ``loop/static/loop/staff_actions.js`` refreshes those lists from
``actions/runs.json`` every 5 s without reloading.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.forms import Form
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from annotate import roles
from loop import staff_selectors
from loop.dashboard import exact_time, time_ago
from loop.staff_forms import RoundPushForm, RoundRequestForm, SyncForm

SYNC, ROUND, PUSH, RELEASE = "sync", "round", "push", "release"

#: The permission each action needs. Rounds and pushes need what the round-request API needs
#: (``annotate.add_round``: "choose and push rounds", staff and admin). A pull only fetches now
#: what beat fetches every ZOONIVERSE_SYNC_INTERVAL and talks to Zooniverse on the project's
#: behalf as a push does (``sync_zooniverse`` does both), so it needs the same permission rather
#: than one of its own that no default role would hold. Releases need what the release admin's
#: add form and the release API need.
ACTION_PERMISSIONS = {
    SYNC: roles.PERM_ROUNDS,
    ROUND: roles.PERM_ROUNDS,
    PUSH: roles.PERM_ROUNDS,
    RELEASE: roles.PERM_RELEASE,
}
#: Which list of recent runs each action shows.
ACTION_SECTIONS = {
    SYNC: staff_selectors.SYNC,
    ROUND: staff_selectors.ROUNDS,
    PUSH: staff_selectors.PUSHES,
    RELEASE: staff_selectors.RELEASES,
}
FORMS: dict[str, type[Form]] = {SYNC: SyncForm, ROUND: RoundRequestForm, PUSH: RoundPushForm}
#: How often the page refreshes its lists, in ms (also given to the script).
REFRESH_MS = 5000


def allowed_actions(user: Any) -> list[str]:
    """The actions this account may use, in the page's order (none: the page is 403)."""
    if not (user.is_active and user.is_staff):
        return []
    return [action for action, perm in ACTION_PERMISSIONS.items() if user.has_perm(perm)]


def _stamped(runs: dict[str, Any]) -> dict[str, Any]:
    """Each row with ``ago`` (relative to the lists' own clock, as the script computes it) and
    ``exact`` (UTC), for the first render."""
    now = datetime.fromisoformat(runs["generated_at"])
    for rows in runs["sections"].values():
        for row in rows:
            moment = datetime.fromisoformat(row["at"]) if row["at"] else None
            row["ago"] = time_ago((now - moment).total_seconds()) if moment else ""
            row["exact"] = exact_time(moment) if moment else ""
    return runs


def _page(
    request: HttpRequest, *, bound: dict[str, Form] | None = None, status: int = 200
) -> HttpResponse:
    actions = allowed_actions(request.user)
    sections = tuple(ACTION_SECTIONS[a] for a in actions)
    runs = _stamped(staff_selectors.staff_runs(sections=sections))
    forms = {a: (bound or {}).get(a) or FORMS[a]() for a in actions if a in FORMS}
    context = {
        **admin.site.each_context(request),
        "title": "Staff actions",
        "actions": actions,
        "forms": forms,
        "runs": runs,
        "runs_generated_exact": exact_time(datetime.fromisoformat(runs["generated_at"])),
        "runs_url": reverse("admin:loop_staff_actions_runs"),
        "refresh_ms": REFRESH_MS,
        "release_add_url": reverse("admin:annotate_datasetrelease_add"),
    }
    return render(request, "loop/admin/staff_actions.html", context, status=status)


@require_GET
def staff_actions_page(request: HttpRequest) -> HttpResponse:
    if not allowed_actions(request.user):
        raise PermissionDenied
    return _page(request)


@require_GET
def staff_actions_runs(request: HttpRequest) -> JsonResponse:
    """The recent runs of the actions this account may use, as the page lists them."""
    actions = allowed_actions(request.user)
    if not actions:
        raise PermissionDenied
    runs = staff_selectors.staff_runs(sections=tuple(ACTION_SECTIONS[a] for a in actions))
    response = JsonResponse(runs)
    response["Cache-Control"] = "no-store"
    return response


def _sync(request: HttpRequest, form: Form) -> str:
    from loop.services.staff_actions import pull_request_now

    return pull_request_now(user=request.user, workflow_id=form.cleaned_data["workflow"]).message()


def _round(request: HttpRequest, form: Form) -> str:
    from training.services.round_requests import round_request_create

    data = form.cleaned_data
    made = round_request_create(
        user=request.user, size=data["size"], strategy=data["strategy"], push=data["push"]
    )
    strategy = data["strategy"] or "the default strategy"
    push = "pushed to Zooniverse once chosen" if data["push"] else "not pushed"
    return (
        f"Round request {made.pk} queued: {data['size']} items by {strategy}, {push}; its "
        "progress shows under Request the next round."
    )


def _push(request: HttpRequest, form: Form) -> str:
    from training.services.round_pushes import round_push_request

    made = round_push_request(user=request.user, round_id=form.cleaned_data["round"])
    name = made.round.name if made.round else f"round {form.cleaned_data['round']}"
    return (
        f"Push of {name} queued (round request {made.pk}); its progress shows under Push a round."
    )


RUN = {SYNC: _sync, ROUND: _round, PUSH: _push}


@require_POST
def staff_action_submit(request: HttpRequest, action: str) -> HttpResponse:
    """Check the form, hand it to its service (which queues the task), and say what was queued.

    Bad input re-renders the page with the errors on the fields at fault (status 400).
    """
    from loop.services.staff_actions import StaffActionError
    from training.services.round_requests import RoundRequestError

    if action not in RUN:
        raise Http404("no such action")
    if action not in allowed_actions(request.user):
        raise PermissionDenied
    form = FORMS[action](request.POST)
    if form.is_valid():
        try:
            message = RUN[action](request, form)
        except (StaffActionError, RoundRequestError) as exc:
            form.add_error(exc.field if exc.field in form.fields else None, str(exc))
        else:
            messages.success(request, message)
            return HttpResponseRedirect(f"{reverse('admin:loop_staff_actions')}#action-{action}")
    return _page(request, bound={action: form}, status=400)
