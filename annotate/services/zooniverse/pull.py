"""Classifications pulled from Zooniverse into the ingest, page by page or as a whole export.

:func:`classifications_pull` pages by keyset from ``SyncCursor.last_id``; each page is ingested
and the cursor advanced in one transaction, so a crash replays at most the page it was on, and two
pulls at once cannot interleave (the cursor row is locked for each commit and a page fetched from
a stale cursor is dropped).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from annotate.models import ImportReport, Subject, SyncCursor, Workflow, WorkflowVersion
from annotate.services.classifications import (
    WILDCARD_VERSION,
    ClassificationRecord,
    IngestCounts,
    QuarantineEntry,
    classifications_ingest,
    votes_stored_announce,
)
from annotate.services.zooniverse.operation import (
    client_or_connect,
    workflow_project_id,
    zooniverse_operation,
)
from annotate.services.zooniverse.workflows import workflow_versions_sync
from annotate.zooniverse.classification_records import survey_choices
from annotate.zooniverse.client import ClassificationPage, ClassificationPayload, ZooniverseClient

logger = logging.getLogger(__name__)

#: A pull stops before a page when less than this is left of the client's budget.
BUDGET_MARGIN_S = 60.0


@dataclass
class PullResult:
    """What one :func:`classifications_pull` did."""

    workflow_id: int
    #: The sync's import report; None when the pull found nothing and left no report.
    report_id: int | None
    counts: IngestCounts = field(default_factory=IngestCounts)
    pages: int = 0
    last_id: int = 0
    complete: bool = False
    stale_pages: int = 0

    def summary(self) -> str:
        state = "up to date" if self.complete else "more to fetch"
        return (
            f"workflow {self.workflow_id}: {self.pages} pages, {self.counts.summary()}; "
            f"cursor {self.last_id} ({state})"
        )


@dataclass(frozen=True)
class PageCommitted:
    """Handed to ``on_batch_committed`` after a page and its cursor have committed."""

    page: ClassificationPage
    counts: IngestCounts
    last_id: int


def classification_record(
    row: ClassificationPayload, *, task_key: str
) -> ClassificationRecord | QuarantineEntry:
    """One API classification as a record; a row that cannot be read becomes a quarantine entry.

    The API's ``value`` is an answer index (single), a list of indices (multiple) or a survey's
    list of ``{"choice", "answers", "filters"}`` (read as its choice codes). The API does
    not carry the volunteer's login: logged-in volunteers are keyed by user id; logged-out ones
    by their browser session (``not-logged-in-<session>``), the only stable handle the API gives.
    """
    raw = json.dumps(row, default=str)[:10_000]
    record_id = str(row.get("id", ""))

    def refuse(field_name: str, reason: str) -> QuarantineEntry:
        return QuarantineEntry(None, record_id, field_name, reason, raw)

    try:
        zooniverse_id = int(record_id)
    except ValueError:
        return refuse("id", "invalid_id")
    links = row.get("links") or {}
    metadata = row.get("metadata") or {}
    try:
        workflow_id = int(links.get("workflow") or 0)
        subject_ids = [int(s) for s in links.get("subjects") or []]
        user = links.get("user")
        user_id = int(user) if user not in (None, "") else None
    except (TypeError, ValueError):
        return refuse("links", "invalid_link_id")
    created_at = parse_datetime(str(row.get("created_at") or ""))
    if created_at is None:
        return refuse("created_at", "invalid_created_at")
    annotations = row.get("annotations") or []
    annotation = next(
        (a for a in annotations if isinstance(a, dict) and a.get("task") == task_key), None
    )
    # Without the task (a decision tree's other branch, a version without it) the volunteer was
    # not asked: stored, but no vote, as the export readers do.
    value = annotation.get("value") if annotation is not None else None
    answers: list[int] | list[str] | None
    choices = survey_choices(value)
    if annotation is None or value is None:
        answers = None  # a single-answer task left unanswered: the ingest reads it as skipped
    elif isinstance(value, int) and not isinstance(value, bool):
        answers = [value]
    elif choices is not None:  # a survey: the choice codes marked
        answers = choices
    elif isinstance(value, list):
        answers = value
    else:
        return refuse("annotations", "invalid_answer_type")
    session = str(metadata.get("session") or "")
    user_name = "" if user_id is not None else f"not-logged-in-{session[:64] or 'unknown'}"
    return ClassificationRecord(
        zooniverse_id=zooniverse_id,
        workflow_id=workflow_id,
        workflow_version=str(metadata.get("workflow_version") or ""),
        subject_ids=subject_ids,
        user_id=user_id,
        user_name=user_name,
        created_at=created_at,
        answers=answers,
        gold_standard=bool(row.get("gold_standard")),
        expert=bool(row.get("expert_classifier")),
        session=session,
        source="api",
        task_shown=annotation is not None,
    )


def _attach_subject_metadata(
    records: list[ClassificationRecord | QuarantineEntry], *, client: ZooniverseClient
) -> None:
    """Give records of subjects we have never seen their metadata, so they match an item."""
    wanted = {sid for r in records if isinstance(r, ClassificationRecord) for sid in r.subject_ids}
    known = set(
        Subject.objects.filter(zooniverse_id__in=wanted).values_list("zooniverse_id", flat=True)
    )
    unknown = sorted(wanted - known)
    if not unknown:
        return
    metadata = {int(s["id"]): s.get("metadata") or {} for s in client.subjects_get(unknown)}
    for record in records:
        if isinstance(record, ClassificationRecord):
            for sid in record.subject_ids:
                if sid in metadata:
                    record.subject_metadata[sid] = metadata[sid]


def _cursor_read(workflow: Workflow) -> int:
    cursor = SyncCursor.objects.filter(workflow=workflow).values_list("last_id", flat=True)
    return cursor.first() or 0


def _page_commit(
    *,
    workflow: Workflow,
    report: ImportReport,
    page: ClassificationPage,
    records: list[ClassificationRecord | QuarantineEntry],
) -> IngestCounts | None:
    """Ingest one page and move the cursor in one transaction; None if the cursor moved away.

    The cursor row is locked first (PostgreSQL ``SELECT ... FOR UPDATE``; on SQLite the
    IMMEDIATE transaction already holds the write lock), and the page is only written when the
    cursor is still where the page was fetched from: another pull that got there first wins, and
    this one refetches from the new position instead of writing a page out of order.
    """
    with transaction.atomic():
        cursor = SyncCursor.objects.select_for_update().get(workflow=workflow)
        if cursor.last_id != page.after_id:
            return None
        counts = classifications_ingest(
            records=records,
            workflow=workflow,
            report=report,
            batch_size=max(1, len(records)),
            cursor=True,
        )
        # The ingest moves the cursor to the largest id it read; a page whose rows were all
        # refused before an id could be read still has to move past them.
        SyncCursor.objects.filter(pk=cursor.pk, last_id__lt=page.last_id).update(
            last_id=page.last_id, updated_at=timezone.now()
        )
    return counts


@zooniverse_operation
def classifications_pull(
    *,
    workflow: Workflow,
    client: ZooniverseClient | None = None,
    page_size: int = 100,
    max_pages: int | None = None,
    on_batch_committed: Callable[[PageCommitted], None] | None = None,
) -> PullResult:
    """Fetch the workflow's classifications after the stored cursor and ingest them page by page.

    Each page goes through :func:`classifications_ingest` (idempotent upserts, answer maps,
    repeats, quarantine) and moves ``SyncCursor.last_id`` in the same transaction;
    ``on_batch_committed`` runs after that commit. The pull ends at the first empty page (or a
    page with nothing newer than the cursor), after ``max_pages``, or when the client's wall
    budget is nearly spent (``complete`` is then False and the next run continues).

    Versions named by classifications but not stored yet are fetched once per pull
    (:func:`workflow_versions_sync`); rows of versions still unknown are quarantined.
    """
    client = client_or_connect(client)
    project_id = workflow_project_id(workflow)
    SyncCursor.objects.get_or_create(workflow=workflow)
    report = ImportReport.objects.create(
        kind=ImportReport.Kind.SYNC,
        source=f"zooniverse project {project_id} workflow {workflow.zooniverse_id}",
    )
    result = PullResult(workflow_id=workflow.zooniverse_id, report_id=report.pk)
    versions_synced = False
    known_versions = set(
        WorkflowVersion.objects.filter(workflow=workflow).values_list("version", flat=True)
    )
    try:
        last_id = _cursor_read(workflow)
        while max_pages is None or result.pages < max_pages:
            # Stop between pages when the budget is nearly spent (the next run continues), but
            # always try one page, so a small budget cannot starve the sync for good.
            margin = min(BUDGET_MARGIN_S, client.policy.budget_s / 10)
            if result.pages and client.time_left() < margin:
                logger.warning(
                    "Workflow %s: budget nearly spent; stopping at cursor %s",
                    workflow.zooniverse_id,
                    last_id,
                )
                break
            page = client.classifications_page(
                project_id=project_id,
                workflow_id=workflow.zooniverse_id,
                last_id=last_id,
                page_size=page_size,
            )
            if page is None:
                result.complete = True
                break
            records = [classification_record(row, task_key=workflow.task_key) for row in page.rows]
            versions = {r.workflow_version for r in records if isinstance(r, ClassificationRecord)}
            if not versions_synced and versions - known_versions - {WILDCARD_VERSION}:
                workflow_versions_sync(workflow=workflow, client=client)
                versions_synced = True
            _attach_subject_metadata(records, client=client)
            counts = _page_commit(workflow=workflow, report=report, page=page, records=records)
            if counts is None:
                result.stale_pages += 1
                last_id = _cursor_read(workflow)
                logger.info(
                    "Workflow %s: another pull moved the cursor to %s; continuing there",
                    workflow.zooniverse_id,
                    last_id,
                )
                continue
            result.counts.add(counts)
            result.pages += 1
            last_id = page.last_id
            if on_batch_committed is not None:
                on_batch_committed(PageCommitted(page=page, counts=counts, last_id=last_id))
    except BaseException as exc:
        result.last_id = _cursor_read(workflow)
        report.finish(ImportReport.Status.FAILED, f"{type(exc).__name__}: {exc}", keep_notes=True)
        # The pages committed before the failure are stored votes all the same.
        votes_stored_announce(workflow=workflow, created=result.counts.created, source="pull")
        raise
    result.last_id = _cursor_read(workflow)
    votes_stored_announce(workflow=workflow, created=result.counts.created, source="pull")
    if result.pages == 0 and result.stale_pages == 0:
        # A periodic pull that found nothing leaves no report behind: every few minutes per
        # workflow they would bury the ones that matter. The cursor's updated_at tells when
        # classifications last arrived.
        report.delete()
        result.report_id = None
    else:
        report.finish(ImportReport.Status.SUCCEEDED, result.summary(), keep_notes=True)
    return result


@zooniverse_operation
def classifications_export_pull(
    *,
    workflow: Workflow,
    client: ZooniverseClient | None = None,
    directory: Path | None = None,
    generate: bool = True,
    deadline_s: float = 3600.0,
    poll_s: float = 15.0,
    max_bytes: int | None = None,
) -> tuple[ImportReport, IngestCounts]:
    """Request the workflow's classification export, download it and import it.

    The bulk alternative to :func:`classifications_pull` (a first sync of a large project, or a
    reconciliation). The export must be no older than the request and ready within
    ``deadline_s``; it is streamed to a temporary file under ``directory`` (default
    ``ARTIFACT_ROOT/exports``) with a byte cap (``ZOONIVERSE_EXPORT_MAX_BYTES``, default 2 GiB),
    and the file is deleted afterwards. Any export failure raises before a single row is
    ingested; the import itself is idempotent (classification ids are unique).
    """
    from annotate.services.zooniverse.classification_import import classifications_import

    client = client_or_connect(client)
    directory = directory or Path(settings.ARTIFACT_ROOT) / "exports"
    cap = max_bytes or int(settings.ZOONIVERSE_EXPORT_MAX_BYTES)
    path = client.export_fetch(
        resource="workflows",
        resource_id=workflow.zooniverse_id,
        directory=directory,
        max_bytes=cap,
        generate=generate,
        deadline_s=deadline_s,
        poll_s=poll_s,
    )
    try:
        return classifications_import(path=path, workflow_id=workflow.zooniverse_id)
    finally:
        path.unlink(missing_ok=True)


def workflows_active() -> list[Workflow]:
    """The workflows a periodic sync pulls."""
    return list(Workflow.objects.filter(active=True).order_by("zooniverse_id"))
