"""Builders of the classification tests: Zooniverse classification export rows and files, and
classification records ingested as an export or the API would hand them over."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.core.management import call_command

from annotate.models import ImportReport, Workflow
from annotate.services.classifications import (
    ClassificationRecord,
    QuarantineEntry,
    classifications_ingest,
)
from annotate.zooniverse.export_csv.classifications import (
    CLASSIFICATION_COLUMNS,
    parse_classification_export,
)

#: When the classification ``record`` numbered 0 is made; each later one a minute after.
T0 = datetime(2024, 2, 23, 16, 0, tzinfo=UTC)


def export_row(cid: int, **overrides: Any) -> dict[str, str]:
    """A classification export row of a multiple-answer task, shaped as in zooniverse.md §5.1."""
    subject = overrides.pop("subject", 96588100 + cid % 7)
    labels = overrides.pop("labels", ["Painting", "drawing"])
    row = {
        "classification_id": str(cid),
        "user_name": f"volunteer{cid % 3}",
        "user_id": str(1000 + cid % 3),
        "user_ip": "b644753d0e3948f81dc2",
        "workflow_id": "7",
        "workflow_name": "Which labels apply?",
        "workflow_version": "3.1",
        "created_at": f"2024-02-23 16:{cid % 60:02d}:42 UTC",
        "gold_standard": "",
        "expert": "",
        "metadata": json.dumps({"source": "api", "session": f"session-{cid % 3}"}),
        "annotations": json.dumps(
            [{"task": "T0", "task_label": "Which of these labels apply?", "value": labels}]
        ),
        "subject_data": json.dumps(
            {str(subject): {"retired": None, "external_id": f"item-{subject}"}}
        ),
        "subject_ids": str(subject),
    }
    row.update(overrides)
    return row


def export_text(rows: list[dict[str, str] | str]) -> str:
    """CSV text with the export header; a str row is written verbatim (for broken rows)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CLASSIFICATION_COLUMNS)
    for row in rows:
        if isinstance(row, str):
            out.write(row if row.endswith("\n") else row + "\n")
        else:
            writer.writerow([row[c] for c in CLASSIFICATION_COLUMNS])
    return out.getvalue()


def write_export(path: Path, rows: list[dict[str, str] | str]) -> Path:
    path.write_bytes(export_text(rows).encode())
    return path


def parse(text: str | bytes, **kwargs: Any) -> list[ClassificationRecord | QuarantineEntry]:
    data = text.encode() if isinstance(text, str) else text
    return list(parse_classification_export(io.BytesIO(data), **kwargs))


def report_new() -> ImportReport:
    return ImportReport.objects.create(kind=ImportReport.Kind.CLASSIFICATIONS, source="test")


def record(cid: int, **overrides) -> ClassificationRecord:
    fields = {
        "zooniverse_id": cid,
        "workflow_id": 7,
        "workflow_version": "3.1",
        "subject_ids": [500 + cid % 5],
        "user_id": 40 + cid % 3,
        "user_name": f"volunteer{40 + cid % 3}",
        "created_at": T0 + timedelta(minutes=cid),
        "answers": ["Painting"],
        "source": "export",
    }
    fields.update(overrides)
    return ClassificationRecord(**fields)


def ingest(workflow: Workflow, records, **kwargs):
    return classifications_ingest(records=records, workflow=workflow, report=report_new(), **kwargs)


def run_import(path: Path, *args: str) -> str:
    out = io.StringIO()
    call_command("import_classifications", str(path), *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()
