"""The ingestion core for Zooniverse classifications, shared by the export importer and the sync.

Both hand :class:`ClassificationRecord` objects (or :class:`QuarantineEntry` objects for input
their parser refused) to :func:`classifications_ingest`, which writes them in batches: one
transaction and a fixed handful of queries per batch, whatever its size. Rules it keeps
(``reliability.md`` §2, §4.1): an id is stored once, so a re-import or re-sync is a no-op (B5);
answer indices (API) resolve through the record's exact workflow version, labels (exports) may
fall back to the ``*`` version (B3), and answers that map to no concept are counted in
``invalid_answers``, never aggregated (B4); a volunteer's earliest classification of a subject
(by ``created_at``, then id) counts and later ones are ``is_duplicate``, across batches and
imports, logged-out volunteers being compared within one browser session only (B6, B7); a
classification of several subjects is quarantined (B9). One module per step (``read``,
``answers``, ``subjects``, ``repeats``, ``store``, ``counters``, ``sql``); this one runs them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import numpy as np
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from annotate.models import Classification, ImportReport, SyncCursor, Workflow
from annotate.services.classifications.answers import (
    SUPPORTED_TASK_TYPES,
    WILDCARD_VERSION,
    answers_resolve,
)
from annotate.services.classifications.counters import COUNTERS_EVERY_S, counts_recompute
from annotate.services.classifications.read import IngestContext, batches
from annotate.services.classifications.store import rows_store, volunteer_key
from annotate.services.classifications.subjects import subjects_link_batch, subjects_unlinked
from annotate.services.classifications.tally import IngestCounts
from annotate.services.quarantine import quarantine_row, quarantine_store
from annotate.signals import votes_stored
from annotate.zooniverse.classification_records import (
    ClassificationColumns,
    ClassificationRecord,
    QuarantineEntry,
)

__all__ = [
    "COUNTERS_EVERY_S",
    "SUPPORTED_TASK_TYPES",
    "WILDCARD_VERSION",
    "BatchResult",
    "ClassificationColumns",
    "ClassificationRecord",
    "IngestCounts",
    "QuarantineEntry",
    "classifications_ingest",
    "volunteer_key",
    "votes_stored_announce",
]

logger = logging.getLogger(__name__)


#: Longest ``raw`` text kept with a quarantined row, so one huge bad row cannot bloat the table.
RAW_LIMIT = 10_000


@dataclass(slots=True)
class BatchResult:
    """Handed to ``on_batch_committed`` after each batch's transaction has committed."""

    counts: IngestCounts
    max_id: int | None


def classifications_ingest(
    *,
    records: Iterable[ClassificationRecord | QuarantineEntry | ClassificationColumns],
    workflow: Workflow,
    report: ImportReport,
    batch_size: int = 5000,
    on_batch_committed: Callable[[BatchResult], None] | None = None,
    cursor: bool = False,
    counters_at_end: bool = False,
) -> IngestCounts:
    """Store classifications batch by batch; each batch is one transaction.

    ``records`` may be a generator over a file of any size: it is consumed ``batch_size`` at a
    time. ``QuarantineEntry`` items (rows a parser refused) are stored with the batch they arrive
    in. :class:`ClassificationColumns` items (a fast parser's blocks) are joined into batches of
    at least ``batch_size`` rows.
    ``report`` must be saved; its counters are advanced with each batch, and its quarantined
    rows are written with the batch. With ``cursor=True`` the workflow's ``SyncCursor`` moves to
    the largest classification id seen in the batch, in the same transaction, and never backwards.

    Safe to call more than once with the same input: stored ids are skipped, counters are
    recomputed from the rows, not nudged. They are recounted after each batch, or with
    ``counters_at_end`` once for the whole ingest (also when it fails half-way), for the items
    and volunteers of every row handed in, stored before or not: a large import touches nearly
    every volunteer in every batch, and recounting them each time read the table over and over.
    An ingest that runs longer than ``COUNTERS_EVERY_S`` also recounts what its batches touched
    since the last recount once that long has passed, before ``on_batch_committed``, so that the
    counters curators see lag a long import by that much at most.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if report.pk is None:
        raise ValueError("Save the ImportReport before ingesting: quarantined rows point at it.")
    context = IngestContext(workflow)
    if cursor:
        SyncCursor.objects.get_or_create(workflow=workflow)
    total = IngestCounts()
    if counters_at_end:
        context.deferred = (set(), set())
    recounted = time.monotonic()
    try:
        for batch in batches(records, batch_size):
            result = _ingest_batch(batch, context=context, report=report, cursor=cursor)
            total.add(result.counts)
            if context.deferred is not None and time.monotonic() - recounted >= COUNTERS_EVERY_S:
                counts_recompute(items=context.deferred[0], volunteers=context.deferred[1])
                context.deferred = (set(), set())
                recounted = time.monotonic()
            if on_batch_committed is not None:
                on_batch_committed(result)
    except BaseException:
        # The batches committed so far keep true counters; the original error is what counts.
        if context.deferred is not None:
            try:
                counts_recompute(items=context.deferred[0], volunteers=context.deferred[1])
            except Exception:
                logger.exception("counters not recounted after a failed ingest")
        raise
    if context.deferred is not None:
        counts_recompute(items=context.deferred[0], volunteers=context.deferred[1])
    _unmatched_note(total, context, report)
    if total.unknown_versions:
        # One alert per version and run, not one per row (reliability B3).
        versions = ", ".join(f"{v} ({n} rows)" for v, n in sorted(total.unknown_versions.items()))
        logger.warning(
            "Workflow %s: classifications of unknown versions quarantined: %s. "
            "Run configure_workflow with a fresh workflow export.",
            workflow.zooniverse_id,
            versions,
        )
        note = f"unknown workflow versions: {versions}"
        report.message = f"{report.message}\n{note}".strip()
        report.save(update_fields=["message"])
    return total


#: How many subject ids an import's summary names when subjects match no item.
UNMATCHED_NAMED = 5


def _unmatched_note(total: IngestCounts, context: IngestContext, report: ImportReport) -> None:
    """Count and name the ingest's subjects that still match no item, in ``report.message``."""
    unlinked = subjects_unlinked(context.unlinked) if context.unlinked else []
    if not unlinked:
        return
    total.unmatched_subjects = len(unlinked)
    total.unmatched_examples = unlinked[:UNMATCHED_NAMED]
    match = context.workflow.subject_match or "the built-in keys external_id, europeana_id"
    note = (
        f"{len(unlinked)} subjects match no item by {match} "
        f"(e.g. {', '.join(map(str, unlinked[:UNMATCHED_NAMED]))}); their votes count once "
        "import_items or import_subjects brings their items, or configure_workflow --match-key "
        "names the right key."
    )
    report.message = f"{report.message}\n{note}".strip()
    report.save(update_fields=["message"])


def votes_stored_announce(*, workflow: Workflow, created: int, source: str) -> None:
    """Tell whoever drives the loop that votes arrived: once per pull or file, after commit."""
    if created:
        transaction.on_commit(
            partial(
                votes_stored.send,
                sender=Classification,
                workflow_id=workflow.zooniverse_id,
                created=created,
                source=source,
            )
        )


def _ingest_batch(
    columns: ClassificationColumns,
    *,
    context: IngestContext,
    report: ImportReport,
    cursor: bool,
) -> BatchResult:
    counts = IngestCounts(read=len(columns) + len(columns.quarantine))
    workflow = context.workflow
    refused: list[tuple[int, QuarantineEntry]] = list(columns.quarantine)
    context.prefetch(set(columns.versions))

    def refuse(rows: np.ndarray, field_name: str, reason: str) -> None:
        for i in rows.tolist():
            record = columns.record(i)
            entry = QuarantineEntry(
                record.line, str(record.zooniverse_id), field_name, reason, _raw(record)
            )
            refused.append((int(columns.order[i]), entry))

    def refuse_one(i: int, reason: str) -> None:
        refuse(np.array([i]), "classification_id", reason)

    ids = columns.zooniverse_id
    seen_ids = [int(e.record_id) for _, e in columns.quarantine if e.record_id.isdigit()]
    max_id = max(seen_ids + ([int(ids.max())] if len(ids) else []), default=None)

    # Rows of other workflows (a project-wide export) are counted and skipped, not refused.
    rows = np.arange(len(columns))
    wrong = columns.workflow_id[rows] != workflow.zooniverse_id
    others, per_workflow = np.unique(columns.workflow_id[rows[wrong]], return_counts=True)
    counts.other_workflows = dict(zip(others.tolist(), per_workflow.tolist(), strict=True))
    rows = rows[~wrong]
    # The checks, in the order a row meets them; a row is refused for the first that fails.
    count = columns.subject_count[rows]
    refuse(rows[count == 0], "subject_ids", "missing_subject")
    refuse(rows[count > 1], "subject_ids", "multi_subject_unsupported")
    rows = rows[count == 1]
    answer_code, resolved = answers_resolve(columns, context.answer_map, rows)
    bad = np.array([a.refusal is not None for a in resolved], bool)[answer_code]
    for code in np.unique(answer_code[bad]).tolist():
        field_name, reason = resolved[code].refusal
        these = rows[answer_code == code]
        if reason == "unknown_workflow_version":
            version = columns.versions[columns.version_code[these[0]]]
            counts.unknown_versions[version] = counts.unknown_versions.get(version, 0) + len(these)
        refuse(these, field_name, reason)
    rows, answer_code = rows[~bad], answer_code[~bad]
    # The same id twice in one page or file (B5): the first stays; an identical copy is
    # unchanged, a copy that says something else is refused, naming what differs.
    by_id = np.lexsort((columns.order[rows], ids[rows]))  # by id, then by place in the input
    sorted_ids = ids[rows][by_id]
    first = np.ones(len(rows), bool)
    first[1:] = sorted_ids[1:] != sorted_ids[:-1]
    if not first.all():
        group_first = rows[by_id][np.maximum.accumulate(np.where(first, np.arange(len(rows)), 0))]
        for i, original in zip(
            rows[by_id][~first].tolist(), group_first[~first].tolist(), strict=True
        ):
            differs = _differs(columns, original, i)
            if differs:
                line = int(columns.line[original])
                where = f"line {line}" if line else "earlier in this page"
                refuse_one(i, f"classification_id_conflict: {differs} than the copy kept ({where})")
            else:
                counts.unchanged += 1
        keep = np.sort(by_id[first])
        rows, answer_code = rows[keep], answer_code[keep]

    with transaction.atomic():
        if len(rows):
            rows_store(
                columns, rows, answer_code, resolved, context=context, counts=counts,
                refuse=refuse_one,
            )  # fmt: skip
            # After the store, which skips known votes: their subjects may have items by now.
            subjects_link_batch(columns, rows, context=context)
        refused.sort(key=lambda pair: pair[0])
        quarantine = [
            quarantine_row(
                report,
                line=entry.line,
                record_id=entry.record_id,
                field=entry.field,
                reason=entry.reason,
                raw=entry.raw,
            )
            for _, entry in refused
        ]
        counts.quarantined = len(quarantine)
        if quarantine:
            # Rows a run of the same input stored before are counted, not stored again.
            counts.quarantined_before = len(quarantine) - quarantine_store(quarantine)
        ImportReport.objects.filter(pk=report.pk).update(
            total=F("total") + counts.read,
            created=F("created") + counts.created,
            updated=F("updated") + counts.reflagged,
            unchanged=F("unchanged") + counts.unchanged,
            quarantined=F("quarantined") + counts.quarantined,
        )
        if cursor and max_id is not None:
            SyncCursor.objects.filter(workflow=workflow, last_id__lt=max_id).update(
                last_id=max_id, updated_at=timezone.now()
            )
    report.total += counts.read
    report.created += counts.created
    report.updated += counts.reflagged
    report.unchanged += counts.unchanged
    report.quarantined += counts.quarantined
    return BatchResult(counts=counts, max_id=max_id)


def _differs(columns: ClassificationColumns, first: int, other: int) -> str:
    """What row ``other`` says otherwise than row ``first`` of the same id, or ""."""
    if columns.subject_id[first] != columns.subject_id[other]:
        return f"another subject ({columns.subject_id[other]})"
    if (
        columns.volunteers[columns.volunteer_code[first]]
        != columns.volunteers[columns.volunteer_code[other]]
        or columns.session[first] != columns.session[other]
    ):
        return "another volunteer"
    if (
        columns.versions[columns.version_code[first]]
        != columns.versions[columns.version_code[other]]
    ):
        return "another workflow version"
    if (
        columns.task_shown[first] != columns.task_shown[other]
        or columns.answer_lists[columns.answer_code[first]]
        != columns.answer_lists[columns.answer_code[other]]
    ):
        return "other answers"
    return ""


def _raw(record: ClassificationRecord) -> str:
    data = dataclasses.asdict(record)
    data["created_at"] = record.created_at.isoformat()
    return json.dumps(data, default=str)[:RAW_LIMIT]


