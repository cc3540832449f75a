"""The ingestion core for Zooniverse classifications, shared by the export importer and the sync.

Both sources are turned into :class:`ClassificationRecord` objects (or :class:`QuarantineEntry`
objects for input their parser already refused) and handed to :func:`classifications_ingest`, which
writes them in batches. Each batch is one transaction and costs a small, fixed number of queries
whatever its size: versions, volunteers, subjects, items and classifications are all read and
written in bulk.

Rules it keeps (``reliability.md`` §2, §4.1):

* a classification id is stored once; re-importing or re-syncing is a no-op (B5);
* answers resolve through the answer map of the record's workflow version: answer indices (API)
  need the exact version, label strings (exports) may fall back to the ``*`` wildcard version
  because labels describe themselves (B3); answers that map to no concept are kept in
  ``invalid_answers`` and counted, never aggregated (B4);
* a volunteer classifying the same subject twice keeps both rows; the earliest by ``created_at``
  (then classification id) counts and the later ones are flagged ``is_duplicate``, also when the
  earlier one arrives in a later batch or import (B6); logged-out volunteers are only compared
  within one browser session, never by hashed IP alone (B7);
* a classification of several subjects is quarantined, never attributed to the first (B9);
* with ``cursor=True`` the sync cursor moves in the same transaction as the batch it covers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from django.db import connections, router, transaction
from django.db.models import (
    BooleanField,
    Count,
    F,
    IntegerField,
    Model,
    OuterRef,
    Q,
    Subquery,
    Value,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotate.models import (
    Classification,
    Concept,
    ImportReport,
    Item,
    QuarantinedRow,
    Subject,
    SyncCursor,
    Volunteer,
    Workflow,
    WorkflowVersion,
)

logger = logging.getLogger(__name__)

#: The version name of the answer map used for export labels when a record's version is unknown.
WILDCARD_VERSION = "*"

#: Task types whose answers are concept choices; everything else is reported, not guessed at.
SUPPORTED_TASK_TYPES = frozenset({"single", "multiple", "shortcut"})

#: Subject metadata keys that name the crowdloop item a subject shows, in the order they are tried.
ITEM_METADATA_KEYS = ("external_id", "europeana_id", "crowdloop_id")

#: Longest ``raw`` text kept with a quarantined row, so one huge bad row cannot bloat the table.
RAW_LIMIT = 10_000

# SQLite allows 999 parameters per statement in Django's eyes; Postgres accepts more. One INSERT
# per thousand rows keeps statements small on both without a round trip per row.
_INSERT_BATCH = 1000


@dataclass(slots=True)
class ClassificationRecord:
    """One classification as a source delivered it, before any database lookup.

    ``answers`` are the answers to the workflow's task: answer indices from the API (an int for a
    single-answer task is passed as a one-element list), label strings from exports; ``None`` or
    ``[]`` when nothing was ticked. ``subject_metadata`` maps subject id to its metadata (the
    export's ``subject_data``), used to create subjects not seen before and match them to items.
    """

    zooniverse_id: int
    workflow_id: int
    workflow_version: str
    subject_ids: list[int]
    user_id: int | None
    user_name: str
    created_at: datetime
    answers: list[int] | list[str] | None
    gold_standard: bool = False
    expert: bool = False
    subject_metadata: dict[int, dict[str, Any]] = field(default_factory=dict)
    session: str = ""
    source: str = "api"
    line: int | None = None


@dataclass(slots=True)
class QuarantineEntry:
    """Input refused before it became a record: where it was, which field, and why."""

    line: int | None
    record_id: str
    field: str
    reason: str
    raw: str = ""


@dataclass(slots=True)
class IngestCounts:
    """What an ingest did. ``read`` counts every record and refused row handed in.

    ``repeats_flagged`` counts rows marked as repeats, new or stored; ``reflagged`` counts stored
    rows whose repeat flag changed because an earlier classification arrived late.
    """

    read: int = 0
    created: int = 0
    unchanged: int = 0
    repeats_flagged: int = 0
    repeats_cleared: int = 0
    reflagged: int = 0
    quarantined: int = 0
    invalid_answers: int = 0
    unknown_versions: dict[str, int] = field(default_factory=dict)

    def add(self, other: IngestCounts) -> None:
        for f in dataclasses.fields(self):
            if f.name == "unknown_versions":
                for version, n in other.unknown_versions.items():
                    self.unknown_versions[version] = self.unknown_versions.get(version, 0) + n
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def summary(self) -> str:
        return (
            f"read {self.read}, created {self.created}, unchanged {self.unchanged}, "
            f"repeats flagged {self.repeats_flagged}, invalid answers {self.invalid_answers}, "
            f"quarantined {self.quarantined}"
        )


@dataclass(slots=True)
class BatchResult:
    """Handed to ``on_batch_committed`` after each batch's transaction has committed."""

    counts: IngestCounts
    max_id: int | None


def volunteer_key(*, user_id: int | None, user_name: str) -> str:
    """The stable key of a volunteer: ``user:<id>`` logged in, ``anon:<user_name>`` logged out.

    Zooniverse names logged-out volunteers ``not-logged-in-<hashed ip>``; that name is the only
    stable handle there is, so it is the key (and never used alone to flag repeats).
    """
    if user_id is not None:
        return f"user:{user_id}"
    return f"anon:{user_name}"[:255]  # the column's length


def _normalise(label: str) -> str:
    return " ".join(label.split()).casefold()


@dataclass(slots=True)
class _AnswerMap:
    """One workflow version's answers, resolved to concept ids, for both lookup directions."""

    version: str
    task_type: str
    by_index: list[int | None]
    # Normalised label (or concept key/label) -> concept id; None marks a known but unmapped answer.
    by_label: dict[str, int | None]
    # Labels as written -> concept id: exports repeat a few labels a million times.
    seen: dict[str, int | None] = field(default_factory=dict)

    @classmethod
    def build(cls, version: WorkflowVersion, concepts: dict[str, tuple[int, str]]) -> _AnswerMap:
        by_index: list[int | None] = []
        by_label: dict[str, int | None] = {}
        for answer in version.answers or []:
            key = (answer.get("concept") or "").strip()
            concept = concepts.get(key.casefold()) if key else None
            concept_id = concept[0] if concept else None
            by_index.append(concept_id)
            label = str(answer.get("label") or "")
            if label:
                # An earlier answer with the same label wins, as the index order is the truth.
                by_label.setdefault(_normalise(label), concept_id)
            if concept:
                by_label.setdefault(_normalise(key), concept_id)
                by_label.setdefault(_normalise(concept[1]), concept_id)
        return cls(version.version, version.task_type, by_index, by_label)

    def resolve(self, answers: list[int] | list[str]) -> tuple[list[int], list[int | str]]:
        """Concept ids ticked (sorted, unique) and the answers that map to none."""
        ids: set[int] = set()
        invalid: list[int | str] = []
        for answer in answers:
            if isinstance(answer, bool):  # bool is an int subclass; never a valid answer
                invalid.append(str(answer))
                continue
            if isinstance(answer, int):
                concept_id = self.by_index[answer] if 0 <= answer < len(self.by_index) else None
            elif answer in self.seen:
                concept_id = self.seen[answer]
            else:
                concept_id = self.by_label.get(_normalise(str(answer)))
                if len(self.seen) < 10_000:  # free text must not grow it without bound
                    self.seen[answer] = concept_id
            if concept_id is None:
                invalid.append(answer)
            else:
                ids.add(concept_id)
        return sorted(ids), invalid


class _Context:
    """State kept across the batches of one ingest: caches of small, stable tables."""

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow
        self.concepts: dict[str, tuple[int, str]] = {
            key.casefold(): (pk, label)
            for pk, key, label in Concept.objects.values_list("id", "key", "label")
        }
        self.maps: dict[str, _AnswerMap | None] = {}
        self.volunteers: dict[str, int] = {}
        # (subject id, its item metadata) already looked up without finding an item: items do not
        # appear during an ingest, so the same subject's next votes need not look again.
        self.unmatched: set[tuple[int, tuple[Any, ...]]] = set()
        self._load(None)

    def _load(self, versions: set[str] | None) -> None:
        qs = WorkflowVersion.objects.filter(workflow=self.workflow)
        if versions is not None:
            qs = qs.filter(version__in=versions)
            for version in versions:
                self.maps.setdefault(version, None)
        for version in qs:
            self.maps[version.version] = _AnswerMap.build(version, self.concepts)

    def prefetch(self, versions: set[str]) -> None:
        """Look up versions configured since the ingest started (one query, only when needed)."""
        missing = {v for v in versions if v not in self.maps}
        if missing:
            self._load(missing)

    def answer_map(self, version: str, *, labels: bool) -> _AnswerMap | None:
        found = self.maps.get(version)
        if found is None and labels:
            found = self.maps.get(WILDCARD_VERSION)
        return found


def _among(column: str, values: Collection[int | str], *, indexed: bool = True) -> Any:
    """A filter ``column IN values`` that binds the values as ONE parameter.

    Django's ``__in`` prepares and binds every value on its own, which cost more than the
    queries themselves at 5,000 values a batch; a JSON array (SQLite ``json_each``) or an array
    (PostgreSQL ``= ANY``) is one parameter whatever its length. ``column`` is always a constant
    of this module, never input. ``indexed=False`` writes ``+column``, which keeps the planner
    from choosing that column's index over a more selective one.
    """
    vendor = connections[router.db_for_read(Classification)].vendor
    values = list(values)
    name = f'"{column}"' if indexed else f'+"{column}"'
    if vendor == "sqlite":
        sql, param = f"{name} IN (SELECT value FROM json_each(%s))", json.dumps(values)
    elif vendor == "postgresql":
        sql, param = f"{name} = ANY(%s)", values
    else:
        return Q(**{f"{column}__in": values})
    return RawSQL(sql, (param,), output_field=BooleanField())


def _pairs_among(pairs: Collection[tuple[int, int]]) -> Any:
    """A filter ``(volunteer_id, subject_id) IN pairs``, the pairs bound as ONE parameter.

    It is not indexable (a string built from two columns), so it only narrows the rows another,
    indexed condition finds: far fewer rows come back than with two independent IN lists, whose
    cross product matches every vote of every volunteer of the batch on every subject of it.
    """
    vendor = connections[router.db_for_read(Classification)].vendor
    keys = [f"{volunteer}:{subject}" for volunteer, subject in pairs]
    if vendor == "sqlite":
        sql = """("volunteer_id" || ':' || "subject_id") IN (SELECT value FROM json_each(%s))"""
        return RawSQL(sql, (json.dumps(keys),), output_field=BooleanField())
    if vendor == "postgresql":
        sql = """("volunteer_id"::text || ':' || "subject_id"::text) = ANY(%s)"""
        return RawSQL(sql, (keys,), output_field=BooleanField())
    return Q(volunteer_id__in={volunteer for volunteer, _ in pairs})  # a superset: still correct


def _raw(record: ClassificationRecord) -> str:
    data = dataclasses.asdict(record)
    data["created_at"] = record.created_at.isoformat()
    return json.dumps(data, default=str)[:RAW_LIMIT]


def _clean_text(text: str) -> str:
    # PostgreSQL text cannot hold NUL; the row is already refused, the text is only evidence.
    return text.replace("\x00", "\\x00")[:RAW_LIMIT]


@dataclass(slots=True)
class _Accepted:
    record: ClassificationRecord
    subject_zid: int
    volunteer_key: str
    concept_ids: list[int]
    invalid: list[int | str]


def _batches(
    records: Iterable[ClassificationRecord | QuarantineEntry], size: int
) -> Iterator[list[ClassificationRecord | QuarantineEntry]]:
    iterator = iter(records)
    while batch := list(islice(iterator, size)):
        yield batch


def classifications_ingest(
    *,
    records: Iterable[ClassificationRecord | QuarantineEntry],
    workflow: Workflow,
    report: ImportReport,
    batch_size: int = 5000,
    on_batch_committed: Callable[[BatchResult], None] | None = None,
    cursor: bool = False,
) -> IngestCounts:
    """Store classifications batch by batch; each batch is one transaction.

    ``records`` may be a generator over a file of any size: it is consumed ``batch_size`` at a
    time. ``QuarantineEntry`` items (rows a parser refused) are stored with the batch they arrive
    in. ``report`` must be saved; its counters are advanced with each batch, and its quarantined
    rows are written with the batch. With ``cursor=True`` the workflow's ``SyncCursor`` moves to
    the largest classification id seen in the batch, in the same transaction, and never backwards.

    Safe to call more than once with the same input: stored ids are skipped, counters are
    recomputed from the rows, not nudged.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if report.pk is None:
        raise ValueError("Save the ImportReport before ingesting: quarantined rows point at it.")
    context = _Context(workflow)
    if cursor:
        SyncCursor.objects.get_or_create(workflow=workflow)
    total = IngestCounts()
    for batch in _batches(records, batch_size):
        result = _ingest_batch(batch, context=context, report=report, cursor=cursor)
        total.add(result.counts)
        if on_batch_committed is not None:
            on_batch_committed(result)
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


def _ingest_batch(
    batch: list[ClassificationRecord | QuarantineEntry],
    *,
    context: _Context,
    report: ImportReport,
    cursor: bool,
) -> BatchResult:
    counts = IngestCounts(read=len(batch))
    quarantine: list[QuarantinedRow] = []
    accepted: list[_Accepted] = []
    seen: set[int] = set()
    max_id: int | None = None

    def refuse(line: int | None, record_id: str, field_name: str, reason: str, raw: str) -> None:
        quarantine.append(
            QuarantinedRow(
                report_id=report.pk,
                line=line,
                record_id=record_id[:255],
                field=field_name[:100],
                reason=reason[:1000],
                raw=_clean_text(raw),
            )
        )

    records = [r for r in batch if isinstance(r, ClassificationRecord)]
    context.prefetch({r.workflow_version for r in records})
    workflow = context.workflow

    for item in batch:
        if isinstance(item, QuarantineEntry):
            refuse(item.line, item.record_id, item.field, item.reason, item.raw)
            if item.record_id.isdigit():
                max_id = max(max_id or 0, int(item.record_id))
            continue
        record = item
        rid = str(record.zooniverse_id)
        max_id = max(max_id or 0, record.zooniverse_id)
        if record.workflow_id != workflow.zooniverse_id:
            refuse(
                record.line,
                rid,
                "workflow_id",
                f"wrong_workflow: {record.workflow_id} is not workflow {workflow.zooniverse_id}",
                _raw(record),
            )
            continue
        if not record.subject_ids:
            refuse(record.line, rid, "subject_ids", "missing_subject", _raw(record))
            continue
        if len(record.subject_ids) > 1:
            refuse(record.line, rid, "subject_ids", "multi_subject_unsupported", _raw(record))
            continue
        answers = record.answers or []
        labels = record.source == "export" and all(isinstance(a, str) for a in answers)
        answer_map = context.answer_map(record.workflow_version, labels=labels)
        if answer_map is None:
            version = record.workflow_version
            counts.unknown_versions[version] = counts.unknown_versions.get(version, 0) + 1
            refuse(record.line, rid, "workflow_version", "unknown_workflow_version", _raw(record))
            continue
        if answer_map.task_type not in SUPPORTED_TASK_TYPES:
            reason = f"unsupported_task_type:{answer_map.task_type}"
            refuse(record.line, rid, "annotations", reason, _raw(record))
            continue
        if not all(isinstance(a, int | str) for a in answers):
            refuse(record.line, rid, "annotations", "invalid_answer_type", _raw(record))
            continue
        if record.zooniverse_id in seen:
            counts.unchanged += 1  # the same id twice in one page or file (B5)
            continue
        seen.add(record.zooniverse_id)
        concept_ids, invalid = answer_map.resolve(answers)
        accepted.append(
            _Accepted(
                record=record,
                subject_zid=record.subject_ids[0],
                volunteer_key=volunteer_key(user_id=record.user_id, user_name=record.user_name),
                concept_ids=concept_ids,
                invalid=invalid,
            )
        )

    counts.quarantined = len(quarantine)
    with transaction.atomic():
        if accepted:
            _store(accepted, context=context, counts=counts)
        if quarantine:
            QuarantinedRow.objects.bulk_create(quarantine, batch_size=_INSERT_BATCH)
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


def _store(accepted: list[_Accepted], *, context: _Context, counts: IngestCounts) -> None:
    """Write one batch of accepted records; runs inside the batch transaction."""
    workflow = context.workflow

    # Known ids are skipped before anything else: a re-import touches nothing (B5, L2).
    ids = [a.record.zooniverse_id for a in accepted]
    known = set(
        Classification.objects.filter(_among("zooniverse_id", ids)).values_list(
            "zooniverse_id", flat=True
        )
    )
    if known:
        counts.unchanged += len(known)
        accepted = [a for a in accepted if a.record.zooniverse_id not in known]
        if not accepted:
            return

    volunteers = _volunteers_resolve(accepted, known=context.volunteers)
    subjects, created_subjects = _subjects_resolve(accepted, unmatched=context.unmatched)

    # Repeats: read the stored rows of every (volunteer, subject) pair in the batch, decide the
    # earliest of each group over stored and new rows together, and write new rows already
    # flagged. Stored rows change only when an earlier one arrives late.
    logged_in = {pk: key.startswith("user:") for key, pk in volunteers.items()}
    new_rows = []
    for a in accepted:
        subject_id, item_id = subjects[a.subject_zid]
        r = a.record
        new_rows.append(
            _NewRow(
                zooniverse_id=r.zooniverse_id,
                subject_id=subject_id,
                item_id=item_id,
                volunteer_id=volunteers[a.volunteer_key],
                created_at=r.created_at,
                session=r.session[:128],
                accepted=a,
            )
        )
        if a.invalid:
            counts.invalid_answers += 1

    touched_items: set[int] = {c.item_id for c in new_rows if c.item_id is not None}
    flag_changes = _repeats_decide(
        new_rows, logged_in=logged_in, workflow=workflow, new_subjects=created_subjects
    )
    for _pk, item_id, _flag in flag_changes:
        if item_id is not None:
            touched_items.add(item_id)
    counts.repeats_flagged += sum(1 for c in new_rows if c.is_duplicate)
    to_flag = [pk for pk, _, flag in flag_changes if flag]
    to_clear = [pk for pk, _, flag in flag_changes if not flag]
    counts.repeats_flagged += len(to_flag)
    counts.repeats_cleared += len(to_clear)
    counts.reflagged += len(to_flag) + len(to_clear)

    _classifications_insert(new_rows, workflow_id=workflow.pk)
    counts.created += len(new_rows)
    if to_flag:
        Classification.objects.filter(pk__in=to_flag).update(is_duplicate=True)
    if to_clear:
        Classification.objects.filter(pk__in=to_clear).update(is_duplicate=False)

    _counts_recompute(items=touched_items, volunteers=set(volunteers.values()))


@dataclass(slots=True)
class _NewRow:
    """A classification about to be inserted, with its database ids resolved."""

    zooniverse_id: int
    subject_id: int
    item_id: int | None
    volunteer_id: int
    created_at: datetime
    session: str
    accepted: _Accepted
    is_duplicate: bool = False


# The columns the ingest fills itself, by attribute name; any other column of Classification
# (one added later) gets its field default.
_FILLED = (
    "zooniverse_id", "workflow_id", "workflow_version", "subject_id", "item_id", "volunteer_id",
    "created_at", "concept_ids", "invalid_answers", "is_duplicate", "gold_standard", "expert",
    "session", "source",
)  # fmt: skip


def _classifications_insert(rows: list[_NewRow], *, workflow_id: int) -> None:
    """The batch's new classifications, in one prepared insert (:func:`_rows_insert`)."""
    connection = connections[router.db_for_write(Classification)]
    adapt_time = _time_adapter(connection)
    adapt_json = connection.ops.adapt_json_value
    # A batch has a few hundred distinct answer lists among thousands of rows: adapt each once.
    adapted: dict[tuple[int | str, ...], Any] = {}

    def adapt_list(values: list[int] | list[int | str]) -> Any:
        key = tuple(values)
        value = adapted.get(key)
        if value is None:
            value = adapted[key] = adapt_json(values, None)
        return value

    values = []
    for row in rows:
        r = row.accepted.record
        values.append(
            (
                row.zooniverse_id, workflow_id, r.workflow_version[:32], row.subject_id,
                row.item_id, row.volunteer_id, adapt_time(row.created_at),
                adapt_list(row.accepted.concept_ids), adapt_list(row.accepted.invalid),
                row.is_duplicate, r.gold_standard, r.expert, row.session, r.source[:8],
            )
        )  # fmt: skip
    _rows_insert(Classification, _FILLED, values)


#: From this many rows a PostgreSQL insert goes through COPY.
_COPY_FROM = 1_000


def _rows_insert(model: type[Model], filled: Sequence[str], values: list[tuple]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING of rows of ``model``, one prepared statement a batch.

    ``values`` hold, per row, the ``filled`` columns (attribute names) already adapted for the
    database; every other column gets its field default (``now`` for ``auto_now_add``).
    ``bulk_create`` spent most of the import compiling SQL per field and per row (and splits
    inserts at 999 parameters on SQLite). Conflicts on a unique key are ignored, as
    ``ignore_conflicts`` would. SQLite runs one ``executemany``; PostgreSQL streams a large batch
    into a temporary table with ``COPY`` and moves it with one ``INSERT ... SELECT`` (a page of a
    sync is too small to be worth the four extra statements).
    """
    if not values:
        return
    connection = connections[router.db_for_write(model)]
    ops = connection.ops
    fields = {f.attname: f for f in model._meta.concrete_fields if not f.primary_key}
    now = timezone.now()
    others = [f for name, f in fields.items() if name not in filled]
    constants = tuple(
        f.get_db_prep_save(
            now
            if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
            else f.get_default(),
            connection,
        )
        for f in others
    )
    columns = [fields[name].column for name in filled] + [f.column for f in others]
    if constants:
        values = [row + constants for row in values]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and len(values) >= _COPY_FROM:
            _copy_then_insert(cursor, ops, model, columns, values)
        else:
            cursor.executemany(
                "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING".format(
                    ops.quote_name(model._meta.db_table),
                    ", ".join(ops.quote_name(c) for c in columns),
                    ", ".join(["%s"] * len(columns)),
                ),
                values,
            )


def _copy_then_insert(
    cursor: Any, ops: Any, model: type[Model], columns: list[str], values: list[tuple]
) -> None:
    """PostgreSQL: the batch streams into a temporary table with ``COPY`` (one round trip, no
    per-row statement), then one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` moves it."""
    table = ops.quote_name(model._meta.db_table)
    stage = ops.quote_name(f"stage_{model._meta.db_table}")
    names = ", ".join(ops.quote_name(c) for c in columns)
    cursor.execute(f"DROP TABLE IF EXISTS {stage}")
    # Same column types as the target. (``bulk_write`` stages columns as COPY text; these rows
    # hold the backend's own adapted values, JSON wrappers among them, which ``write_row`` takes.)
    cursor.execute(f"CREATE TEMPORARY TABLE {stage} AS SELECT {names} FROM {table} WHERE 1 = 0")
    with cursor.cursor.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
        write_row = copy.write_row
        for row in values:
            write_row(row)
    cursor.execute(
        f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage} ON CONFLICT DO NOTHING"
    )
    cursor.execute(f"DROP TABLE {stage}")


def _time_adapter(connection: Any) -> Callable[[datetime], Any]:
    """The backend's datetime adapter, with a shortcut for UTC values on SQLite.

    Django's SQLite adapter checks settings and converts time zones for every value; a UTC value
    (what the parsers produce) becomes the same naive text directly.
    """
    generic = connection.ops.adapt_datetimefield_value
    if connection.vendor != "sqlite" or str(connection.timezone) != "UTC":
        return generic

    def adapt(value: datetime) -> Any:
        if value.tzinfo is UTC:
            return str(value.replace(tzinfo=None))
        return generic(value)

    return adapt


def _volunteers_resolve(accepted: list[_Accepted], *, known: dict[str, int]) -> dict[str, int]:
    """Volunteer key -> id, creating the missing volunteers in bulk.

    ``known`` caches ids across the batches of one ingest: a volunteer is never deleted while it
    has votes, and a few thousand keys recur in every batch of a large export.
    """
    wanted: dict[str, ClassificationRecord] = {}
    for a in accepted:
        wanted.setdefault(a.volunteer_key, a.record)
    found = {key: known[key] for key in wanted if key in known}
    unknown = [key for key in wanted if key not in found]
    if unknown:
        found.update(Volunteer.objects.filter(_among("key", unknown)).values_list("key", "id"))
    missing = [key for key in wanted if key not in found]
    if missing:
        Volunteer.objects.bulk_create(
            [
                Volunteer(
                    key=key,
                    zooniverse_user_id=wanted[key].user_id,
                    user_name=wanted[key].user_name[:255],
                    logged_in=wanted[key].user_id is not None,
                )
                for key in missing
            ],
            ignore_conflicts=True,
            batch_size=_INSERT_BATCH,
        )
        found.update(Volunteer.objects.filter(_among("key", missing)).values_list("key", "id"))
    if len(known) < 1_000_000:  # bounded: about 100 MB at most
        known.update(found)
    return found


def _retirement(metadata: dict[str, Any]) -> tuple[datetime | None, str]:
    """Retirement from an export's ``subject_data`` status object (``null`` when not retired)."""
    status = metadata.get("retired")
    if not isinstance(status, dict) or not status.get("retired_at"):
        return None, ""
    from django.utils.dateparse import parse_datetime

    try:
        retired_at = parse_datetime(str(status["retired_at"]))
    except ValueError:
        retired_at = None
    return retired_at, str(status.get("retirement_reason") or "")[:32]


def _item_candidates(metadata: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, value) pairs naming the item of a subject, in the order they are tried."""
    found: list[tuple[str, str]] = []
    for key in ITEM_METADATA_KEYS:
        value = metadata.get(key)
        if value is None or value == "" or isinstance(value, dict | list | bool):
            continue
        text = str(value).strip()
        if key == "crowdloop_id":
            if text.isdigit():
                found.append(("pk", text))
        else:
            found.append(("external_id", text))
            if key == "europeana_id":
                # Europeana ids are written "/2058612/x" or "2058612/x": accept either spelling.
                other = text.lstrip("/") if text.startswith("/") else f"/{text}"
                found.append(("external_id", other))
    return found


def _items_match(metadata_by_subject: dict[int, dict[str, Any]]) -> dict[int, int]:
    """Subject id -> item id, by metadata external_id, then europeana_id, then crowdloop_id."""
    candidates = {zid: _item_candidates(meta) for zid, meta in metadata_by_subject.items()}
    external = {v for pairs in candidates.values() for kind, v in pairs if kind == "external_id"}
    pks = {int(v) for pairs in candidates.values() for kind, v in pairs if kind == "pk"}
    by_external = (
        dict(Item.objects.filter(_among("external_id", external)).values_list("external_id", "id"))
        if external
        else {}
    )
    existing_pks = set(Item.objects.filter(pk__in=pks).values_list("id", flat=True) if pks else [])
    matched: dict[int, int] = {}
    for zid, pairs in candidates.items():
        for kind, value in pairs:
            item_id = (
                by_external.get(value)
                if kind == "external_id"
                else (int(value) if int(value) in existing_pks else None)
            )
            if item_id is not None:
                matched[zid] = item_id
                break
    return matched


#: The columns a new subject gets from its classifications (the rest take their defaults).
_SUBJECT_FILLED = ("zooniverse_id", "item_id", "metadata", "retired_at", "retirement_reason")


def _subjects_read(zooniverse_ids: list[int]) -> dict[int, tuple[int, int | None]]:
    rows = Subject.objects.filter(_among("zooniverse_id", zooniverse_ids)).values_list(
        "zooniverse_id", "id", "item_id"
    )
    return {zid: (pk, item_id) for zid, pk, item_id in rows}


def _item_keys(metadata: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(str(metadata.get(key)) for key in ITEM_METADATA_KEYS)


def _subjects_resolve(
    accepted: list[_Accepted], *, unmatched: set[tuple[int, tuple[Any, ...]]]
) -> tuple[dict[int, tuple[int, int | None]], set[int]]:
    """Subject zooniverse id -> (subject id, item id), and the ids of the subjects created.

    A new subject is linked to an item through its metadata; a known subject still without an item
    is linked when its metadata now names one, and its stored votes follow it. ``unmatched``
    remembers metadata that matched no item, so that it is not looked up again (it is updated).
    """
    metadata: dict[int, dict[str, Any]] = {}
    for a in accepted:
        if a.subject_zid not in metadata:
            meta = a.record.subject_metadata.get(a.subject_zid)
            metadata[a.subject_zid] = meta if isinstance(meta, dict) else {}
    found = _subjects_read(list(metadata))
    unlinked = {
        zid: meta
        for zid, meta in metadata.items()
        if meta
        and (zid not in found or found[zid][1] is None)
        and (zid, _item_keys(meta)) not in unmatched
    }
    items = _items_match(unlinked) if unlinked else {}
    if len(unmatched) < 1_000_000:  # bounded, like the volunteer cache
        unmatched.update(
            (zid, _item_keys(meta)) for zid, meta in unlinked.items() if zid not in items
        )

    missing = [zid for zid in metadata if zid not in found]
    if missing:
        connection = connections[router.db_for_write(Subject)]
        adapt_time = _time_adapter(connection)
        adapt_json = connection.ops.adapt_json_value
        new_subjects = []
        for zid in missing:
            meta = {k: v for k, v in metadata[zid].items() if k != "retired"}
            retired_at, reason = _retirement(metadata[zid])
            new_subjects.append(
                (
                    zid, items.get(zid), adapt_json(meta, None),
                    None if retired_at is None else adapt_time(retired_at), reason[:32],
                )
            )  # fmt: skip
        _rows_insert(Subject, _SUBJECT_FILLED, new_subjects)
        found.update(_subjects_read(missing))

    relink = {zid: items[zid] for zid in items if zid in found and found[zid][1] is None}
    if relink:
        subjects = [Subject(pk=found[zid][0], item_id=item_id) for zid, item_id in relink.items()]
        Subject.objects.bulk_update(subjects, ["item"], batch_size=_INSERT_BATCH)
        Classification.objects.filter(
            subject_id__in=[found[zid][0] for zid in relink], item__isnull=True
        ).update(
            item_id=Subquery(
                Subject.objects.filter(pk=OuterRef("subject_id")).values("item_id")[:1]
            )
        )
        for zid, item_id in relink.items():
            found[zid] = (found[zid][0], item_id)
    return found, {found[zid][0] for zid in missing if zid in found}


def _repeats_decide(
    new_rows: list[_NewRow],
    *,
    logged_in: dict[int, bool],
    workflow: Workflow,
    new_subjects: set[int],
) -> list[tuple[int, int | None, bool]]:
    """Set ``is_duplicate`` on the new rows; return (pk, item id, flag) of stored rows to change.

    A group is one volunteer on one subject in this workflow; for logged-out volunteers also one
    browser session, and without a session a logged-out vote is never called a repeat (B7).
    """

    def group_of(volunteer_id: int, subject_id: int, session: str) -> tuple[int, int, str] | None:
        if logged_in.get(volunteer_id, False):
            return (volunteer_id, subject_id, "")
        if not session:
            return None
        return (volunteer_id, subject_id, session)

    # (created_at, zooniverse id, stored pk or None, current flag, item id, new row or None)
    Member = tuple[datetime, int, int | None, bool, int | None, _NewRow | None]
    groups: dict[tuple[int, int, str], list[Member]] = defaultdict(list)
    for row in new_rows:
        key = group_of(row.volunteer_id, row.subject_id, row.session)
        if key is not None:
            groups[key].append((row.created_at, row.zooniverse_id, None, False, row.item_id, row))
    if not groups:
        return []
    # Subjects created by this batch have no stored votes. The others are read through the
    # subject index (a subject has a handful of votes). The volunteer and workflow tests must not
    # steer the planner: SQLite picked the workflow index (every row: quadratic over an import)
    # or probed the (volunteer, subject) index per combination. So the (volunteer, subject) pair
    # is matched as an unindexable expression and the workflow is checked here.
    subject_ids = {k[1] for k in groups} - new_subjects
    stored = Classification.objects.filter(
        _among("subject_id", subject_ids),
        _pairs_among({(k[0], k[1]) for k in groups if k[1] in subject_ids}),
    ).values_list(
        "workflow_id",
        "id",
        "volunteer_id",
        "subject_id",
        "session",
        "created_at",
        "zooniverse_id",
        "is_duplicate",
        "item_id",
    )
    for workflow_id, pk, volunteer_id, subject_id, session, created_at, zid, flag, item_id in (
        stored if subject_ids else ()
    ):
        if workflow_id != workflow.pk:
            continue
        key = group_of(volunteer_id, subject_id, session)
        if key in groups:
            groups[key].append((created_at, zid, pk, flag, item_id, None))

    changes: list[tuple[int, int | None, bool]] = []
    for members in groups.values():
        if len(members) == 1:
            continue
        members.sort(key=lambda m: (m[0], m[1]))
        for position, (_, _, pk, flag, item_id, row) in enumerate(members):
            duplicate = position > 0
            if row is not None:
                row.is_duplicate = duplicate
            elif flag != duplicate:
                changes.append((pk, item_id, duplicate))
    return changes


def _counts_recompute(*, items: set[int], volunteers: set[int]) -> None:
    """Recount the touched items (votes that count: no repeats) and volunteers (all their votes).

    Recomputed from the rows rather than incremented, so a replayed or concurrent batch cannot
    drift the counters.
    """
    if items:
        Item.objects.filter(pk__in=items).update(
            n_classifications=Coalesce(
                Subquery(
                    Classification.objects.filter(item_id=OuterRef("pk"), is_duplicate=False)
                    .order_by()
                    .values("item_id")
                    .annotate(n=Count("id"))
                    .values("n")[:1],
                    output_field=IntegerField(),
                ),
                Value(0),
            )
        )
    if volunteers:
        # A volunteer's count is every classification they made, repeats included: it measures
        # activity, and it is an index-only count on a column every row has indexed.
        Volunteer.objects.filter(pk__in=volunteers).update(
            n_classifications=Coalesce(
                Subquery(
                    Classification.objects.filter(volunteer_id=OuterRef("pk"))
                    .order_by()
                    .values("volunteer_id")
                    .annotate(n=Count("id"))
                    .values("n")[:1],
                    output_field=IntegerField(),
                ),
                Value(0),
            )
        )
