"""What the staff actions page shows beside each form: that action's recent runs, and their state.

One list per action, newest first, each row a :class:`RunRow` with a status (``queued``,
``running``, ``retrying``, ``succeeded``, or ``failed`` with the reason): sync shows the pull
step's waiting or running request, then its last runs (``LoopEvent``); rounds the last round
requests (``RoundRequest``); pushes the round requests whose push was asked for later
(``params["push_requested_at"]``); releases the last dataset releases. A fixed handful of
queries whatever the size of the database. The page renders :func:`staff_runs`, and
``loop/static/loop/staff_actions.js`` refreshes it from the same function's JSON.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from loop.models import LoopEvent, LoopStep, StepName

#: Rows per list.
RECENT = 5

#: The sections, in the page's order.
SYNC, ROUNDS, PUSHES, RELEASES = "sync", "rounds", "pushes", "releases"
SECTIONS = (SYNC, ROUNDS, PUSHES, RELEASES)

#: A pull event's status, as a run's.
# Keyed by str: the model's ``status`` reads back as a plain str, equal to its member.
_EVENT_STATUS: dict[str, str] = {
    LoopEvent.Status.DONE: "succeeded",
    LoopEvent.Status.NOTHING: "succeeded",
    LoopEvent.Status.RETRYING: "retrying",
    LoopEvent.Status.FAILED: "failed",
}


class RunRow(TypedDict):
    #: Stable across refreshes: "pull-request", "pull-event-12", "round-request-3", "release-4".
    key: str
    status: str
    title: str
    detail: str
    error: str
    by: str
    #: When it finished, else started, else was asked for (ISO 8601).
    at: str | None
    url: str


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _url(name: str, pk: int) -> str:
    try:
        return reverse(name, args=[pk])
    except NoReverseMatch:
        return ""


def sync_runs(*, now: datetime, limit: int = RECENT) -> list[RunRow]:
    """The pull step's pending request (queued or running), then its last runs."""
    rows: list[RunRow] = []
    step = LoopStep.objects.filter(name=StepName.PULL).first()
    if step is not None and step.request_seq > step.served_seq:
        running = bool(step.running_since and step.lease_until and step.lease_until > now)
        rows.append(
            {
                "key": "pull-request",
                "status": "running" if running else "queued",
                "title": step.request_reason or "pull",
                "detail": "pulling every active workflow" if running else "waiting for a worker",
                "error": "",
                "by": "",
                "at": _iso(step.running_since if running else step.requested_at),
                "url": "",
            }
        )
    for event in LoopEvent.objects.filter(step=StepName.PULL)[:limit]:
        rows.append(
            {
                "key": f"pull-event-{event.pk}",
                "status": _EVENT_STATUS.get(event.status, event.status),
                "title": event.trigger or "pull",
                "detail": event.summary,
                "error": event.error,
                "by": "",
                "at": _iso(event.finished_at),
                "url": _url("admin:loop_loopevent_change", event.pk),
            }
        )
    return rows


def _round_request_row(request, *, push: bool) -> RunRow:
    params = request.params or {}
    round_ = request.round
    if push:
        title = f"push {round_.name}" if round_ is not None else "push"
        by = params.get("push_requested_by") or ""
        at = request.finished_at or request.started_at
    else:
        strategy = params.get("strategy") or "default strategy"
        title = f"round request {request.pk}: {params.get('size', '?')} items, {strategy}"
        title += ", push" if params.get("push") else ""
        by = request.requested_by.get_username() if request.requested_by else ""
        if not by and params.get("trigger"):
            by = f"the loop ({params['trigger']})"
        at = request.finished_at or request.started_at or request.created_at
    detail = request.summary
    if round_ is not None and round_.name not in detail:
        detail = f"{round_.name}: {detail}" if detail else round_.name
    return {
        "key": f"{'push' if push else 'round'}-request-{request.pk}",
        "status": request.status,
        "title": title,
        "detail": detail,
        "error": request.error,
        "by": by,
        "at": _iso(at),
        "url": _url("admin:training_roundrequest_change", request.pk),
    }


def round_runs(*, limit: int = RECENT) -> list[RunRow]:
    """The last round requests, whoever asked (staff, the API, the loop)."""
    from training.models import RoundRequest

    requests = RoundRequest.objects.select_related("round", "requested_by").order_by(
        "-created_at", "-id"
    )[:limit]
    return [_round_request_row(r, push=False) for r in requests]


def push_runs(*, limit: int = RECENT) -> list[RunRow]:
    """The last pushes of rounds chosen earlier, newest push first."""
    from training.models import RoundRequest

    requests = (
        RoundRequest.objects.filter(params__has_key="push_requested_at")
        .select_related("round", "requested_by")
        .order_by("-started_at", "-id")[:limit]
    )
    return [_round_request_row(r, push=True) for r in requests]


def release_runs(*, limit: int = RECENT) -> list[RunRow]:
    """The last dataset releases, whoever made them."""
    from annotate.models import DatasetRelease

    rows: list[RunRow] = []
    for release in DatasetRelease.objects.select_related("created_by").order_by("-version")[:limit]:
        formats = ", ".join(release.formats or [])
        if release.status == DatasetRelease.Status.SUCCEEDED:
            items = "item" if release.n_items == 1 else "items"
            detail = f"{release.n_items} {items} ({formats})"
        else:
            detail = formats
        rows.append(
            {
                "key": f"release-{release.pk}",
                "status": release.status,
                "title": f"release {release.version}"
                + (f": {release.note}" if release.note else ""),
                "detail": detail,
                "error": release.error,
                "by": release.created_by.get_username() if release.created_by else "",
                "at": _iso(release.finished_at or release.created_at),
                "url": _url("admin:annotate_datasetrelease_change", release.pk),
            }
        )
    return rows


def staff_runs(*, sections: tuple[str, ...] = SECTIONS) -> dict[str, object]:
    """The recent runs of each section asked for, JSON-ready, with the time they were read."""
    now = timezone.now()
    unknown = set(sections) - set(SECTIONS)
    assert not unknown, f"unknown sections {sorted(unknown)}: use some of {SECTIONS}"
    readers = {
        SYNC: lambda: sync_runs(now=now),
        ROUNDS: round_runs,
        PUSHES: push_runs,
        RELEASES: release_runs,
    }
    return {
        "generated_at": now.isoformat(),
        "sections": {name: readers[name]() for name in SECTIONS if name in sections},
    }
