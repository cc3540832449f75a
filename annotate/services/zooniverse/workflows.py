"""Workflow versions read from Zooniverse (``GET /workflow_versions``) into answer maps.

A version already stored with the same answer texts is left alone, so a curator's correction
stays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from annotate.models import Workflow, WorkflowVersion
from annotate.services.classifications import SUPPORTED_TASK_TYPES
from annotate.services.zooniverse.operation import client_or_connect, zooniverse_operation
from annotate.zooniverse.export_csv.workflows import survey_labels

if TYPE_CHECKING:
    from annotate.zooniverse.client import ZooniverseClient


@dataclass
class VersionSyncResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.created)} versions created, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.unmapped)} answers unmapped"
        )


def _version_answers(
    payload: dict[str, Any], *, task_key: str, concepts: dict[str, str]
) -> tuple[str, list[dict[str, Any]]]:
    """(task type, answers in index order mapped to concept keys) of one workflow version."""
    from annotate.services.workflows import answers_map

    task = (payload.get("tasks") or {}).get(task_key)
    if not isinstance(task, dict):
        return "absent", []
    task_type = str(task.get("type") or "unknown")
    if task_type not in SUPPORTED_TASK_TYPES:
        return task_type, []
    strings = payload.get("strings") or {}
    if task_type == "survey":  # its answers are its choices, read as the workflow export's
        choices, labels = survey_labels(task_key, task, strings)
        return task_type, answers_map(labels, concepts, choices)
    labels = []
    for answer in task.get("answers") or []:
        reference = answer.get("label") if isinstance(answer, dict) else answer
        # Project Builder keeps the text in ``strings``; older workflows hold it inline.
        labels.append(str(strings.get(str(reference), reference) or ""))
    return task_type, answers_map(labels, concepts)


@zooniverse_operation
def workflow_versions_sync(
    *, workflow: Workflow, client: ZooniverseClient | None = None
) -> VersionSyncResult:
    """Fetch the workflow's versions (``GET /workflow_versions``) and store their answer maps.

    API classifications give answer indices, which mean something only for the exact version;
    this stores answer *i* of the workflow's task with the concept whose key or label matches
    its text. A version already stored with the same answer texts is left alone, so a mapping a
    curator corrected is not overwritten.
    """
    from annotate.services.workflows import concept_index

    client = client_or_connect(client)
    concepts = concept_index()
    result = VersionSyncResult()
    stored = {v.version: v for v in WorkflowVersion.objects.filter(workflow=workflow)}
    for payload in client.workflow_versions(workflow.zooniverse_id):
        version = f"{payload.get('major_number')}.{payload.get('minor_number')}"
        task_type, answers = _version_answers(
            dict(payload), task_key=workflow.task_key, concepts=concepts
        )
        result.unmapped += [f"{version}:{a['label']}" for a in answers if not a["concept"]]
        existing = stored.get(version)
        if existing is None:
            WorkflowVersion.objects.create(
                workflow=workflow,
                version=version,
                task_key=workflow.task_key,
                task_type=task_type,
                answers=answers,
            )
            result.created.append(version)
        elif [a.get("label") for a in existing.answers or []] != [a["label"] for a in answers] or (
            existing.task_type != task_type
        ):
            existing.answers, existing.task_type = answers, task_type
            existing.save(update_fields=["answers", "task_type"])
            result.updated.append(version)
        else:
            result.unchanged.append(version)
    return result
