"""Streaming parsers for Zooniverse's classification, subject and workflow export CSVs.

Each parser reads a binary file handle one physical line at a time through the ``csv`` module, so
memory stays flat whatever the file size, and yields either a parsed row or a
:class:`QuarantineEntry` naming the physical line the bad row starts on, the field and the
reason. A bad row never stops the rows after it. Formats: ``docs/zooniverse.md`` §5.

Line numbers count physical lines from 1 (the header), so a quoted cell spanning several lines
moves the next row's number on by as many lines. A broken quote can make the csv module swallow
the lines after it; when a row comes out malformed its first line is refused and the lines it
swallowed are parsed again, so the good rows behind it still arrive.
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from annotate.zooniverse.records import ClassificationRecord, QuarantineEntry, survey_choices
from ml import safe_json

CLASSIFICATION_COLUMNS = (
    "classification_id",
    "user_name",
    "user_id",
    "user_ip",
    "workflow_id",
    "workflow_name",
    "workflow_version",
    "created_at",
    "gold_standard",
    "expert",
    "metadata",
    "annotations",
    "subject_data",
    "subject_ids",
)
SUBJECT_COLUMNS = (
    "subject_id",
    "project_id",
    "workflow_id",
    "subject_set_id",
    "metadata",
    "locations",
    "classifications_count",
    "retired_at",
    "retirement_reason",
    "created_at",
    "updated_at",
)
WORKFLOW_COLUMNS = ("workflow_id", "display_name", "version", "tasks", "strings", "minor_version")

#: Longest raw text kept with a refused row.
RAW_LIMIT = 10_000


class ExportFormatError(ValueError):
    """The file as a whole is not the expected export (no header, required columns missing)."""


class CellError(Exception):
    """One field of one row is wrong; becomes a quarantine entry."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field_name
        self.reason = reason


@dataclass(slots=True)
class ExportRow:
    """One well-formed CSV row: the physical line it starts on, its cells by column, its lines."""

    line: int
    cells: dict[str, str]
    lines: list[str]

    @property
    def raw(self) -> str:
        return "".join(self.lines)


class _PhysicalLines:
    """Physical lines of a binary file, decoded one by one, with push-back for resynchronising.

    Decoding per line (not per file) lets one badly encoded line be refused on its own. The
    lines handed out since the last :meth:`take` are kept (one row's worth), so a bad row can be
    shown and the lines it swallowed re-read.
    """

    def __init__(self, handle: IO[bytes], *, first_line: int = 1) -> None:
        self._readline = handle.readline
        self._pending: deque[tuple[int, str]] = deque()
        self._first_line = first_line
        self._count = first_line - 1
        self.first = 0  # the number of the first line in ``texts``
        self.texts: list[str] = []
        # Line numbers that did not decode or hold a NUL: rare, so a set beats a flag per line.
        self.bad_utf8: set[int] = set()
        self.nul: set[int] = set()

    def __iter__(self) -> _PhysicalLines:
        return self

    def __next__(self) -> str:
        if self._pending:
            number, text = self._pending.popleft()
        else:
            data = self._readline()
            if not data:
                raise StopIteration
            self._count += 1
            number = self._count
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = data.decode("utf-8", "replace")
                self.bad_utf8.add(number)
            if "\x00" in text:
                self.nul.add(number)
            if number == self._first_line:
                text = text.removeprefix("\ufeff")
        if not self.texts:
            self.first = number
        self.texts.append(text)
        return text

    def take(self) -> tuple[int, list[str]]:
        """The first line number and the lines of the row just read; starts the next row."""
        taken, self.texts = self.texts, []
        return self.first, taken

    def push_back(self, first: int, texts: list[str]) -> None:
        self._pending.extendleft(reversed(list(enumerate(texts, start=first))))

    def flagged(self, first: int, count: int, numbers: set[int]) -> bool:
        return bool(numbers) and any(n in numbers for n in range(first, first + count))


def raw_clipped(text: str) -> str:
    return text[:RAW_LIMIT]


def read_export_rows(
    handle: IO[bytes], *, required: Sequence[str], first_line: int = 1
) -> Iterator[ExportRow | QuarantineEntry]:
    """Rows of a CSV export as dicts, or quarantine entries for rows that are not CSV.

    Raises :class:`ExportFormatError` when the header lacks a required column. ``first_line``
    numbers the header line (a block of a larger file is read behind a copy of its header).
    """
    lines = _PhysicalLines(handle, first_line=first_line)
    # strict: a stray quote is an error here rather than a silently merged field.
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ExportFormatError("the file is empty: no header row")
    except csv.Error as exc:
        raise ExportFormatError(f"line 1: the header is not CSV ({exc})")
    lines.take()
    header = header_checked(header, required)
    width = len(header)
    # The record id is the first required column's cell (not the first cell: an index may lead).
    id_at = header.index(required[0]) if required else 0

    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            number, texts = lines.take()
            if not texts:  # the error came with no line read: nothing to resume from
                break
            yield QuarantineEntry(number, "", "row", f"malformed_csv: {exc}", raw_clipped(texts[0]))
            lines.push_back(number + 1, texts[1:])
            continue
        number, texts = lines.take()
        if not cells:  # a blank line
            continue
        if len(cells) != width:
            reason = f"column_count: {len(cells)} columns, expected {width}"
            cell = cells[id_at] if id_at < len(cells) else ""
            record_id = cell if cell.isdigit() else ""
            yield QuarantineEntry(number, record_id, "row", reason, raw_clipped(texts[0]))
            # The row may have swallowed good rows behind a broken quote: read them again.
            lines.push_back(number + 1, texts[1:])
            continue
        record_id = cells[id_at] if cells[id_at].isdigit() else ""
        if lines.flagged(number, len(texts), lines.bad_utf8):
            yield QuarantineEntry(
                number, record_id, "row", "invalid_utf8", raw_clipped("".join(texts))
            )
            continue
        if lines.flagged(number, len(texts), lines.nul):
            yield QuarantineEntry(number, record_id, "row", "nul_byte", raw_clipped("".join(texts)))
            continue
        yield ExportRow(number, dict(zip(header, cells, strict=True)), texts)


#: How a leading column of row numbers is named: pandas writes an empty name or ``Unnamed: 0``,
#: R's ``write.csv`` writes ``""``. It is no field of the export and is ignored.
INDEX_COLUMN_NAMES = frozenset({"", "Unnamed: 0"})

#: Cells that mean "no value": Panoptes leaves them blank; R writes ``NA``, pandas ``NaN`` (or a
#: blank), JSON tools ``null``. Compared case-folded and stripped.
MISSING = frozenset({"", "na", "nan", "null", "none", "<na>"})

#: Flag cells that read as false; any other text (``true``, ``expert``, a user name) is true.
FALSE_FLAGS = MISSING | {"false", "f", "0", "0.0", "no"}


def header_checked(header: list[str], required: Sequence[str]) -> list[str]:
    header = [name.strip() for name in header]
    if header and header[0] in INDEX_COLUMN_NAMES and required and header[0] != required[0]:
        header[0] = "\x00index"  # a name no export column has: the cells are never read
    missing = [name for name in required if name not in header]
    if missing:
        raise ExportFormatError(f"line 1: the header lacks column(s) {', '.join(missing)}")
    return header


# --- cell parsers: each raises CellError naming the field -----------------------------------------


def id_cell(cells: dict[str, str], name: str, *, optional: bool = False) -> int | None:
    text = cells.get(name, "").strip()
    if optional:
        if text.lower() in MISSING:
            return None
        # pandas writes an integer column with blanks in it as floats: "1234.0".
        if text.endswith(".0") and text[:-2].isdigit():
            text = text[:-2]
    if not text.isdigit():  # also refuses "-1", "1.5", "abc" and "" when required
        raise CellError(name, f"not_an_id: {text[:40]!r}")
    return int(text)


def required_id_cell(cells: dict[str, str], name: str) -> int:
    value = id_cell(cells, name)
    assert value is not None
    return value


def json_cell(cells: dict[str, str], name: str, kind: type) -> Any:
    text = cells.get(name, "")
    if not text or text.isspace():  # not strip(): that copies a kilobyte of JSON per cell
        return kind()
    try:
        # orjson: about five times faster than json on the kilobyte metadata cell of every row,
        # and stricter (NaN and Infinity are not JSON). Its errors are ValueErrors too.
        value = orjson.loads(text)
    except ValueError as exc:
        raise CellError(name, f"invalid_json: {exc}")
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise CellError(name, f"invalid_json: expected a JSON {kind.__name__}")
    return value


def parse_timestamp(text: str) -> datetime:
    """``2024-02-23 16:17:42 UTC`` (exports) or ISO 8601 (API), as an aware UTC datetime."""
    text = text.strip()
    if text.endswith(" UTC"):
        text = text[:-4]
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def timestamp_cell(cells: dict[str, str], name: str, *, optional: bool = False) -> datetime | None:
    text = cells.get(name, "").strip()
    if not text and optional:
        return None
    try:
        return parse_timestamp(text)
    except ValueError:
        raise CellError(name, f"not_a_timestamp: {text[:40]!r}")


def flag_cell(text: str) -> bool:
    """A flag cell: true unless blank or a false/missing spelling (``expert`` holds a user name)."""
    return text.strip().lower() not in FALSE_FLAGS


# --- classification export (§5.1) --------------------------------------------------------------


def task_answers(annotations: list[Any], task_key: str) -> list[int] | list[str] | None:
    """The answers given to ``task_key``: labels (or indices in old exports), a survey's choice
    codes; ``[]`` if none (a single-answer task's ``null``: the ingest reads it as skipped).

    None when no annotation is of ``task_key``: the volunteer was never asked it (another branch
    of a decision tree, a version without the task), which is no answer at all.
    """
    for annotation in annotations:
        if not isinstance(annotation, dict) or annotation.get("task") != task_key:
            continue
        value = annotation.get("value")
        if value is None:
            return []
        if isinstance(value, str):  # single-answer task
            return [value]
        if isinstance(value, int) and not isinstance(value, bool):  # single, older exports
            return [value]
        if isinstance(value, list):
            if all(isinstance(v, str) for v in value):
                return list(value)
            if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                return list(value)
            choices = survey_choices(value)
            if choices is not None:
                return choices
            if value and all(isinstance(v, dict) and "task" in v for v in value):
                raise CellError("annotations", "unsupported_task_type:combo")
        raise CellError("annotations", f"unsupported_task_type:{_guess_type(value)}")
    return None


def _guess_type(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        if {"x", "y"} & set(value[0]) or "tool" in value[0]:
            return "drawing"
    if isinstance(value, dict):
        return "dropdown"
    return "unknown"


#: How many distinct ``subject_data`` cells :func:`parse_classification_export` keeps parsed.
SUBJECT_CACHE_SIZE = 50_000


def classification_from_row(
    row: ExportRow,
    *,
    task_key: str,
    subjects: dict[str, dict[int, dict[str, Any]]] | None = None,
    workflow_id: int | None = None,
) -> ClassificationRecord:
    """One classification export row as a record; raises CellError on the first bad field.

    ``subjects`` caches parsed ``subject_data`` cells by their text: a subject's cell repeats on
    each of its classifications, so most rows skip the parse and share one (read-only) mapping.
    With ``workflow_id``, a row of another workflow (a project-wide export) is not read further:
    it comes back as :func:`other_workflow_record`, for the ingest to count and skip.
    """
    cells = row.cells
    workflow_text = cells["workflow_id"].strip()
    if workflow_id is not None and workflow_text.isdigit() and int(workflow_text) != workflow_id:
        return other_workflow_record(row, int(workflow_text))
    zooniverse_id = required_id_cell(cells, "classification_id")
    workflow_id = required_id_cell(cells, "workflow_id")
    version = cells["workflow_version"].strip()
    if not version:
        raise CellError("workflow_version", "missing_workflow_version")
    created_at = timestamp_cell(cells, "created_at")
    assert created_at is not None
    subject_text = cells["subject_ids"].strip()
    parts = [p.strip() for p in subject_text.split(";") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise CellError("subject_ids", f"not_an_id: {subject_text[:40]!r}")
    metadata = json_cell(cells, "metadata", dict)
    annotations = json_cell(cells, "annotations", list)
    subject_data_text = cells["subject_data"]
    subject_metadata = subjects.get(subject_data_text) if subjects is not None else None
    if subject_metadata is None:
        subject_metadata = {}
        for key, value in json_cell(cells, "subject_data", dict).items():
            if str(key).isdigit() and isinstance(value, dict):
                subject_metadata[int(key)] = value
        if subjects is not None:
            if len(subjects) >= SUBJECT_CACHE_SIZE:
                subjects.clear()
            subjects[subject_data_text] = subject_metadata
    user_name = cells["user_name"].strip()
    session = metadata.get("session")
    answers = task_answers(annotations, task_key)
    return ClassificationRecord(
        zooniverse_id=zooniverse_id,
        workflow_id=workflow_id,
        workflow_version=version,
        subject_ids=[int(p) for p in parts],
        user_id=id_cell(cells, "user_id", optional=True),
        user_name=user_name,
        created_at=created_at,
        answers=answers if answers is not None else [],
        gold_standard=flag_cell(cells["gold_standard"]),
        expert=flag_cell(cells["expert"]),
        subject_metadata=subject_metadata,
        session=session if isinstance(session, str) else "",
        source="export",
        line=row.line,
        task_shown=answers is not None,
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def other_workflow_record(row: ExportRow, workflow_id: int) -> ClassificationRecord:
    """A row of another workflow than the one imported: only its ids are kept (the ingest counts
    and skips it), so that its tasks, which may be of any type, are never read or refused."""
    text = row.cells["classification_id"].strip()
    return ClassificationRecord(
        zooniverse_id=int(text) if text.isdigit() and len(text) <= 18 else 0,
        workflow_id=workflow_id,
        workflow_version="",
        subject_ids=[],
        user_id=None,
        user_name="",
        created_at=_EPOCH,
        answers=[],
        source="export",
        line=row.line,
        task_shown=False,
    )


def parse_classification_export(
    handle: IO[bytes], *, task_key: str = "T0", first_line: int = 1, workflow_id: int | None = None
) -> Iterator[ClassificationRecord | QuarantineEntry]:
    """Records of a classification export, answers taken from task ``task_key``.

    With ``workflow_id``, rows of other workflows come back as :func:`other_workflow_record`.
    """
    subjects: dict[str, dict[int, dict[str, Any]]] = {}
    rows = read_export_rows(handle, required=CLASSIFICATION_COLUMNS, first_line=first_line)
    for row in rows:
        if isinstance(row, QuarantineEntry):
            yield row
            continue
        try:
            yield classification_from_row(
                row, task_key=task_key, subjects=subjects, workflow_id=workflow_id
            )
        except CellError as bad:
            record_id = row.cells["classification_id"].strip()
            yield QuarantineEntry(row.line, record_id, bad.field, bad.reason, raw_clipped(row.raw))


def export_tasks_seen(
    handle: IO[bytes], *, task_key: str, workflow_id: int | None = None, rows: int = 1_000
) -> tuple[int, int, dict[str, int]]:
    """A look at the first ``rows`` rows (of ``workflow_id``): how many were read, how many hold
    ``task_key``, and how many hold each task key, so an import can warn about a wrong task."""
    read = holding = 0
    seen: dict[str, int] = {}
    for row in read_export_rows(handle, required=CLASSIFICATION_COLUMNS):
        if read >= rows:
            break
        if isinstance(row, QuarantineEntry):
            continue
        workflow_text = row.cells["workflow_id"].strip()
        if workflow_id is not None and workflow_text != str(workflow_id):
            continue
        try:
            annotations = json_cell(row.cells, "annotations", list)
        except CellError:
            continue
        read += 1
        keys = {str(a.get("task")) for a in annotations if isinstance(a, dict) and "task" in a}
        holding += task_key in keys
        for key in keys:
            seen[key] = seen.get(key, 0) + 1
    return read, holding, seen


# --- subject export (§5.2) ---------------------------------------------------------------------


@dataclass(slots=True)
class SubjectRow:
    """One (subject, workflow, subject set) row of a subject export."""

    line: int
    subject_id: int
    project_id: int | None
    workflow_id: int | None
    subject_set_id: int | None
    metadata: dict[str, Any]
    locations: list[str]
    classifications_count: int | None
    retired_at: datetime | None
    retirement_reason: str
    created_at: datetime | None
    updated_at: datetime | None


def _locations(cells: dict[str, str]) -> list[str]:
    """``{"0": url, "1": url}`` in index order (older exports write a list of {mime: url})."""
    text = cells.get("locations", "")
    if not text.strip():
        return []
    try:
        value = safe_json.loads(text)  # deep nesting is a ValueError here, not a RecursionError
    except ValueError as exc:
        raise CellError("locations", f"invalid_json: {exc}")
    if isinstance(value, dict):
        keys = sorted(
            value, key=lambda k: (not str(k).isdigit(), int(k) if str(k).isdigit() else 0)
        )
        return [str(value[k]) for k in keys]
    if isinstance(value, list):
        urls: list[str] = []
        for entry in value:
            if isinstance(entry, dict):
                urls.extend(str(v) for v in entry.values())
            else:
                urls.append(str(entry))
        return urls
    raise CellError("locations", "invalid_json: expected an object keyed by index")


def parse_subject_export(handle: IO[bytes]) -> Iterator[SubjectRow | QuarantineEntry]:
    """Rows of a subject export; workflow and status columns are ``None`` for unlinked sets."""
    for row in read_export_rows(handle, required=SUBJECT_COLUMNS):
        if isinstance(row, QuarantineEntry):
            yield row
            continue
        cells = row.cells
        try:
            yield SubjectRow(
                line=row.line,
                subject_id=required_id_cell(cells, "subject_id"),
                project_id=id_cell(cells, "project_id", optional=True),
                workflow_id=id_cell(cells, "workflow_id", optional=True),
                subject_set_id=id_cell(cells, "subject_set_id", optional=True),
                metadata=json_cell(cells, "metadata", dict),
                locations=_locations(cells),
                classifications_count=id_cell(cells, "classifications_count", optional=True),
                retired_at=timestamp_cell(cells, "retired_at", optional=True),
                retirement_reason=cells["retirement_reason"].strip(),
                created_at=timestamp_cell(cells, "created_at", optional=True),
                updated_at=timestamp_cell(cells, "updated_at", optional=True),
            )
        except CellError as bad:
            record_id = cells["subject_id"].strip()
            yield QuarantineEntry(row.line, record_id, bad.field, bad.reason, raw_clipped(row.raw))


# --- workflow export (§5.3) --------------------------------------------------------------------


@dataclass(slots=True)
class TaskDefinition:
    """One task of one workflow version: its type, question and answer labels by index."""

    key: str
    type: str
    question: str
    answers: list[str] = field(default_factory=list)
    #: A survey's choice codes (``"ZBR"``), parallel to ``answers`` (their labels); else empty.
    choices: list[str] = field(default_factory=list)


@dataclass(slots=True)
class WorkflowExportRow:
    """One workflow version (``major.minor``) of a workflow export."""

    line: int
    workflow_id: int
    display_name: str
    version: str
    first_task: str
    tasks: dict[str, TaskDefinition]
    retirement: dict[str, Any]


def _text(strings: dict[str, Any], reference: Any) -> str:
    """Project Builder keeps text in ``strings``; older workflows hold it inline."""
    if reference is None:
        return ""
    reference = str(reference)
    value = strings.get(reference, reference)
    return str(value) if value is not None else ""


def _tasks(raw_tasks: dict[str, Any], strings: dict[str, Any]) -> dict[str, TaskDefinition]:
    tasks: dict[str, TaskDefinition] = {}
    for key, task in raw_tasks.items():
        if not isinstance(task, dict):
            raise CellError("tasks", f"invalid_task: {key!r} is not an object")
        if task.get("type") == "survey":
            codes, labels = survey_labels(str(key), task, strings)
        else:
            answers = task.get("answers") or []
            if not isinstance(answers, list):
                raise CellError("tasks", f"invalid_task: {key!r} answers is not a list")
            codes = []
            labels = [
                _text(strings, answer.get("label")) if isinstance(answer, dict) else str(answer)
                for answer in answers
            ]
        tasks[str(key)] = TaskDefinition(
            key=str(key),
            type=str(task.get("type") or "unknown"),
            question=_text(strings, task.get("question") or task.get("instruction")),
            answers=labels,
            choices=codes,
        )
    return tasks


def survey_labels(
    key: str, task: dict[str, Any], strings: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """A survey's choice codes and labels, in ``choicesOrder`` (then any choice it leaves out).

    ``choices`` maps each code to ``{"label": "T1.choices.ZBR.label", ...}`` (Project Builder)
    or to an inline label (older workflows); a ``choices`` that is not an object counts as none.
    """
    choices = task.get("choices") or {}
    if not isinstance(choices, dict):
        choices = {}
    order = task.get("choicesOrder") or []
    codes = [str(c) for c in order if str(c) in choices] if isinstance(order, list) else []
    codes += [str(c) for c in choices if str(c) not in codes]
    labels = []
    for code in codes:
        choice = choices[code]
        label = choice.get("label") if isinstance(choice, dict) else choice
        labels.append(_text(strings, label) or code)
    return codes, labels


def parse_workflow_export(handle: IO[bytes]) -> Iterator[WorkflowExportRow | QuarantineEntry]:
    """Workflow versions of a workflow export, one per row (``version.minor_version``)."""
    for row in read_export_rows(handle, required=WORKFLOW_COLUMNS):
        if isinstance(row, QuarantineEntry):
            yield row
            continue
        cells = row.cells
        try:
            major = required_id_cell(cells, "version")
            minor = required_id_cell(cells, "minor_version")
            strings = json_cell(cells, "strings", dict)
            yield WorkflowExportRow(
                line=row.line,
                workflow_id=required_id_cell(cells, "workflow_id"),
                display_name=cells["display_name"].strip(),
                version=f"{major}.{minor}",
                first_task=cells.get("first_task", "").strip(),
                tasks=_tasks(json_cell(cells, "tasks", dict), strings),
                retirement=json_cell(cells, "retirement", dict) if "retirement" in cells else {},
            )
        except CellError as bad:
            record_id = cells["workflow_id"].strip()
            yield QuarantineEntry(row.line, record_id, bad.field, bad.reason, raw_clipped(row.raw))
