"""Subjects retired and unretired on Zooniverse, and their retirement copied back here.

Retirement calls are idempotent upstream and mirrored locally afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from annotate.models import Subject, Workflow
from annotate.services.zooniverse.operation import client_or_connect
from annotate.zooniverse.client import ZooniverseClient


def _active(subjects: Iterable[Subject]) -> list[Subject]:
    return [s for s in subjects if s.upstream_state == Subject.Upstream.ACTIVE]


def subjects_retire(
    *,
    workflow: Workflow,
    subjects: Iterable[Subject],
    reason: str = "consensus",
    client: ZooniverseClient | None = None,
) -> int:
    """Retire subjects in the workflow (batches of 100) and mirror it locally; the number sent.

    Retiring an already retired subject is a no-op upstream, so a re-run is harmless.
    """
    chosen = _active(subjects)
    if not chosen:
        return 0
    client = client_or_connect(client)
    with client.operation():
        client.subjects_retire(
            workflow_id=workflow.zooniverse_id,
            subject_ids=[s.zooniverse_id for s in chosen],
            reason=reason,
        )
    Subject.objects.filter(pk__in=[s.pk for s in chosen], retired_at__isnull=True).update(
        retired_at=timezone.now(), retirement_reason=reason[:32]
    )
    return len(chosen)


def subjects_unretire(
    *,
    workflow: Workflow,
    subjects: Iterable[Subject],
    client: ZooniverseClient | None = None,
) -> int:
    """Put subjects back in the workflow's queue and clear their local retirement."""
    chosen = _active(subjects)
    if not chosen:
        return 0
    client = client_or_connect(client)
    with client.operation():
        client.subjects_unretire(
            workflow_id=workflow.zooniverse_id, subject_ids=[s.zooniverse_id for s in chosen]
        )
    Subject.objects.filter(pk__in=[s.pk for s in chosen]).update(
        retired_at=None, retirement_reason=""
    )
    return len(chosen)


def subject_statuses_sync(
    *,
    workflow: Workflow,
    subjects: Iterable[Subject],
    client: ZooniverseClient | None = None,
) -> int:
    """Copy Zooniverse's retirement state of subjects into ours; the number of subjects changed.

    Subjects retire upstream by classification count too, not only when we ask.
    """
    by_zid = {s.zooniverse_id: s for s in _active(subjects)}
    if not by_zid:
        return 0
    client = client_or_connect(client)
    with client.operation():
        statuses = client.subject_workflow_statuses(
            workflow_id=workflow.zooniverse_id, subject_ids=list(by_zid)
        )
    changed: list[Subject] = []
    for status in statuses:
        subject = by_zid.get(int((status.get("links") or {}).get("subject") or 0))
        if subject is None:
            continue
        retired_at = parse_datetime(str(status.get("retired_at") or "")) or None
        reason = str(status.get("retirement_reason") or "")[:32] if retired_at else ""
        changed_state = (subject.retired_at is None) != (retired_at is None)
        if changed_state or subject.retirement_reason != reason:
            subject.retired_at, subject.retirement_reason = retired_at, reason
            changed.append(subject)
    Subject.objects.bulk_update(changed, ["retired_at", "retirement_reason"])
    return len(changed)
