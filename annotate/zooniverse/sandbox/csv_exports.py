"""Zooniverse's CSV exports (classifications, subjects, workflows) rendered from the store."""

from __future__ import annotations

import copy
import csv
import io
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from .faults import FaultAction
from .formats import compact_json, csv_time, iso, parse_iso
from .records import (
    ClassificationRecord,
    ExportRecord,
    WorkflowRecord,
    WorkflowVersionRecord,
    by_id,
)
from .store import Store
from .wire import ApiError

EXPORT_TYPES = ("classifications", "subjects", "workflows")

CLASSIFICATION_EXPORT_COLUMNS = (
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
SUBJECT_EXPORT_COLUMNS = (
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
WORKFLOW_EXPORT_COLUMNS = (
    "workflow_id",
    "display_name",
    "version",
    "active",
    "classifications_count",
    "pairwise",
    "grouped",
    "prioritized",
    "primary_language",
    "first_task",
    "tutorial_subject_id",
    "retired_set_member_subjects_count",
    "tasks",
    "retirement",
    "aggregation",
    "strings",
    "minor_version",
)


class Exports:
    """The three Zooniverse CSV exports: rendered from the store, requested and served as media."""

    def __init__(self, store: Store, delay_s: float = 0.0) -> None:
        self.store = store
        self.delay_s = delay_s

    def csv(self, export_type: str, owner: str = "projects", owner_id: int | None = None) -> str:
        """Generate an export's CSV text now, in the format of zooniverse.md §5."""
        with self.store.lock:
            owner_id = owner_id or (
                self.store.project_id if owner == "projects" else self.store.workflow_id
            )
            return self.render(export_type, owner, owner_id)

    def _owner_workflows(self, owner: str, owner_id: int) -> list[WorkflowRecord]:
        if owner == "workflows":
            return [self.store.workflow_record(owner_id)]
        project = self.store.project_record(owner_id)
        return [self.store.state.workflows[w] for w in project.workflow_ids]

    def render(self, export_type: str, owner: str, owner_id: int) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        workflows = self._owner_workflows(owner, owner_id)
        if export_type == "classifications":
            writer.writerow(CLASSIFICATION_EXPORT_COLUMNS)
            ids = {w.id for w in workflows}
            for c in sorted(self.store.state.classifications.values(), key=by_id):
                if c.workflow_id in ids:
                    writer.writerow(self._classification_row(c))
        elif export_type == "subjects":
            writer.writerow(SUBJECT_EXPORT_COLUMNS)
            for row in self._subject_rows(owner, owner_id, workflows):
                writer.writerow(row)
        elif export_type == "workflows":
            writer.writerow(WORKFLOW_EXPORT_COLUMNS)
            for workflow in workflows:
                for v in sorted(self.store.state.workflow_versions.values(), key=by_id):
                    if v.workflow_id == workflow.id:
                        writer.writerow(self._workflow_row(workflow, v))
        else:
            raise ApiError(404, f"Unknown export type {export_type!r}")
        return out.getvalue()

    def _classification_row(self, c: ClassificationRecord) -> list[str]:
        workflow = self.store.state.workflows[c.workflow_id]
        strings = self.store.strings_at(c.workflow_id, c.workflow_version)
        annotations = []
        for annotation in c.annotations:
            task, value = annotation["task"], annotation["value"]
            if isinstance(value, list) and value and isinstance(value[0], dict):
                annotations.append({"task": task, "value": value})  # survey: passed through
                continue

            def label(i: int, task: str = task) -> str:
                return strings.get(f"{task}.answers.{i}.label", "unknown answer label")

            annotations.append(
                {
                    "task": task,
                    "task_label": strings.get(f"{task}.question", ""),
                    # single: the label or null; multiple: the labels ticked
                    "value": (
                        [label(i) for i in value]
                        if isinstance(value, list)
                        else None
                        if value is None
                        else label(value)
                    ),
                }
            )
        subject_data: dict[str, Any] = {}
        for sid in c.subject_ids:
            subject = self.store.state.subjects.get(sid)
            status = self.store.status_record(sid, c.workflow_id)
            retired = None
            if status is not None and status.retired_at is not None:
                retired = {
                    "id": status.id,
                    "workflow_id": status.workflow_id,
                    "classifications_count": status.classifications_count,
                    "created_at": status.created_at,
                    "updated_at": status.updated_at,
                    "retired_at": status.retired_at,
                    "subject_id": status.subject_id,
                    "retirement_reason": status.retirement_reason,
                }
            subject_data[str(sid)] = {"retired": retired, **(subject.metadata if subject else {})}
        return [
            str(c.id),
            c.user_name,
            "" if c.user_id is None else str(c.user_id),
            c.user_ip,
            str(c.workflow_id),
            workflow.display_name,
            c.workflow_version,
            csv_time(c.created_at),
            "true" if c.gold_standard else "",
            "expert" if c.expert else "",
            compact_json(c.metadata),
            compact_json(annotations),
            compact_json(subject_data),
            ";".join(str(s) for s in c.subject_ids),
        ]

    def _subject_rows(
        self, owner: str, owner_id: int, workflows: list[WorkflowRecord]
    ) -> Iterable[list[str]]:
        project_id = owner_id if owner == "projects" else workflows[0].project_id
        workflow_ids = {w.id for w in workflows}
        for member in sorted(self.store.state.set_member_subjects.values(), key=by_id):
            subject = self.store.state.subjects[member.subject_id]
            if subject.project_id != project_id:
                continue
            linked = [
                w for w in self.store.workflows_of_set(member.subject_set_id) if w in workflow_ids
            ]
            if not linked and owner == "workflows":
                continue
            base = [str(subject.id), str(subject.project_id)]
            tail = [
                compact_json(subject.metadata),
                compact_json(
                    {
                        str(i): next(iter(loc.values()), "")
                        for i, loc in enumerate(subject.locations)
                    }
                ),
            ]
            times = [csv_time(subject.created_at), csv_time(subject.updated_at)]
            if not linked:
                # An unlinked set: workflow and status columns stay empty.
                yield [*base, "", str(member.subject_set_id), *tail, "", "", "", *times]
                continue
            for wid in linked:
                status = self.store.status_record(subject.id, wid)
                yield [
                    *base,
                    str(wid),
                    str(member.subject_set_id),
                    *tail,
                    str(status.classifications_count if status else 0),
                    csv_time(status.retired_at) if status else "",
                    (status.retirement_reason or "") if status else "",
                    *times,
                ]

    def _workflow_row(self, workflow: WorkflowRecord, v: WorkflowVersionRecord) -> list[str]:
        retired = sum(
            1
            for s in self.store.state.statuses.values()
            if s.workflow_id == workflow.id and s.retired_at is not None
        )
        return [
            str(workflow.id),
            workflow.display_name,
            str(v.major_number),
            _bool(workflow.active),
            str(workflow.classifications_count),
            _bool(workflow.pairwise),
            _bool(workflow.grouped),
            _bool(workflow.prioritized),
            workflow.primary_language,
            v.first_task,
            "",
            str(retired),
            compact_json(v.tasks),
            compact_json(workflow.retirement),
            "{}",
            compact_json(v.strings),
            str(v.minor_number),
        ]

    def _record_for(self, owner: str, owner_id: int, export_type: str) -> ExportRecord | None:
        for record in self.store.state.exports.values():
            if (record.owner_type, record.owner_id, record.export_type) == (
                owner,
                owner_id,
                export_type,
            ):
                return record
        return None

    def advance(self, record: ExportRecord) -> None:
        """Finish a requested export once its delay has passed (unless a fault keeps it stuck)."""
        if record.state != "creating" or record.stuck:
            return
        if record.ready_after and self.store.clock() < parse_iso(record.ready_after):
            return
        record.content = self.render(record.export_type, record.owner_type, record.owner_id)
        record.state = "ready"
        record.updated_at = self.store.now()
        self.store.save()

    def request(
        self,
        export_type: str,
        owner: str = "projects",
        owner_id: int | None = None,
        *,
        fault: FaultAction | None = None,
    ) -> ExportRecord:
        """What ``POST .../<type>_export`` does; returns the export record."""
        with self.store.lock:
            if export_type not in EXPORT_TYPES:
                raise ApiError(404, f"Unknown export type {export_type!r}")
            owner_id = owner_id or (
                self.store.project_id if owner == "projects" else self.store.workflow_id
            )
            if owner == "projects":
                self.store.project_record(owner_id)
            else:
                self.store.workflow_record(owner_id)
            now = self.store.clock()
            record = self._record_for(owner, owner_id, export_type)
            if fault is not None and fault.kind == "export_stale":
                # Panoptes-Front-End#1257: the link keeps serving an export older than the request.
                if record is None or record.content is None:
                    old = iso(now - timedelta(days=1))
                    header = self.render(export_type, owner, owner_id).split("\n", 1)[0]
                    record = record or ExportRecord(
                        self.store.next_id("media"), owner, owner_id, export_type, "ready", old, old
                    )
                    record.content = header + "\n"
                    record.updated_at = old
                record.state = "ready"
                record.stuck = False
                self.store.state.exports[record.id] = record
                self.store.save()
                return copy.deepcopy(record)
            if record is None:
                record = ExportRecord(
                    self.store.next_id("media"),
                    owner,
                    owner_id,
                    export_type,
                    "creating",
                    iso(now),
                    iso(now),
                )
                self.store.state.exports[record.id] = record
            record.state = "creating"
            record.requested_at = iso(now)
            record.updated_at = iso(now)
            record.ready_after = iso(now + timedelta(seconds=self.delay_s))
            record.stuck = fault is not None and fault.kind == "export_stuck"
            self.store.save()
            return copy.deepcopy(record)

    def describe(
        self, export_type: str, owner: str = "projects", owner_id: int | None = None
    ) -> ExportRecord | None:
        with self.store.lock:
            owner_id = owner_id or (
                self.store.project_id if owner == "projects" else self.store.workflow_id
            )
            record = self._record_for(owner, owner_id, export_type)
            if record is not None:
                self.advance(record)
            return copy.deepcopy(record)


def _bool(value: bool) -> str:
    return "true" if value else "false"
