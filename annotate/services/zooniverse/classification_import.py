"""A Zooniverse classification export file imported: parsed, ingested, reported.

The file is streamed in blocks of whole rows (:mod:`annotate.zooniverse.export_csv.blocks`) and
stored ``batch_size`` rows a transaction, so memory stays at a few blocks whatever the file size;
each batch commits on its own, and running a failed import again skips what is stored. A large
file is parsed in a forked child process (which never touches the database) while this one writes.
"""

from __future__ import annotations

import gc
import multiprocessing
import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.db import connections, router

from annotate.models import ImportReport, Workflow
from annotate.services.classifications import (
    BatchResult,
    ClassificationColumns,
    ClassificationRecord,
    IngestCounts,
    QuarantineEntry,
    classifications_ingest,
    votes_stored_announce,
)
from annotate.zooniverse.export_csv.blocks import BLOCK_BYTES, classification_blocks
from annotate.zooniverse.export_csv.classifications import export_tasks_seen
from annotate.zooniverse.export_csv.rows import ExportFormatError

#: Files at least this large are parsed in a child process (when the platform can fork).
PARALLEL_MIN_BYTES = 8 << 20

#: Parsed blocks waiting for the writer: bounds the memory of a parser running ahead. The writer
#: joins about five 16 MiB blocks into one 60,000-row transaction; the parser must be able to
#: get a whole batch ahead, or it idles while the writer stores and the writer then waits for it.
_QUEUE_BLOCKS = 8


class ClassificationImportError(Exception):
    """The import could not run or stopped: the message says why; the report says how far."""


def classifications_import(
    *,
    path: Path,
    workflow_id: int,
    batch_size: int = 60_000,
    progress: Callable[[int, int], None] | None = None,
    parallel: bool | None = None,
) -> tuple[ImportReport, IngestCounts]:
    """Import a classification export for one configured workflow.

    ``progress(rows, bytes)`` is called after each committed batch with the rows and bytes read
    since the previous call. Bad rows are quarantined on the returned report and do not fail the
    import; a missing file, a file that is not a classification export, or a database error does,
    after the report is marked failed. ``parallel`` parses in a child process; by default it does
    for files of ``PARALLEL_MIN_BYTES`` or more where the platform can fork.
    """
    workflow = Workflow.objects.filter(zooniverse_id=workflow_id).first()
    if workflow is None or not workflow.versions.exists():
        raise ClassificationImportError(
            f"workflow {workflow_id} is not configured: run configure_workflow "
            f"--workflow-id {workflow_id} [--workflow-export wf.csv] first"
        )
    report = ImportReport.objects.create(
        kind=ImportReport.Kind.CLASSIFICATIONS, source=str(path)[:1000]
    )
    if parallel is None:
        parallel = _can_fork() and path.is_file() and path.stat().st_size >= PARALLEL_MIN_BYTES
    try:
        warning = _task_warning(path, task_key=workflow.task_key, workflow_id=workflow_id)
        with _collector_paused(), _sqlite_bulk():
            source = (_ParsedElsewhere if parallel else _ParsedHere)(
                path,
                task_key=workflow.task_key,
                batch_size=batch_size,
                workflow_id=workflow.zooniverse_id,
            )
            reported = 0

            def committed(result: BatchResult) -> None:
                nonlocal reported
                if progress is not None:
                    progress(result.counts.read, source.position - reported)
                    reported = source.position

            with source:
                counts = classifications_ingest(
                    records=source,
                    workflow=workflow,
                    report=report,
                    batch_size=batch_size,
                    on_batch_committed=committed,
                    counters_at_end=True,
                )
    except (OSError, ExportFormatError) as exc:
        report.finish(ImportReport.Status.FAILED, f"{path}: {exc}", keep_notes=True)
        raise ClassificationImportError(f"{path}: {exc}") from exc
    except Exception as exc:
        report.finish(ImportReport.Status.FAILED, f"{type(exc).__name__}: {exc}", keep_notes=True)
        raise
    if warning:
        counts.warnings.append(warning)
    report.finish(ImportReport.Status.SUCCEEDED, counts.summary(), keep_notes=True)
    votes_stored_announce(workflow=workflow, created=counts.created, source="export file")
    return report, counts


Parsed = ClassificationRecord | QuarantineEntry | ClassificationColumns

#: How many rows of the workflow are looked at for its task before the import starts.
TASK_CHECK_ROWS = 1_000


def _task_warning(path: Path, *, task_key: str, workflow_id: int) -> str:
    """A warning when the workflow's task is in none of the first rows, naming the tasks that are:
    the wrong task configured (or ``--task``) turns every vote into "task not shown"."""
    with path.open("rb") as handle:
        read, holding, seen = export_tasks_seen(
            handle, task_key=task_key, workflow_id=workflow_id, rows=TASK_CHECK_ROWS
        )
    if not read or holding:
        return ""
    found = ", ".join(f"{key} ({n})" for key, n in sorted(seen.items())) or "none"
    return (
        f"warning: task {task_key} is in none of the first {read} rows of workflow "
        f"{workflow_id}; tasks found: {found}. Run configure_workflow with the right task."
    )


def _block_bytes(batch_size: int) -> int:
    """Blocks of about ``batch_size`` rows (taking a kilobyte a row), 16 MiB at most."""
    return min(max(batch_size, 64) * 1024, BLOCK_BYTES)


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


class _ParsedHere:
    """The export's records, parsed in this process; ``position`` is the bytes read so far."""

    def __init__(self, path: Path, *, task_key: str, batch_size: int, workflow_id: int) -> None:
        self._path = path
        self._task_key = task_key
        self._batch_size = batch_size
        self._workflow_id = workflow_id
        self.position = 0

    def __enter__(self) -> _ParsedHere:
        self._handle = self._path.open("rb")
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def __iter__(self) -> Iterator[Parsed]:
        blocks = classification_blocks(
            self._handle,
            task_key=self._task_key,
            block_bytes=_block_bytes(self._batch_size),
            workflow_id=self._workflow_id,
        )
        for block in blocks:
            self.position = self._handle.tell()  # read so far; the block is stored next
            yield block


def _parse_into(path: str, task_key: str, batch_size: int, workflow_id: int, out: Any) -> None:
    """The child's work: parse the file and put ``(kind, payload, position)`` on ``out``."""
    try:
        gc.disable()  # see _collector_paused
        with open(path, "rb") as handle:
            blocks = classification_blocks(
                handle,
                task_key=task_key,
                block_bytes=_block_bytes(batch_size),
                workflow_id=workflow_id,
            )
            for block in blocks:
                out.put(("batch", [block], handle.tell()))
        out.put(("done", None, 0))
    except BaseException as exc:  # handed to the parent, which raises it where it reads
        out.put(("error", exc, 0))


class _ParsedElsewhere:
    """The export's records, parsed by a forked child process a few batches ahead."""

    def __init__(self, path: Path, *, task_key: str, batch_size: int, workflow_id: int) -> None:
        context = multiprocessing.get_context("fork")
        self._queue = context.Queue(maxsize=_QUEUE_BLOCKS)
        self._process = context.Process(
            target=_parse_into,
            args=(str(path), task_key, batch_size, workflow_id, self._queue),
            name="crowdloop-export-parser",
            daemon=True,
        )
        self.position = 0

    def __enter__(self) -> _ParsedElsewhere:
        self._process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # Stopped early (an error while storing) or finished: never leave the parser behind.
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(timeout=10)
        self._queue.close()

    def _next(self) -> tuple[str, Any, int]:
        while True:
            try:
                return self._queue.get(timeout=1.0)
            except queue.Empty:
                if not self._process.is_alive():
                    raise ClassificationImportError(
                        f"the export parser stopped unexpectedly "
                        f"(exit code {self._process.exitcode})"
                    ) from None

    def __iter__(self) -> Iterator[Parsed]:
        while True:
            kind, payload, position = self._next()
            if kind == "done":
                return
            if kind == "error":
                raise payload
            self.position = position
            yield from payload


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while the import runs.

    Every row allocates a few dicts and lists that reference counting frees on its own (they form
    no cycles), yet the allocations keep triggering full collections that walk every object of
    the process, Django's included: a third of the import's CPU time. It resumes afterwards and
    finds whatever little garbage there is in its normal course.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def _sqlite_bulk() -> Iterator[None]:
    """SQLite set for a large import on this connection; its foreign-key checks come back after.

    - A 128 MiB page cache (the default is 2 MiB): each classification touches several indexes
      at scattered positions, and with the default cache a million-row import spends much of its
      time re-reading index pages.
    - Foreign keys are not checked row by row, as Django's ``loaddata`` does. Every id the ingest
      writes into a row is one it read or created in the same transaction (the workflow, the
      subjects it resolved or created, the items it matched), or a volunteer it created or read
      earlier in this import, which its stored votes protect from deletion. SQLite has one writer
      at a time, so nothing deletes them before the commit. What the checks cost:
      ``bench/import_classifications.py --insert-variants``.

    Inside an outer transaction (a test case) SQLite ignores the switch and keeps checking.
    PostgreSQL is tuned on the server, and checks its keys at each commit as always.
    """
    connection = connections[router.db_for_write(ImportReport)]
    if connection.vendor != "sqlite":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA cache_size = -131072")
    with connection.constraint_checks_disabled():
        yield

