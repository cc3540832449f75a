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
import time
from collections import ChainMap, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import repeat
from typing import Any

import numpy as np
import orjson
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
from annotate.signals import votes_stored

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


class ClassificationColumns:
    """Classifications as columns: one array entry per row, repeated text held once.

    What the ingest works on. A fast parser builds it directly from a block of an export; records
    from the API or a small file go through :meth:`from_records`. Versions, volunteers and answer
    lists repeat across thousands of rows, so rows hold codes into ``versions``, ``volunteers`` and
    ``answer_lists``; those are resolved once per distinct value, not once per row.

    ``subject_id`` is the row's only subject; ``subject_count`` says how many it had (0 and 2 or
    more are refused, and ``subject_lists`` keeps those rows' ids for the report). ``order`` places
    rows and the ``quarantine`` entries (refused by the parser) in input order, so quarantined rows
    are stored in the order they were met. ``line`` is 0 where a source has no lines; ``source``
    names each row's source (``api``, ``export``).
    """

    __slots__ = (
        "answer_code", "answer_lists", "created_at", "expert", "gold_standard", "line",
        "order", "quarantine", "session", "source", "subject_count", "subject_id",
        "subject_lists", "subject_metadata", "version_code", "versions", "volunteer_code",
        "volunteers", "workflow_id", "zooniverse_id",
    )  # fmt: skip

    def __init__(
        self,
        *,
        zooniverse_id: np.ndarray,
        workflow_id: np.ndarray,
        version_code: np.ndarray,
        versions: list[str],
        subject_id: np.ndarray,
        volunteer_code: np.ndarray,
        volunteers: list[tuple[int | None, str]],
        created_at: np.ndarray,
        answer_code: np.ndarray,
        answer_lists: list[list[Any]],
        gold_standard: np.ndarray,
        expert: np.ndarray,
        session: np.ndarray,
        source: str | np.ndarray,
        subject_metadata: Mapping[int, dict[str, Any]],
        line: np.ndarray | None = None,
        order: np.ndarray | None = None,
        subject_count: np.ndarray | None = None,
        subject_lists: dict[int, list[int]] | None = None,
        quarantine: list[tuple[int, QuarantineEntry]] | None = None,
    ) -> None:
        n = len(zooniverse_id)
        self.zooniverse_id = np.asarray(zooniverse_id, dtype=np.int64)
        self.workflow_id = np.asarray(workflow_id, dtype=np.int64)
        self.version_code = np.asarray(version_code, dtype=np.intp)
        self.versions = versions
        self.subject_id = np.asarray(subject_id, dtype=np.int64)
        self.volunteer_code = np.asarray(volunteer_code, dtype=np.intp)
        self.volunteers = volunteers
        self.created_at = np.asarray(created_at, dtype="datetime64[us]")
        self.answer_code = np.asarray(answer_code, dtype=np.intp)
        self.answer_lists = answer_lists
        self.gold_standard = np.asarray(gold_standard, dtype=bool)
        self.expert = np.asarray(expert, dtype=bool)
        self.session = np.asarray(session, dtype=object)
        self.source = (
            np.full(n, source, object) if isinstance(source, str) else np.asarray(source, object)
        )
        self.subject_metadata = subject_metadata
        self.line = np.zeros(n, np.int64) if line is None else np.asarray(line, dtype=np.int64)
        self.order = np.arange(n, dtype=np.int64) if order is None else np.asarray(order, np.int64)
        self.subject_count = (
            np.ones(n, np.int64) if subject_count is None else np.asarray(subject_count, np.int64)
        )
        self.subject_lists = subject_lists or {}
        self.quarantine = quarantine or []

    def __len__(self) -> int:
        return len(self.zooniverse_id)

    @classmethod
    def from_records(
        cls, items: Sequence[ClassificationRecord | QuarantineEntry]
    ) -> ClassificationColumns:
        """Records (and entries already refused) in the order given."""
        records = [r for r in items if isinstance(r, ClassificationRecord)]
        quarantine = [
            (position, item)
            for position, item in enumerate(items)
            if isinstance(item, QuarantineEntry)
        ]
        order = [p for p, item in enumerate(items) if isinstance(item, ClassificationRecord)]
        versions: dict[str, int] = {}
        volunteers: dict[tuple[int | None, str], int] = {}
        answers: dict[Any, int] = {}
        answer_lists: list[list[Any]] = []
        subject_lists: dict[int, list[int]] = {}
        metadata: dict[int, dict[str, Any]] = {}
        columns: dict[str, list[Any]] = defaultdict(list)
        for i, r in enumerate(records):
            columns["zooniverse_id"].append(r.zooniverse_id)
            columns["workflow_id"].append(r.workflow_id)
            columns["version_code"].append(versions.setdefault(r.workflow_version, len(versions)))
            subjects = r.subject_ids or []
            columns["subject_id"].append(subjects[0] if len(subjects) == 1 else 0)
            columns["subject_count"].append(len(subjects))
            if len(subjects) != 1:
                subject_lists[i] = list(subjects)
            for zid, meta in r.subject_metadata.items():
                metadata.setdefault(zid, meta)
            volunteer = (r.user_id, r.user_name)
            columns["volunteer_code"].append(volunteers.setdefault(volunteer, len(volunteers)))
            columns["created_at"].append(_utc_naive(r.created_at))
            given = list(r.answers or [])
            try:
                key: Any = tuple(given)
                hash(key)
            except TypeError:  # unhashable answers are refused later; each keeps its own code
                key = ("unhashable", i)
            code = answers.get(key)
            if code is None:
                code = answers[key] = len(answer_lists)
                answer_lists.append(given)
            columns["answer_code"].append(code)
            columns["gold_standard"].append(r.gold_standard)
            columns["expert"].append(r.expert)
            columns["session"].append(r.session)
            columns["line"].append(r.line or 0)
            columns["source"].append(r.source)
        return cls(
            zooniverse_id=np.array(columns["zooniverse_id"], np.int64),
            workflow_id=np.array(columns["workflow_id"], np.int64),
            version_code=np.array(columns["version_code"], np.intp),
            versions=list(versions),
            subject_id=np.array(columns["subject_id"], np.int64),
            volunteer_code=np.array(columns["volunteer_code"], np.intp),
            volunteers=list(volunteers),
            created_at=np.array(columns["created_at"], "datetime64[us]"),
            answer_code=np.array(columns["answer_code"], np.intp),
            answer_lists=answer_lists,
            gold_standard=np.array(columns["gold_standard"], bool),
            expert=np.array(columns["expert"], bool),
            session=np.array(columns["session"], object),
            source=np.array(columns["source"], object),
            subject_metadata=metadata,
            line=np.array(columns["line"], np.int64),
            order=np.array(order, np.int64),
            subject_count=np.array(columns["subject_count"], np.int64),
            subject_lists=subject_lists,
            quarantine=quarantine,
        )

    @classmethod
    def concat(cls, parts: Sequence[ClassificationColumns]) -> ClassificationColumns:
        """The rows of ``parts`` one after the other (codes renumbered, entries kept)."""
        arrays: dict[str, list[np.ndarray]] = defaultdict(list)
        versions: list[str] = []
        volunteers: list[tuple[int | None, str]] = []
        answer_lists: list[list[Any]] = []
        subject_lists: dict[int, list[int]] = {}
        quarantine: list[tuple[int, QuarantineEntry]] = []
        rows = 0
        for part in parts:
            for name in _PLAIN_COLUMNS:
                arrays[name].append(getattr(part, name))
            arrays["version_code"].append(part.version_code + len(versions))
            arrays["volunteer_code"].append(part.volunteer_code + len(volunteers))
            arrays["answer_code"].append(part.answer_code + len(answer_lists))
            versions += part.versions
            volunteers += part.volunteers
            answer_lists += part.answer_lists
            subject_lists.update({rows + i: ids for i, ids in part.subject_lists.items()})
            quarantine += part.quarantine
            rows += len(part)
        return cls(
            **{name: np.concatenate(values) for name, values in arrays.items()},
            versions=versions,
            volunteers=volunteers,
            answer_lists=answer_lists,
            # The first part naming a subject wins, as within a part. Not merged: a block
            # reader's mapping converts its keys only for the subjects looked up.
            subject_metadata=ChainMap(*(part.subject_metadata for part in parts)),
            subject_lists=subject_lists,
            quarantine=quarantine,
        )

    def record(self, i: int) -> ClassificationRecord:
        """Row ``i`` as a record (for the report of a refused row)."""
        user_id, user_name = self.volunteers[self.volunteer_code[i]]
        subjects = self.subject_lists.get(i, [int(self.subject_id[i])])
        return ClassificationRecord(
            zooniverse_id=int(self.zooniverse_id[i]),
            workflow_id=int(self.workflow_id[i]),
            workflow_version=self.versions[self.version_code[i]],
            subject_ids=subjects,
            user_id=user_id,
            user_name=user_name,
            created_at=self.created_at[i].item().replace(tzinfo=UTC),
            answers=self.answer_lists[self.answer_code[i]],
            gold_standard=bool(self.gold_standard[i]),
            expert=bool(self.expert[i]),
            subject_metadata={
                z: self.subject_metadata[z] for z in subjects if z in self.subject_metadata
            },
            session=self.session[i],
            source=self.source[i],
            line=int(self.line[i]) or None,
        )


#: The per-row arrays of :class:`ClassificationColumns` that are not codes.
_PLAIN_COLUMNS = (
    "zooniverse_id", "workflow_id", "subject_id", "created_at", "gold_standard", "expert",
    "session", "source", "line", "order", "subject_count",
)  # fmt: skip


def _utc_naive(value: datetime) -> datetime:
    """An aware datetime as naive UTC (a naive one is taken as UTC already)."""
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


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
        # Subject id -> the item metadata last looked up for it without finding an item: items do
        # not appear during an ingest, so the same subject's next votes need not look again.
        self.unmatched: dict[int, tuple[Any, ...]] = {}
        # With counters recounted at the end of the ingest: the items and volunteers to recount.
        self.deferred: tuple[set[int], set[int]] | None = None
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


def _batches(
    records: Iterable[ClassificationRecord | QuarantineEntry | ClassificationColumns], size: int
) -> Iterator[ClassificationColumns]:
    """Batches of about ``size`` rows: records are counted one by one, ``ClassificationColumns``
    items (a fast parser's blocks) are joined whole until they reach ``size``."""
    pending: list[ClassificationRecord | QuarantineEntry] = []
    blocks: list[ClassificationColumns] = []
    rows = 0
    for item in records:
        if isinstance(item, ClassificationColumns):
            if pending:
                yield ClassificationColumns.from_records(pending)
                pending = []
            blocks.append(item)
            rows += len(item) + len(item.quarantine)
            if rows >= size:
                yield blocks[0] if len(blocks) == 1 else ClassificationColumns.concat(blocks)
                blocks, rows = [], 0
            continue
        if blocks:
            yield blocks[0] if len(blocks) == 1 else ClassificationColumns.concat(blocks)
            blocks, rows = [], 0
        pending.append(item)
        if len(pending) >= size:
            yield ClassificationColumns.from_records(pending)
            pending = []
    if blocks:
        yield blocks[0] if len(blocks) == 1 else ClassificationColumns.concat(blocks)
    if pending:
        yield ClassificationColumns.from_records(pending)


#: With counters recounted at the end of an ingest: how often, in seconds, a long ingest still
#: recounts what it has touched so far. A million-row file import on SQLite takes about 20 s.
COUNTERS_EVERY_S = 60.0


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
    context = _Context(workflow)
    if cursor:
        SyncCursor.objects.get_or_create(workflow=workflow)
    total = IngestCounts()
    if counters_at_end:
        context.deferred = (set(), set())
    recounted = time.monotonic()
    try:
        for batch in _batches(records, batch_size):
            result = _ingest_batch(batch, context=context, report=report, cursor=cursor)
            total.add(result.counts)
            if context.deferred is not None and time.monotonic() - recounted >= COUNTERS_EVERY_S:
                _counts_recompute(items=context.deferred[0], volunteers=context.deferred[1])
                context.deferred = (set(), set())
                recounted = time.monotonic()
            if on_batch_committed is not None:
                on_batch_committed(result)
    except BaseException:
        # The batches committed so far keep true counters; the original error is what counts.
        if context.deferred is not None:
            try:
                _counts_recompute(items=context.deferred[0], volunteers=context.deferred[1])
            except Exception:
                logger.exception("counters not recounted after a failed ingest")
        raise
    if context.deferred is not None:
        _counts_recompute(items=context.deferred[0], volunteers=context.deferred[1])
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


@dataclass(slots=True)
class _Answers:
    """What one (version, answer list) pair of a batch resolves to; ``refusal`` when refused."""

    refusal: tuple[str, str] | None = None
    concept_ids: list[int] = field(default_factory=list)
    invalid: list[int | str] = field(default_factory=list)


def _answers_resolve(
    columns: ClassificationColumns, context: _Context, rows: np.ndarray
) -> tuple[np.ndarray, list[_Answers]]:
    """Per row, a code into the resolutions of the batch's distinct (version, answers) pairs."""
    width = len(columns.answer_lists) + 1
    pair = columns.version_code[rows].astype(np.int64) * width + columns.answer_code[rows]
    pair = pair * 2 + (columns.source[rows] == "export")
    distinct, code = np.unique(pair, return_inverse=True)
    resolved: list[_Answers] = []
    for value in distinct.tolist():
        version = columns.versions[value // 2 // width]
        answers = columns.answer_lists[value // 2 % width]
        labels = value % 2 == 1 and all(isinstance(a, str) for a in answers)
        answer_map = context.answer_map(version, labels=labels)
        if answer_map is None:
            resolved.append(_Answers(("workflow_version", "unknown_workflow_version")))
        elif answer_map.task_type not in SUPPORTED_TASK_TYPES:
            reason = f"unsupported_task_type:{answer_map.task_type}"
            resolved.append(_Answers(("annotations", reason)))
        elif not all(isinstance(a, int | str) for a in answers):
            resolved.append(_Answers(("annotations", "invalid_answer_type")))
        else:
            resolved.append(_Answers(None, *answer_map.resolve(answers)))
    return code, resolved


def _ingest_batch(
    columns: ClassificationColumns,
    *,
    context: _Context,
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

    ids = columns.zooniverse_id
    seen_ids = [int(e.record_id) for _, e in columns.quarantine if e.record_id.isdigit()]
    max_id = max(seen_ids + ([int(ids.max())] if len(ids) else []), default=None)

    # The checks, in the order a row meets them; a row is refused for the first that fails.
    rows = np.arange(len(columns))
    wrong = columns.workflow_id[rows] != workflow.zooniverse_id
    for workflow_id in np.unique(columns.workflow_id[rows[wrong]]).tolist():
        reason = f"wrong_workflow: {workflow_id} is not workflow {workflow.zooniverse_id}"
        refuse(rows[wrong & (columns.workflow_id[rows] == workflow_id)], "workflow_id", reason)
    rows = rows[~wrong]
    count = columns.subject_count[rows]
    refuse(rows[count == 0], "subject_ids", "missing_subject")
    refuse(rows[count > 1], "subject_ids", "multi_subject_unsupported")
    rows = rows[count == 1]
    answer_code, resolved = _answers_resolve(columns, context, rows)
    bad = np.array([a.refusal is not None for a in resolved], bool)[answer_code]
    for code in np.unique(answer_code[bad]).tolist():
        field_name, reason = resolved[code].refusal  # type: ignore[misc]
        these = rows[answer_code == code]
        if reason == "unknown_workflow_version":
            version = columns.versions[columns.version_code[these[0]]]
            counts.unknown_versions[version] = counts.unknown_versions.get(version, 0) + len(these)
        refuse(these, field_name, reason)
    rows, answer_code = rows[~bad], answer_code[~bad]
    # The same id twice in one page or file (B5): the first stays, the others are unchanged.
    by_id = np.lexsort((columns.order[rows], ids[rows]))  # by id, then by place in the input
    sorted_ids = ids[rows][by_id]
    first = np.ones(len(rows), bool)
    first[1:] = sorted_ids[1:] != sorted_ids[:-1]
    if not first.all():
        counts.unchanged += int((~first).sum())
        keep = np.sort(by_id[first])
        rows, answer_code = rows[keep], answer_code[keep]

    refused.sort(key=lambda pair: pair[0])
    quarantine = [
        QuarantinedRow(
            report_id=report.pk,
            line=entry.line,
            record_id=entry.record_id[:255],
            field=entry.field[:100],
            reason=entry.reason[:1000],
            raw=_clean_text(entry.raw),
        )
        for _, entry in refused
    ]
    counts.quarantined = len(quarantine)
    with transaction.atomic():
        if len(rows):
            _store(columns, rows, answer_code, resolved, context=context, counts=counts)
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


def _store(
    columns: ClassificationColumns,
    rows: np.ndarray,
    answer_code: np.ndarray,
    resolved: list[_Answers],
    *,
    context: _Context,
    counts: IngestCounts,
) -> None:
    """Write the accepted ``rows`` of a batch; runs inside the batch transaction."""
    workflow = context.workflow

    # Known ids are skipped before anything else: a re-import touches nothing (B5, L2).
    ids = columns.zooniverse_id[rows]
    stored = Classification.objects.filter(_among("zooniverse_id", ids.tolist()))
    if context.deferred is None:
        known = list(stored.values_list("zooniverse_id", flat=True))
    else:
        # A re-run after a failed import recounts what the failed run stored, too.
        found = list(stored.values_list("zooniverse_id", "item_id", "volunteer_id"))
        known = [zid for zid, _, _ in found]
        context.deferred[0].update(item for _, item, _ in found if item is not None)
        context.deferred[1].update(volunteer for _, _, volunteer in found)
    if known:
        counts.unchanged += len(known)
        fresh = ~np.isin(ids, np.array(known, np.int64))
        rows, answer_code, ids = rows[fresh], answer_code[fresh], ids[fresh]
        if not len(rows):
            return

    # Volunteers and subjects: resolved once per distinct value, then spread over the rows.
    codes, volunteer_of_row = np.unique(columns.volunteer_code[rows], return_inverse=True)
    # Two codes may name one volunteer (a user renamed between classifications): key them.
    keys = []
    wanted: dict[str, tuple[int | None, str]] = {}
    for code in codes.tolist():
        user_id, user_name = columns.volunteers[code]
        keys.append(volunteer_key(user_id=user_id, user_name=user_name))
        wanted.setdefault(keys[-1], (user_id, user_name))
    by_key = _volunteers_resolve(wanted, known=context.volunteers)
    volunteer_pk = np.array([by_key[key] for key in keys], np.int64)[volunteer_of_row]
    logged_in = np.array([key.startswith("user:") for key in keys], bool)[volunteer_of_row]

    zids, subject_of_row = np.unique(columns.subject_id[rows], return_inverse=True)
    metadata = {}
    for zid in zids.tolist():
        meta = columns.subject_metadata.get(zid)
        metadata[zid] = meta if isinstance(meta, dict) else {}
    subjects, created_subjects = _subjects_resolve(metadata, unmatched=context.unmatched)
    subject_pk = np.array([subjects[z][0] for z in metadata], np.int64)[subject_of_row]
    item_of_subject = [subjects[z][1] for z in metadata]
    item_id = np.array(item_of_subject, object)[subject_of_row]
    is_new_subject = np.array([subjects[z][0] in created_subjects for z in metadata], bool)
    is_new_subject = is_new_subject[subject_of_row]

    invalid = np.array([bool(a.invalid) for a in resolved], bool)[answer_code]
    counts.invalid_answers += int(invalid.sum())

    created_at = columns.created_at[rows]
    session = np.array([s[:128] for s in columns.session[rows].tolist()], object)
    duplicate, flag_changes = _repeats_decide(
        volunteer_pk=volunteer_pk,
        subject_pk=subject_pk,
        logged_in=logged_in,
        session=session,
        created_at=created_at,
        zooniverse_id=ids,
        is_new_subject=is_new_subject,
        workflow=workflow,
    )
    touched_items = {i for i in set(item_of_subject) if i is not None}
    for _pk, item, _flag in flag_changes:
        if item is not None:
            touched_items.add(item)
    counts.repeats_flagged += int(duplicate.sum())
    to_flag = [pk for pk, _, flag in flag_changes if flag]
    to_clear = [pk for pk, _, flag in flag_changes if not flag]
    counts.repeats_flagged += len(to_flag)
    counts.repeats_cleared += len(to_clear)
    counts.reflagged += len(to_flag) + len(to_clear)

    connection = connections[router.db_for_write(Classification)]
    adapt_json = _json_adapter(connection)
    concept_ids = np.array([adapt_json(a.concept_ids) for a in resolved], object)
    invalid_answers = np.array([adapt_json(a.invalid) for a in resolved], object)
    versions = np.array([v[:32] for v in columns.versions], object)
    n = len(rows)
    values = list(
        zip(
            ids.tolist(),
            repeat(workflow.pk, n),
            versions[columns.version_code[rows]].tolist(),
            subject_pk.tolist(),
            item_id.tolist(),
            volunteer_pk.tolist(),
            _times_adapted(created_at, connection),
            concept_ids[answer_code].tolist(),
            invalid_answers[answer_code].tolist(),
            duplicate.tolist(),
            columns.gold_standard[rows].tolist(),
            columns.expert[rows].tolist(),
            session.tolist(),
            [source[:8] for source in columns.source[rows].tolist()],
            strict=False,
        )
    )
    _rows_insert(Classification, _FILLED, values)
    counts.created += n
    if to_flag:
        Classification.objects.filter(pk__in=to_flag).update(is_duplicate=True)
    if to_clear:
        Classification.objects.filter(pk__in=to_clear).update(is_duplicate=False)

    if context.deferred is None:
        _counts_recompute(items=touched_items, volunteers=set(by_key.values()))
    else:
        context.deferred[0].update(touched_items)
        context.deferred[1].update(by_key.values())


# The columns the ingest fills itself, by attribute name; any other column of Classification
# (one added later) gets its field default.
_FILLED = (
    "zooniverse_id", "workflow_id", "workflow_version", "subject_id", "item_id", "volunteer_id",
    "created_at", "concept_ids", "invalid_answers", "is_duplicate", "gold_standard", "expert",
    "session", "source",
)  # fmt: skip


def _json_adapter(connection: Any) -> Callable[[Any], Any]:
    """JSONField values as JSON text made by ``orjson`` (same values, no spaces).

    SQLite stores the text; PostgreSQL casts it to ``jsonb`` (``COPY`` text and untyped
    parameters), where Django's ``Jsonb`` wrapper would be serialised again on every row it
    appears in: two million ``json.dumps`` calls for the answer lists of a million votes.
    """
    if connection.vendor in ("sqlite", "postgresql"):
        dumps, option = orjson.dumps, orjson.OPT_NON_STR_KEYS

        def adapt(value: Any) -> str:
            return dumps(value, option=option).decode()

        return adapt
    adapt_json = connection.ops.adapt_json_value
    return lambda value: adapt_json(value, None)


def _times_adapted(values: np.ndarray, connection: Any) -> list[Any]:
    """Naive-UTC ``datetime64[us]`` values as the backend stores them, without a loop per row.

    SQLite keeps ``str(datetime)`` text ("2024-02-01 00:00:00", with ".ffffff" only when there
    are microseconds); PostgreSQL takes the same text with an offset. Other backends get their
    own adapter, value by value.
    """
    if not len(values):
        return []
    utc_sqlite = connection.vendor == "sqlite" and str(connection.timezone) == "UTC"
    if utc_sqlite or connection.vendor == "postgresql":
        text = np.datetime_as_string(values, unit="us")  # 2024-02-01T00:00:00.000000
        text.view(np.uint32).reshape(len(text), -1)[:, 10] = ord(" ")
        whole = values.astype(np.int64) % 1_000_000 == 0
        out = text.astype(object)
        out[whole] = text[whole].astype("U19").astype(object)
        if connection.vendor == "postgresql":
            out = out + "+00:00"
        return out.tolist()
    adapt = connection.ops.adapt_datetimefield_value
    return [adapt(v.replace(tzinfo=UTC)) for v in values.astype(object).tolist()]


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


def _volunteers_resolve(
    wanted: dict[str, tuple[int | None, str]], *, known: dict[str, int]
) -> dict[str, int]:
    """Volunteer key -> id for ``wanted`` (key -> (user id, user name)), creating the missing.

    ``known`` caches ids across the batches of one ingest: a volunteer is never deleted while it
    has votes, and a few thousand keys recur in every batch of a large export.
    """
    found = {key: known[key] for key in wanted if key in known}
    unknown = [key for key in wanted if key not in found]
    if unknown:
        found.update(Volunteer.objects.filter(_among("key", unknown)).values_list("key", "id"))
    missing = [key for key in wanted if key not in found]
    if missing:
        rows = [
            (key, wanted[key][0], wanted[key][1][:255], wanted[key][0] is not None)
            for key in missing
        ]
        _rows_insert(Volunteer, ("key", "zooniverse_user_id", "user_name", "logged_in"), rows)
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
    metadata: dict[int, dict[str, Any]], *, unmatched: dict[int, tuple[Any, ...]]
) -> tuple[dict[int, tuple[int, int | None]], set[int]]:
    """Subject zooniverse id -> (subject id, item id), and the ids of the subjects created.

    ``metadata`` holds each subject's export metadata (``{}`` when there is none). A new subject
    is linked to an item through its metadata; a known subject still without an item is linked
    when its metadata now names one, and its stored votes follow it. ``unmatched`` remembers
    metadata that matched no item (subject id -> its item keys), so that the same metadata is
    not looked up again (it is updated).
    """
    found = _subjects_read(list(metadata))
    unlinked = {
        zid: meta
        for zid, meta in metadata.items()
        if meta
        and (zid not in found or found[zid][1] is None)
        and (zid not in unmatched or unmatched[zid] != _item_keys(meta))
    }
    items = _items_match(unlinked) if unlinked else {}
    if len(unmatched) < 1_000_000:  # bounded, like the volunteer cache
        unmatched.update(
            (zid, _item_keys(meta)) for zid, meta in unlinked.items() if zid not in items
        )

    missing = [zid for zid in metadata if zid not in found]
    if missing:
        connection = connections[router.db_for_write(Subject)]
        adapt_json = _json_adapter(connection)
        adapt_time = connection.ops.adapt_datetimefield_value
        new_subjects = []
        for zid in missing:
            meta = {k: v for k, v in metadata[zid].items() if k != "retired"}
            retired_at, reason = _retirement(metadata[zid])
            new_subjects.append(
                (
                    zid, items.get(zid), adapt_json(meta),
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
    *,
    volunteer_pk: np.ndarray,
    subject_pk: np.ndarray,
    logged_in: np.ndarray,
    session: np.ndarray,
    created_at: np.ndarray,
    zooniverse_id: np.ndarray,
    is_new_subject: np.ndarray,
    workflow: Workflow,
) -> tuple[np.ndarray, list[tuple[int, int | None, bool]]]:
    """The new rows' ``is_duplicate`` flags, and (pk, item id, flag) of stored rows to change.

    A group is one volunteer on one subject in this workflow; for logged-out volunteers also one
    browser session, and without a session a logged-out vote is never called a repeat (B7). Only
    rows that can be in a group of two are looked at one by one: those whose (volunteer,
    subject) pair recurs in the batch or is already stored.
    """
    n = len(volunteer_pk)
    duplicate = np.zeros(n, bool)
    grouped = logged_in | (session != "")
    pair = (volunteer_pk << 32) | subject_pk
    values, inverse, pair_counts = np.unique(pair, return_inverse=True, return_counts=True)
    candidate = grouped & (pair_counts[inverse] > 1)
    # Subjects created by this batch have no stored votes. The others are read through the
    # subject index (a subject has a handful of votes). The volunteer and workflow tests must not
    # steer the planner: SQLite picked the workflow index (every row: quadratic over an import)
    # or probed the (volunteer, subject) index per combination. So the (volunteer, subject) pair
    # is matched as an unindexable expression and the workflow is checked here.
    lookup = grouped & ~is_new_subject
    stored_rows: list[tuple[Any, ...]] = []
    if lookup.any():
        pairs = np.unique(pair[lookup])
        stored_rows = [
            row
            for row in Classification.objects.filter(
                _among("subject_id", np.unique(subject_pk[lookup]).tolist()),
                _pairs_among(
                    list(zip((pairs >> 32).tolist(), (pairs & 0xFFFFFFFF).tolist(), strict=True))
                ),
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
            )  # fmt: skip
            if row[0] == workflow.pk
        ]
        if stored_rows:
            stored_pairs = np.array([(v << 32) | s for _, _, v, s, *_ in stored_rows], np.int64)
            candidate |= lookup & np.isin(pair, stored_pairs)
    if not candidate.any():
        return duplicate, []

    def group_of(volunteer: int, subject: int, session: str, logged: bool) -> tuple | None:
        if logged:
            return (volunteer, subject, "")
        return (volunteer, subject, session) if session else None

    # (created_at, zooniverse id, stored pk or None, current flag, then for a new row its place
    # in the batch, for a stored one its item id)
    groups: dict[tuple[int, int, str], list[tuple[Any, ...]]] = defaultdict(list)
    for i in np.flatnonzero(candidate).tolist():
        key = group_of(int(volunteer_pk[i]), int(subject_pk[i]), session[i], bool(logged_in[i]))
        groups[key].append((created_at[i].item(), int(zooniverse_id[i]), None, False, i))
    logged = dict(zip(volunteer_pk.tolist(), logged_in.tolist(), strict=False))
    for _, pk, volunteer, subject, stored_session, when, zid, flag, _item in stored_rows:
        key = group_of(volunteer, subject, stored_session, logged.get(volunteer, False))
        if key in groups:
            naive = when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
            groups[key].append((naive, zid, pk, flag, _item))

    changes: list[tuple[int, int | None, bool]] = []
    for members in groups.values():
        if len(members) == 1:
            continue
        members.sort(key=lambda m: (m[0], m[1]))
        for position, member in enumerate(members):
            is_repeat = position > 0
            if member[2] is None:
                duplicate[member[4]] = is_repeat
            elif member[3] != is_repeat:
                changes.append((member[2], member[4], is_repeat))
    return duplicate, changes


def _counts_recompute(*, items: set[int], volunteers: set[int]) -> None:
    """Recount the touched items (votes that count: no repeats) and volunteers (all their votes).

    Recomputed from the rows rather than incremented, so a replayed or concurrent batch cannot
    drift the counters. On SQLite and PostgreSQL the rows are counted in one grouped scan
    (:func:`_counts_recount`); a correlated subquery per row took seven times as long on
    PostgreSQL, where it was a quarter of a million-row import.
    """
    vendor = connections[router.db_for_write(Classification)].vendor
    if vendor in ("sqlite", "postgresql"):
        _counts_recount(Item, items, "item_id", "NOT is_duplicate", vendor)
        _counts_recount(Volunteer, volunteers, "volunteer_id", "TRUE", vendor)
        return
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


def _counts_recount(
    model: type[Model], ids: set[int], column: str, counted: str, vendor: str
) -> None:
    """``n_classifications`` of the ``ids`` rows of ``model``: their classifications that meet
    ``counted``, 0 for none. ``column`` and ``counted`` are constants of this module."""
    if not ids:
        return
    table = model._meta.db_table
    votes = Classification._meta.db_table
    if vendor == "postgresql":
        listed, among, param = "unnest(%s::bigint[]) AS t(id)", f"{column} = ANY(%s)", sorted(ids)
    else:
        listed, among = "(SELECT value AS id FROM json_each(%s)) AS t", f"{column} IN "
        among += "(SELECT value FROM json_each(%s))"
        param = json.dumps(sorted(ids))
    sql = f"""
        UPDATE {table} SET n_classifications = c.n
        FROM (
            SELECT t.id, COALESCE(g.n, 0) AS n FROM {listed}
            LEFT JOIN (
                SELECT {column} AS id, COUNT(*) AS n FROM {votes}
                WHERE {among} AND {counted} GROUP BY {column}
            ) AS g ON g.id = t.id
        ) AS c
        WHERE {table}.id = c.id
    """
    with connections[router.db_for_write(model)].cursor() as cursor:
        cursor.execute(sql, [param, param])
