"""The store: Panoptes objects in memory, their ids and indexes, and a project owner's changes."""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from .formats import iso, utcnow
from .records import (
    DEFAULT_RETIREMENT_COUNT,
    ID_BASES,
    ClassificationRecord,
    ProjectRecord,
    SetMemberSubjectRecord,
    StatusRecord,
    StoreState,
    SubjectRecord,
    SubjectSetRecord,
    UserRecord,
    VolunteerRecord,
    WorkflowRecord,
    WorkflowVersionRecord,
    by_id,
)
from .tasks import TASK_TYPES, AnswerIndex, task_definition, task_strings, task_type_of
from .wire import ApiError, str_ids

DEFAULT_QUESTION = "Which of these labels apply?"

RETIREMENT_REASONS = (
    "classification_count",
    "flagged",
    "nothing_here",
    "consensus",
    "other",
    "human",
)


class Store:
    """The sandbox's Panoptes objects in memory: one project and one workflow to start with.

    Methods that change the store take ``lock`` and ``save()`` it unless they say otherwise:
    ``link_subjects``, ``link_sets``, ``retire_subjects``, ``unretire_subjects``, ``new_subject``,
    ``remove_subject``, ``drop_member`` and ``ensure_status`` expect the caller to hold ``lock``
    and to save. Readers return copies; ``*_record`` lookups return the stored object itself.
    """

    def __init__(
        self,
        vocabulary: Sequence[str],
        *,
        keys: Sequence[str] | None = None,
        project_id: int = 1,
        workflow_id: int = 1,
        project_name: str = "crowdloop sandbox",
        workflow_name: str = "Which labels apply?",
        question: str = DEFAULT_QUESTION,
        retirement_count: int = DEFAULT_RETIREMENT_COUNT,
        prioritized: bool = True,
        state_path: str | os.PathLike[str] | None = None,
        clock: Callable[[], datetime] | None = None,
        task_type: str = "multiple",
    ) -> None:
        if not vocabulary:
            raise ValueError("the sandbox workflow needs at least one answer label")
        if keys is not None and len(keys) != len(vocabulary):
            raise ValueError("keys must be parallel to vocabulary")
        if task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {sorted(TASK_TYPES)}, not {task_type!r}")
        self.lock = threading.RLock()
        self.clock = clock or utcnow
        self.question = question
        self.state_path = Path(state_path) if state_path else None

        if self.state_path and self.state_path.exists():
            self.state = StoreState.from_json(json.loads(self.state_path.read_text()))
        else:
            self.state = StoreState()
        self._reindex()
        with self.lock:
            if project_id not in self.state.projects:
                self._create_project(project_id, project_name)
            self.project_id = project_id
            if workflow_id not in self.state.workflows:
                self._create_workflow(
                    workflow_id,
                    project_id,
                    workflow_name,
                    list(vocabulary),
                    question,
                    retirement_count,
                    prioritized,
                    task_type,
                )
            else:
                # A restarted demo with an edited vocabulary gets a new workflow version, as an
                # edit in the Project Builder would.
                self.set_vocabulary(workflow_id, vocabulary)
            self.workflow_id = workflow_id
            self.state.answer_keys = list(keys) if keys is not None else self.state.answer_keys
            self.save()

    def next_id(self, kind: str) -> int:
        current = self.state.counters.get(kind, ID_BASES[kind] - 1)
        self.state.counters[kind] = current + 1
        return current + 1

    def _bump_counter(self, kind: str, used: int) -> None:
        self.state.counters[kind] = max(self.state.counters.get(kind, ID_BASES[kind] - 1), used)

    def now(self) -> str:
        return iso(self.clock())

    def save(self) -> None:
        if not self.state_path:
            return
        # Write then rename, so a demo killed mid-write never leaves a half file behind.
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_path.parent, prefix=".sandbox-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(self.state.to_json(), fh)
        os.replace(tmp, self.state_path)

    def _create_project(self, project_id: int, name: str) -> ProjectRecord:
        now = self.now()
        slug = "crowdloop/" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        project = ProjectRecord(project_id, name, slug, now, now)
        self.state.projects[project_id] = project
        self._bump_counter("projects", project_id)
        return project

    def _create_workflow(
        self,
        workflow_id: int,
        project_id: int,
        name: str,
        labels: list[str],
        question: str,
        retirement_count: int,
        prioritized: bool,
        task_type: str = "multiple",
    ) -> WorkflowRecord:
        now = self.now()
        workflow = WorkflowRecord(
            id=workflow_id,
            project_id=project_id,
            display_name=name,
            tasks=task_definition(labels, task_type),
            strings=task_strings(labels, question, task_type),
            retirement={"criteria": "classification_count", "options": {"count": retirement_count}},
            created_at=now,
            updated_at=now,
            prioritized=prioritized,
        )
        self.state.workflows[workflow_id] = workflow
        self._bump_counter("workflows", workflow_id)
        self.state.projects[project_id].workflow_ids.append(workflow_id)
        self._record_version(workflow)
        return workflow

    def _record_version(self, workflow: WorkflowRecord) -> None:
        version = WorkflowVersionRecord(
            id=self.next_id("workflow_versions"),
            workflow_id=workflow.id,
            major_number=workflow.version,
            minor_number=workflow.minor_version,
            tasks=copy.deepcopy(workflow.tasks),
            strings=dict(workflow.strings),
            first_task=workflow.first_task,
            created_at=self.now(),
        )
        self.state.workflow_versions[version.id] = version

    def set_vocabulary(self, workflow_id: int, labels: Sequence[str]) -> str:
        """Edit the answers; returns the new ``major.minor`` version (unchanged if no edit).

        Panoptes bumps the major version when ``tasks`` change (an answer added or removed) and
        the minor version when ``strings`` change (a label renamed).
        """
        with self.lock:
            workflow = self.workflow_record(workflow_id)
            question = workflow.strings.get("T0.question", self.question)
            task_type = task_type_of(workflow.tasks)
            tasks = task_definition(labels, task_type)
            strings = task_strings(labels, question, task_type)
            changed = False
            if tasks != workflow.tasks:
                workflow.tasks = tasks
                workflow.version += 1
                changed = True
            if strings != workflow.strings:
                workflow.strings = strings
                workflow.minor_version += 1
                changed = True
            if changed:
                workflow.updated_at = self.now()
                workflow.lock_version += 1
                self._record_version(workflow)
                self.save()
            return workflow.version_string

    def set_retirement(self, workflow_id: int, count: int | None) -> None:
        """``count=None`` means ``never_retire``."""
        with self.lock:
            workflow = self.workflow_record(workflow_id)
            if count is None:
                workflow.retirement = {"criteria": "never_retire", "options": {}}
            else:
                workflow.retirement = {
                    "criteria": "classification_count",
                    "options": {"count": count},
                }
            workflow.updated_at = self.now()
            self.save()

    def set_prioritized(self, workflow_id: int, prioritized: bool) -> None:
        with self.lock:
            self.workflow_record(workflow_id).prioritized = prioritized
            self.save()

    def workflow_record(self, workflow_id: int) -> WorkflowRecord:
        try:
            return self.state.workflows[workflow_id]
        except KeyError:
            raise ApiError(404, f"Could not find workflow with id='{workflow_id}'") from None

    def subject_set_record(self, set_id: int) -> SubjectSetRecord:
        try:
            return self.state.subject_sets[set_id]
        except KeyError:
            raise ApiError(404, f"Could not find subject_set with id='{set_id}'") from None

    def project_record(self, project_id: int) -> ProjectRecord:
        try:
            return self.state.projects[project_id]
        except KeyError:
            raise ApiError(404, f"Could not find project with id='{project_id}'") from None

    def _reindex(self) -> None:
        """Build the lookup indexes; the store itself stays plain dicts for JSON round-trips.

        Without them every upload (one membership GET per subject) and every simulated turn
        (a retirement check per candidate) would scan whole tables.
        """
        self._status_index: dict[tuple[int, int], StatusRecord] = {
            (s.subject_id, s.workflow_id): s for s in self.state.statuses.values()
        }
        self._members_by_set: dict[int, dict[int, SetMemberSubjectRecord]] = {}
        self._sets_by_subject: dict[int, set[int]] = {}
        for m in sorted(self.state.set_member_subjects.values(), key=by_id):
            self._index_member(m)
        # Classification ids only grow, so appending keeps this sorted for keyset paging.
        self.classification_ids: list[int] = sorted(self.state.classifications)

    def _index_member(self, m: SetMemberSubjectRecord) -> None:
        self._members_by_set.setdefault(m.subject_set_id, {})[m.subject_id] = m
        self._sets_by_subject.setdefault(m.subject_id, set()).add(m.subject_set_id)

    def drop_member(self, m: SetMemberSubjectRecord) -> None:
        del self.state.set_member_subjects[m.id]
        self._members_by_set.get(m.subject_set_id, {}).pop(m.subject_id, None)
        self._sets_by_subject.get(m.subject_id, set()).discard(m.subject_set_id)

    def members_of_set(self, set_id: int) -> list[SetMemberSubjectRecord]:
        return sorted(self._members_by_set.get(set_id, {}).values(), key=by_id)

    def sets_of_subject(self, subject_id: int) -> list[int]:
        return sorted(self._sets_by_subject.get(subject_id, ()))

    def workflows_of_set(self, set_id: int) -> list[int]:
        return sorted(w.id for w in self.state.workflows.values() if set_id in w.subject_set_ids)

    def status_record(self, subject_id: int, workflow_id: int) -> StatusRecord | None:
        return self._status_index.get((subject_id, workflow_id))

    def ensure_status(self, subject_id: int, workflow_id: int) -> StatusRecord:
        status = self.status_record(subject_id, workflow_id)
        if status is None:
            now = self.now()
            status = StatusRecord(
                self.next_id("subject_workflow_statuses"),
                subject_id,
                workflow_id,
                0,
                None,
                None,
                now,
                now,
            )
            self.state.statuses[status.id] = status
            self._status_index[(subject_id, workflow_id)] = status
        return status

    def labels(self, workflow_id: int | None = None, version: str | None = None) -> list[str]:
        """Answer labels of a workflow, at its current or at a given ``major.minor`` version."""
        with self.lock:
            workflow_id = workflow_id or self.workflow_id
            strings = self.strings_at(workflow_id, version)
            if task_type_of(self.workflow_record(workflow_id).tasks) == "survey":
                return [
                    v for k, v in strings.items() if re.fullmatch(r"T0\.choices\.\w+\.label", k)
                ]
            n = sum(1 for k in strings if re.fullmatch(r"T0\.answers\.\d+\.label", k))
            return [strings[f"T0.answers.{i}.label"] for i in range(n)]

    def strings_at(self, workflow_id: int, version: str | None) -> dict[str, str]:
        workflow = self.workflow_record(workflow_id)
        if version is None or version == workflow.version_string:
            return workflow.strings
        for v in self.state.workflow_versions.values():
            if v.workflow_id == workflow_id and f"{v.major_number}.{v.minor_number}" == version:
                return v.strings
        return {}

    def create_subject_set(
        self,
        display_name: str,
        *,
        project_id: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        with self.lock:
            project = self.project_record(project_id or self.project_id)
            now = self.now()
            record = SubjectSetRecord(
                self.next_id("subject_sets"),
                project.id,
                display_name,
                dict(metadata or {}),
                now,
                now,
            )
            self.state.subject_sets[record.id] = record
            project.subject_set_ids.append(record.id)
            project.updated_at = now
            self.save()
            return record.id

    def create_subject(
        self,
        *locations: dict[str, str],
        metadata: dict[str, Any] | None = None,
        subject_set_id: int | None = None,
        project_id: int | None = None,
    ) -> int:
        with self.lock:
            project = self.project_record(project_id or self.project_id)
            subject = self.new_subject(project.id, list(locations), dict(metadata or {}))
            if subject_set_id is not None:
                self.link_subjects(subject_set_id, [subject.id])
            self.save()
            return subject.id

    def new_subject(
        self, project_id: int, locations: list[dict[str, str]], metadata: dict[str, Any]
    ) -> SubjectRecord:
        now = self.now()
        subject = SubjectRecord(self.next_id("subjects"), project_id, locations, metadata, now, now)
        self.state.subjects[subject.id] = subject
        return subject

    def delete_subject(self, subject_id: int) -> None:
        """Delete a subject upstream: its GET turns 404, its classifications stay (B10)."""
        with self.lock:
            self.remove_subject(subject_id)
            self.save()

    def remove_subject(self, subject_id: int) -> None:
        if self.state.subjects.pop(subject_id, None) is None:
            raise ApiError(404, f"Could not find subject with id='{subject_id}'")
        for set_id in self.sets_of_subject(subject_id):
            member = self._members_by_set[set_id][subject_id]
            self.drop_member(member)

    def add_subjects_to_set(self, subject_set_id: int, subject_ids: Iterable[int]) -> None:
        with self.lock:
            self.link_subjects(subject_set_id, list(subject_ids))
            self.save()

    def link_subjects(self, set_id: int, subject_ids: list[int]) -> None:
        subject_set = self.subject_set_record(set_id)
        present = set(self._members_by_set.get(set_id, {}))
        missing = [sid for sid in subject_ids if sid not in self.state.subjects]
        if missing:
            raise ApiError(422, f"Could not find subjects with ids {str_ids(missing)}")
        now = self.now()
        for sid in subject_ids:
            if sid in present:
                continue
            member = SetMemberSubjectRecord(
                self.next_id("set_member_subjects"),
                set_id,
                sid,
                priority_of(self.state.subjects[sid].metadata),
                now,
                now,
            )
            self.state.set_member_subjects[member.id] = member
            self._index_member(member)
            present.add(sid)
        subject_set.updated_at = now
        subject_set.lock_version += 1

    def link_subject_set(self, workflow_id: int, subject_set_id: int) -> None:
        with self.lock:
            self.link_sets(workflow_id, [subject_set_id])
            self.save()

    def link_sets(self, workflow_id: int, set_ids: list[int]) -> None:
        workflow = self.workflow_record(workflow_id)
        for set_id in set_ids:
            subject_set = self.subject_set_record(set_id)
            if subject_set.project_id != workflow.project_id:
                raise ApiError(422, f"subject_set {set_id} belongs to another project")
            if set_id not in workflow.subject_set_ids:
                workflow.subject_set_ids.append(set_id)
        workflow.updated_at = self.now()
        workflow.lock_version += 1

    def unlink_subject_set(self, workflow_id: int, subject_set_id: int) -> None:
        with self.lock:
            workflow = self.workflow_record(workflow_id)
            if subject_set_id in workflow.subject_set_ids:
                workflow.subject_set_ids.remove(subject_set_id)
                workflow.updated_at = self.now()
                workflow.lock_version += 1
            self.save()

    def retire(self, workflow_id: int, subject_ids: Iterable[int], reason: str = "other") -> None:
        with self.lock:
            self.retire_subjects(workflow_id, list(subject_ids), reason)
            self.save()

    def retire_subjects(self, workflow_id: int, subject_ids: list[int], reason: str) -> None:
        self.workflow_record(workflow_id)
        if reason not in RETIREMENT_REASONS:
            raise ApiError(422, f"retirement_reason must be one of {', '.join(RETIREMENT_REASONS)}")
        now = self.now()
        for sid in subject_ids:
            if sid not in self.state.subjects:
                continue  # Panoptes quietly skips ids it cannot retire.
            status = self.ensure_status(sid, workflow_id)
            if status.retired_at is None:
                status.retired_at = now
                status.retirement_reason = reason
                status.updated_at = now

    def unretire(self, workflow_id: int, subject_ids: Iterable[int]) -> None:
        with self.lock:
            self.unretire_subjects(workflow_id, list(subject_ids))
            self.save()

    def unretire_subjects(self, workflow_id: int, subject_ids: list[int]) -> None:
        self.workflow_record(workflow_id)
        now = self.now()
        for sid in subject_ids:
            status = self.status_record(sid, workflow_id)
            if status is not None and status.retired_at is not None:
                status.retired_at = None
                status.retirement_reason = None
                status.updated_at = now

    def set_priority(self, subject_set_id: int, subject_id: int, priority: float | None) -> None:
        with self.lock:
            for member in self.members_of_set(subject_set_id):
                if member.subject_id == subject_id:
                    member.priority = priority
                    member.updated_at = self.now()
                    member.lock_version += 1
            self.save()

    def subjects(self) -> list[SubjectRecord]:
        with self.lock:
            return [copy.deepcopy(s) for s in sorted(self.state.subjects.values(), key=by_id)]

    def find_subjects(self, **metadata: Any) -> list[SubjectRecord]:
        """Subjects whose metadata has every given key with the given value (compared as text)."""
        with self.lock:
            return [
                copy.deepcopy(s)
                for s in sorted(self.state.subjects.values(), key=by_id)
                if all(str(s.metadata.get(k)) == str(v) for k, v in metadata.items())
            ]

    def subject_sets(self) -> list[SubjectSetRecord]:
        with self.lock:
            return [copy.deepcopy(s) for s in sorted(self.state.subject_sets.values(), key=by_id)]

    def set_members(self, subject_set_id: int) -> list[SetMemberSubjectRecord]:
        with self.lock:
            return [
                copy.deepcopy(m) for m in sorted(self.members_of_set(subject_set_id), key=by_id)
            ]

    def workflow(self, workflow_id: int | None = None) -> WorkflowRecord:
        with self.lock:
            return copy.deepcopy(self.workflow_record(workflow_id or self.workflow_id))

    def status(self, subject_id: int, workflow_id: int | None = None) -> StatusRecord | None:
        with self.lock:
            status = self.status_record(subject_id, workflow_id or self.workflow_id)
            return copy.deepcopy(status)

    def classifications(self, workflow_id: int | None = None) -> list[ClassificationRecord]:
        with self.lock:
            return [
                copy.deepcopy(c)
                for c in sorted(self.state.classifications.values(), key=by_id)
                if workflow_id is None or c.workflow_id == workflow_id
            ]

    def volunteers(self) -> list[VolunteerRecord]:
        with self.lock:
            return [copy.deepcopy(v) for v in self.state.volunteers.values()]

    def linked_subject_ids(self, workflow_id: int | None = None) -> list[int]:
        with self.lock:
            return [m.subject_id for m in self.linked_members(workflow_id or self.workflow_id)]

    def linked_members(self, workflow_id: int) -> list[SetMemberSubjectRecord]:
        """Set members of the workflow's linked sets, one per subject, in selection order."""
        workflow = self.workflow_record(workflow_id)
        seen: set[int] = set()
        members: list[SetMemberSubjectRecord] = []
        for m in sorted(self.state.set_member_subjects.values(), key=by_id):
            if m.subject_set_id in workflow.subject_set_ids and m.subject_id not in seen:
                seen.add(m.subject_id)
                members.append(m)
        if workflow.prioritized:
            # Panoptes' prioritized selector orders by set_member_subjects.priority ascending;
            # unprioritized members come last.
            members.sort(key=lambda m: (m.priority is None, m.priority or 0.0, m.id))
        return members

    def user_for_login(self, login: str) -> UserRecord:
        for user in self.state.users.values():
            if user.login == login:
                return user
        user = UserRecord(self.next_id("users"), login, login)
        self.state.users[user.id] = user
        return user

    def answer_index(self, workflow: WorkflowRecord) -> AnswerIndex:
        if task_type_of(workflow.tasks) == "survey":
            codes = workflow.tasks["T0"]["choicesOrder"]
            labels = [workflow.strings.get(f"T0.choices.{c}.label", c) for c in codes]
        else:
            n = len(workflow.tasks["T0"]["answers"])
            labels = [workflow.strings.get(f"T0.answers.{i}.label", "") for i in range(n)]
        lookup = {label.lower(): i for i, label in enumerate(labels)}
        for i, key in enumerate(self.state.answer_keys[: len(labels)]):
            lookup.setdefault(key.lower(), i)
        return AnswerIndex(labels, lookup)

    def is_retired(self, subject_id: int, workflow_id: int) -> bool:
        status = self.status_record(subject_id, workflow_id)
        return status is not None and status.retired_at is not None


def priority_of(metadata: dict[str, Any]) -> float | None:
    value = metadata.get("#priority")
    if isinstance(value, bool):
        return None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
