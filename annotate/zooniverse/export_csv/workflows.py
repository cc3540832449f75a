"""The workflow export (``docs/zooniverse.md`` §5.3): one :class:`WorkflowExportRow` per version,
its tasks' answer labels read through the workflow's ``strings``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from annotate.zooniverse.classification_records import QuarantineEntry
from annotate.zooniverse.export_csv.rows import (
    CellError,
    json_cell,
    raw_clipped,
    read_export_rows,
    required_id_cell,
)

WORKFLOW_COLUMNS = ("workflow_id", "display_name", "version", "tasks", "strings", "minor_version")


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
