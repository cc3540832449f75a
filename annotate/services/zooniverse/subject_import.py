"""Subjects of an existing Zooniverse project brought in from its subject export (§5.2).

Each subject becomes one item and the ``Subject`` row linked to it, so that its votes count; votes
imported before their subjects move to the items, whose counters are recounted. Bad rows are kept
with their line in the import report and the rest imports; writes are in bulk, a batch per
transaction, and re-running the import changes nothing. Nothing is downloaded: the
``fetch_item_images`` task fetches remote images afterwards.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.db import connections, router, transaction

from annotate.models import ImportReport, Item, ItemIdentityChange, Subject
from annotate.services.classifications.counters import counts_recompute
from annotate.services.classifications.sql import among, json_adapter, rows_insert
from annotate.services.classifications.subjects import SUBJECT_EXTERNAL_ID, subjects_link
from annotate.services.item_identity import identity_changes
from annotate.services.quarantine import quarantine_row, quarantine_store
from annotate.zooniverse.classification_records import QuarantineEntry
from annotate.zooniverse.export_csv.rows import ExportFormatError
from annotate.zooniverse.export_csv.subjects import SubjectRow, parse_subject_export
from config.task_kinds import task_named

logger = logging.getLogger(__name__)

#: Metadata key prefixes Zooniverse hides from volunteers (``!`` stays searchable in Talk).
HIDDEN_PREFIXES = ("#", "!", "//")


class SubjectExportError(ValueError):
    """The file as a whole cannot be imported; nothing was."""


@dataclass(slots=True)
class SubjectImportCounts:
    rows: int = 0
    subjects: int = 0
    repeated_rows: int = 0  # further rows of a subject (other workflows or sets)
    other_workflows: int = 0
    items_created: int = 0
    items_updated: int = 0
    subjects_created: int = 0
    subjects_linked: int = 0  # known subjects (votes first) now linked to their item
    already_linked: int = 0  # subjects crowdloop already links to another item
    unchanged: int = 0
    quarantined: int = 0

    def summary(self) -> str:
        return (
            f"{self.rows} rows, {self.subjects} subjects: {self.items_created} items created, "
            f"{self.items_updated} updated, {self.unchanged} unchanged, "
            f"{self.subjects_created} subjects created, {self.subjects_linked} waiting subjects "
            f"linked, {self.already_linked} already linked to another item, "
            f"{self.repeated_rows} repeated rows, {self.other_workflows} rows of other "
            f"workflows, {self.quarantined} reported"
        )


def subject_external_id(row: SubjectRow, *, key: str = "") -> str:
    """The external id of a subject's item (raises ``ValueError`` when ``key`` gives none)."""
    if not key:
        return SUBJECT_EXTERNAL_ID.format(row.subject_id)
    value = row.metadata.get(key)
    if value is None or isinstance(value, dict | list | bool) or not str(value).strip():
        raise ValueError(f"missing_key: metadata has no {key!r}")
    text = str(value).strip()
    if len(text) > 255:
        raise ValueError(f"too_long: {key!r} is longer than 255 characters")
    return text


def _item_metadata(row: SubjectRow) -> dict[str, Any]:
    hidden = sorted(k for k in row.metadata if str(k).startswith(HIDDEN_PREFIXES))
    zooniverse = {"subject_id": row.subject_id, "hidden_keys": hidden, "locations": row.locations}
    if row.project_id is not None:
        zooniverse["project_id"] = row.project_id
    return {**row.metadata, "zooniverse": zooniverse}


def _image_url(row: SubjectRow) -> str:
    if not row.locations:
        raise ValueError("no_location: the subject has no location")
    url = row.locations[0].strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > 2000:
        raise ValueError(f"not_a_url: {url[:80]!r}")
    return url


@dataclass(slots=True)
class _Subject:
    row: SubjectRow
    external_id: str
    image_url: str
    metadata: dict[str, Any]


def subjects_import(
    *,
    path: Path,
    workflow_id: int | None = None,
    external_id_key: str = "",
    batch_size: int = 5000,
    fetch_images: bool = True,
) -> tuple[ImportReport, SubjectImportCounts]:
    """Import a subject export (zooniverse.md §5.2) as items with their subjects. Safe to run again.

    * the item's external id is ``zooniverse-subject-<subject id>``
      (:data:`~annotate.services.classifications.subjects.SUBJECT_EXTERNAL_ID`, what a workflow with
      ``subject_match = "subject_id"`` looks for), or the value of the metadata key named by
      ``external_id_key`` (``Filename``, ``!europeana_id``);
    * its ``image_url`` is the subject's first location; every location is kept in
      ``metadata["zooniverse"]["locations"]``;
    * its metadata is the subject's metadata, hidden keys (``#``, ``!``, ``//``) included; they are
      listed in ``metadata["zooniverse"]["hidden_keys"]`` so nothing shows them to volunteers by
      mistake;
    * the subject keeps its retirement (with ``workflow_id``, that workflow's; otherwise the first
      retired row's). A subject already linked to another item (one crowdloop pushed) keeps it.

    The export has one row per (subject, workflow, subject set): a subject's later rows add only
    their retirement. Rows of other workflows are skipped when ``workflow_id`` is given.

    Raises:
        SubjectExportError: the file cannot be read or is not a subject export.
    """
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise SubjectExportError(f"{path}: cannot read the subject export ({exc})") from exc
    counts = SubjectImportCounts()
    with handle:
        rows = parse_subject_export(handle)
        try:
            first = next(rows, None)
        except ExportFormatError as exc:
            raise SubjectExportError(f"{path}: {exc}") from exc
        report = ImportReport.objects.create(kind=ImportReport.Kind.SUBJECTS, source=str(path))
        try:
            _import_rows(
                _chained(first, rows),
                report=report,
                counts=counts,
                workflow_id=workflow_id,
                key=external_id_key,
                batch_size=batch_size,
            )
        except Exception as exc:
            _finish(report, counts, ImportReport.Status.FAILED, str(exc))
            raise
    message = counts.summary()
    if fetch_images and counts.items_created + counts.items_updated:
        message += "\n" + _fetch_enqueue()
    _finish(report, counts, ImportReport.Status.SUCCEEDED, message)
    return report, counts


def _chained(
    first: SubjectRow | QuarantineEntry | None, rest: Iterator[SubjectRow | QuarantineEntry]
) -> Iterator[SubjectRow | QuarantineEntry]:
    if first is not None:
        yield first
        yield from rest


def _import_rows(
    rows: Iterator[SubjectRow | QuarantineEntry],
    *,
    report: ImportReport,
    counts: SubjectImportCounts,
    workflow_id: int | None,
    key: str,
    batch_size: int,
) -> None:
    seen: set[int] = set()
    batch: dict[int, _Subject] = {}
    refused: list[QuarantineEntry] = []
    for row in rows:
        counts.rows += 1
        if isinstance(row, QuarantineEntry):
            refused.append(row)
            continue
        if workflow_id is not None and row.workflow_id != workflow_id:
            counts.other_workflows += 1
            continue
        known = batch.get(row.subject_id)
        if known is not None or row.subject_id in seen:
            counts.repeated_rows += 1
            if known is not None and known.row.retired_at is None and row.retired_at is not None:
                known.row.retired_at, known.row.retirement_reason = (
                    row.retired_at,
                    row.retirement_reason,
                )
            elif known is None and row.retired_at is not None:
                batch[row.subject_id] = _Subject(row, "", "", {})  # retirement only
            continue
        try:
            external_id = subject_external_id(row, key=key)
            image_url = _image_url(row)
        except ValueError as exc:
            field = "metadata" if str(exc).startswith(("missing_key", "too_long")) else "locations"
            refused.append(
                QuarantineEntry(
                    row.line,
                    str(row.subject_id),
                    field,
                    str(exc),
                    json.dumps({"metadata": row.metadata, "locations": row.locations})[:1000],
                )
            )
            continue
        seen.add(row.subject_id)
        counts.subjects += 1
        batch[row.subject_id] = _Subject(row, external_id, image_url, _item_metadata(row))
        if len(batch) >= batch_size:
            _write(batch, refused, report=report, counts=counts)
            batch, refused = {}, []
    _write(batch, refused, report=report, counts=counts)


def _write(
    batch: dict[int, _Subject],
    refused: list[QuarantineEntry],
    *,
    report: ImportReport,
    counts: SubjectImportCounts,
) -> None:
    """One transaction: the batch's items and subjects created or brought up to date."""
    with transaction.atomic():
        if refused:
            quarantine_store(  # a row a run of the same export stored before is not stored again
                quarantine_row(
                    report,
                    line=e.line,
                    record_id=e.record_id,
                    field=e.field,
                    reason=e.reason,
                    raw=e.raw,
                )
                for e in refused
            )
            counts.quarantined += len(refused)
        if batch:
            _write_subjects(batch, counts, report=report)


def _write_subjects(
    batch: dict[int, _Subject], counts: SubjectImportCounts, *, report: ImportReport
) -> None:
    stored = {
        zid: (pk, item_id, retired_at)
        for zid, pk, item_id, retired_at in Subject.objects.filter(
            among("zooniverse_id", list(batch))
        ).values_list("zooniverse_id", "id", "item_id", "retired_at")
    }
    linked_items = {
        pk: external_id
        for pk, external_id in Item.objects.filter(
            pk__in=[s[1] for s in stored.values() if s[1] is not None]
        ).values_list("id", "external_id")
    }
    # Items: only for subjects that have none yet or whose item is the one this import makes.
    wanted: dict[str, _Subject] = {}
    for zid, subject in batch.items():
        if not subject.external_id:
            continue  # a repeated row: retirement only
        item_id = stored.get(zid, (None, None, None))[1]
        if item_id is not None and linked_items.get(item_id) != subject.external_id:
            counts.already_linked += 1
            continue
        wanted[subject.external_id] = subject
    existing = {
        item.external_id: item
        for item in Item.objects.filter(among("external_id", list(wanted))).only(
            "id", "external_id", "image_url", "metadata", "image_state"
        )
    }
    to_create: list[_Subject] = []
    to_update: list[Item] = []
    changes: list[ItemIdentityChange] = []
    for external_id, subject in wanted.items():
        item = existing.get(external_id)
        if item is None:
            to_create.append(subject)  # a model instance per row cost a fifth of the import
        elif item.image_url != subject.image_url:
            # A new image: fetched again, its old file forgotten, the change audited.
            changes += identity_changes(item, {"image_url": subject.image_url}, report=report)
            item.image_url, item.metadata = subject.image_url, subject.metadata
            item.image_file = item.thumbnail = item.image_sha256 = item.image_error = ""
            item.image_width = item.image_height = None
            item.image_state = Item.ImageState.PENDING
            to_update.append(item)
        elif item.metadata != subject.metadata:
            item.metadata = subject.metadata
            to_update.append(item)
        else:
            counts.unchanged += 1
    # rows_insert: one prepared statement a batch; bulk_create spent 70% of the import compiling.
    connection = connections[router.db_for_write(Item)]
    adapt_json = json_adapter(connection)
    rows_insert(
        Item,
        ("external_id", "image_url", "metadata", "image_state"),
        [
            (i.external_id, i.image_url, adapt_json(i.metadata), Item.ImageState.PENDING)
            for i in to_create
        ],
    )
    if to_update:
        Item.objects.bulk_update(
            to_update,
            [
                "image_url", "metadata", "image_file", "thumbnail", "image_sha256",
                "image_error", "image_width", "image_height", "image_state",
            ],
            batch_size=500,
        )  # fmt: skip
        ItemIdentityChange.objects.bulk_create(changes)
    counts.items_created += len(to_create)
    counts.items_updated += len(to_update)
    written: list[_Subject | Item] = [*to_create, *to_update]
    item_of = dict(
        Item.objects.filter(
            among("external_id", [i.external_id for i in written])
        ).values_list("external_id", "id")
    )
    item_of.update((e, i.pk) for e, i in existing.items())

    adapt_time = connection.ops.adapt_datetimefield_value
    new_subjects: list[tuple[Any, ...]] = []
    retire: list[Subject] = []
    link: dict[int, int] = {}
    for zid, subject in batch.items():
        row = subject.row
        item_id = item_of.get(subject.external_id) if subject.external_id else None
        found = stored.get(zid)
        if found is None:
            if subject.external_id:
                new_subjects.append(
                    (
                        zid,
                        item_id,
                        adapt_json(row.metadata),
                        adapt_time(row.retired_at) if row.retired_at else None,
                        row.retirement_reason[:32],
                    )
                )
            continue
        pk, linked, retired_at = found
        if linked is None and item_id is not None:
            link[pk] = item_id
        if retired_at is None and row.retired_at is not None:
            retire.append(
                Subject(pk=pk, retired_at=row.retired_at, retirement_reason=row.retirement_reason)
            )
    rows_insert(
        Subject,
        ("zooniverse_id", "item_id", "metadata", "retired_at", "retirement_reason"),
        new_subjects,
    )
    counts.subjects_created += len(new_subjects)
    if retire:
        Subject.objects.bulk_update(retire, ["retired_at", "retirement_reason"], batch_size=500)
    if link:
        # Votes imported before their subjects' items: they count from now on.
        subjects_link(link)
        counts_recompute(items=set(link.values()), volunteers=set())
        counts.subjects_linked += len(link)


def _fetch_enqueue() -> str:
    """Queue the image fetch after the import; an unreachable broker leaves them pending."""
    fetch_item_images = task_named("annotate.tasks.fetch_item_images")

    try:
        fetch_item_images.delay()
    except Exception as exc:  # the broker: the import itself has succeeded
        logger.warning("images not queued for fetching: %s", exc)
        return f"images stay pending, not queued for fetching ({exc}); run the worker and retry"
    return "remote images queued for fetching (task fetch_item_images)"


def _finish(report: ImportReport, counts: SubjectImportCounts, status: str, message: str) -> None:
    report.finish(
        status,
        message,
        total=counts.rows,
        created=counts.items_created,
        updated=counts.items_updated + counts.subjects_linked,
        unchanged=counts.unchanged,
        quarantined=counts.quarantined,
    )
