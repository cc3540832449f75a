"""What a Zooniverse source is read into, before any database lookup.

The export parsers and the API sync turn their input into :class:`ClassificationRecord` objects
(or :class:`QuarantineEntry` objects for input they refused), and a fast parser straight into
:class:`ClassificationColumns` blocks; ``annotate.services.classifications`` stores them. Plain
data: nothing here touches the database, so the adapter needs no service to build them.
"""

from __future__ import annotations

from collections import ChainMap, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np


@dataclass(slots=True)
class ClassificationRecord:
    """One classification as a source delivered it, before any database lookup.

    ``answers`` are the answers to the workflow's task: answer indices from the API (an int for a
    single-answer task is passed as a one-element list), label strings from exports; ``None`` or
    ``[]`` when nothing was ticked. ``task_shown`` is False when the classification does not hold
    the task at all (a branch of a decision tree that never asked it, a version without it): then
    it gives no vote, not even "ticked nothing". ``subject_metadata`` maps subject id to its
    metadata (the export's ``subject_data``), used to create subjects not seen before and match
    them to items.
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
    task_shown: bool = True


def survey_choices(value: Any) -> list[str] | None:
    """The choices marked in a survey task's value, in order, once each; None if it is none.

    A survey's value (export and API alike) is a list of ``{"choice", "answers", "filters"}``,
    one per species marked: ``[{"choice": "ZBR", "answers": {"HWMN": "1"}, "filters": {}}]``.
    The choice codes are its answers; the questions about each choice are not read.
    """
    if not isinstance(value, list) or not value:
        return None
    if not all(isinstance(v, dict) and isinstance(v.get("choice"), str) for v in value):
        return None
    return list(dict.fromkeys(v["choice"] for v in value))


@dataclass(slots=True)
class QuarantineEntry:
    """Input refused before it became a record: where it was, which field, and why."""

    line: int | None
    record_id: str
    field: str
    reason: str
    raw: str = ""


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
    names each row's source (``api``, ``export``); ``task_shown`` is False for rows that do not
    hold the workflow's task.
    """

    __slots__ = (
        "answer_code", "answer_lists", "created_at", "expert", "gold_standard", "line",
        "order", "quarantine", "session", "source", "subject_count", "subject_id",
        "subject_lists", "subject_metadata", "task_shown", "version_code", "versions",
        "volunteer_code", "volunteers", "workflow_id", "zooniverse_id",
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
        task_shown: np.ndarray | None = None,
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
        self.task_shown = (
            np.ones(n, bool) if task_shown is None else np.asarray(task_shown, dtype=bool)
        )

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
            columns["task_shown"].append(r.task_shown)
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
            task_shown=np.array(columns["task_shown"], bool),
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
            subject_metadata=ChainMap(*(part.subject_metadata for part in parts)),  # type: ignore[arg-type]  # ChainMap's stubs ask for mutable maps; this one is only read
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
            task_shown=bool(self.task_shown[i]),
        )


#: The per-row arrays of :class:`ClassificationColumns` that are not codes.
_PLAIN_COLUMNS = (
    "zooniverse_id", "workflow_id", "subject_id", "created_at", "gold_standard", "expert",
    "session", "source", "line", "order", "subject_count", "task_shown",
)  # fmt: skip


def _utc_naive(value: datetime) -> datetime:
    """An aware datetime as naive UTC (a naive one is taken as UTC already)."""
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)
