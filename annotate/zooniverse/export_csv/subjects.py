"""The subject export (``docs/zooniverse.md`` §5.2) read into one :class:`SubjectRow` per row."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from annotate.zooniverse.classification_records import QuarantineEntry
from annotate.zooniverse.export_csv.rows import (
    CellError,
    id_cell,
    json_cell,
    raw_clipped,
    read_export_rows,
    required_id_cell,
    timestamp_cell,
)
from ml import safe_json

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
