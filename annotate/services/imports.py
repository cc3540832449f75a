"""Importing a Zooniverse classification export file: parse, ingest, report.

The file is streamed: the parser reads one physical line at a time and the ingest takes a batch
of records at a time, so a 1,000,000-row export needs no more memory than one batch. Each batch
commits on its own; if the import fails half-way, running it again skips what is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from django.db import connections, router
from django.utils import timezone

from annotate.models import ImportReport, Workflow
from annotate.services.classifications import BatchResult, IngestCounts, classifications_ingest
from annotate.zooniverse.exports import ExportFormatError, parse_classification_export


class ClassificationImportError(Exception):
    """The import could not run or stopped: the message says why; the report says how far."""


def classifications_import(
    *,
    path: Path,
    workflow_id: int,
    batch_size: int = 5000,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[ImportReport, IngestCounts]:
    """Import a classification export for one configured workflow.

    ``progress(rows, bytes)`` is called after each committed batch with the rows and bytes read
    since the previous call. Bad rows are quarantined on the returned report and do not fail the
    import; a missing file, a file that is not a classification export, or a database error does,
    after the report is marked failed.
    """
    workflow = Workflow.objects.filter(zooniverse_id=workflow_id).first()
    if workflow is None or not workflow.versions.exists():
        raise ClassificationImportError(
            f"workflow {workflow_id} is not configured: run configure_workflow "
            f"--workflow-id {workflow_id} [--workflow-export wf.csv] first"
        )
    _sqlite_tune()
    report = ImportReport.objects.create(
        kind=ImportReport.Kind.CLASSIFICATIONS, source=str(path)[:1000]
    )
    try:
        with path.open("rb") as handle:
            position = 0

            def committed(result: BatchResult) -> None:
                nonlocal position
                if progress is not None:
                    now = handle.tell()
                    progress(result.counts.read, now - position)
                    position = now

            counts = classifications_ingest(
                records=parse_classification_export(handle, task_key=workflow.task_key),
                workflow=workflow,
                report=report,
                batch_size=batch_size,
                on_batch_committed=committed,
            )
    except (OSError, ExportFormatError) as exc:
        _finish(report, ImportReport.Status.FAILED, f"{path}: {exc}")
        raise ClassificationImportError(f"{path}: {exc}") from exc
    except Exception as exc:
        _finish(report, ImportReport.Status.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    _finish(report, ImportReport.Status.SUCCEEDED, counts.summary())
    return report, counts


def _sqlite_tune() -> None:
    """Give SQLite a 128 MiB page cache for this connection (the default is 2 MiB).

    Each classification touches eight indexes at scattered positions; with the default cache a
    million-row import spends much of its time re-reading index pages. PostgreSQL is tuned on the
    server, not here.
    """
    connection = connections[router.db_for_write(ImportReport)]
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA cache_size = -131072")


def _finish(report: ImportReport, status: str, message: str) -> None:
    report.status = status
    # The ingest may already have written notes (unknown versions): keep them after the summary.
    report.message = "\n".join(part for part in (message, report.message) if part)
    report.finished_at = timezone.now()
    report.save(update_fields=["status", "message", "finished_at"])
