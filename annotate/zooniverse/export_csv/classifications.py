"""The classification export (``docs/zooniverse.md`` §5.1) read row by row into records.

Answers are taken from one task (``task_key``); a row of another workflow, when one is named, keeps
only its ids; a bad row becomes a quarantine entry with its line.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any

from annotate.zooniverse.classification_records import (
    ClassificationRecord,
    QuarantineEntry,
    survey_choices,
)
from annotate.zooniverse.export_csv.rows import (
    CellError,
    ExportRow,
    flag_cell,
    id_cell,
    json_cell,
    raw_clipped,
    read_export_rows,
    required_id_cell,
    timestamp_cell,
)

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
