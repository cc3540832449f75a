"""Workflow versions: which concept each answer of each version stands for.

``workflow_configure`` stores a version per row of a workflow export (or, without one, a wildcard
version ``*`` listing the active concepts), and ``workflow_versions_sync`` one per version the API
lists; answers are matched to concepts by key or label, case-insensitively (a survey's choices by
label, else by code), and answers that match nothing are kept with ``concept: null`` and reported.
Export labels describe themselves, so the ingest may fall back to ``*`` for them; API answer
indices never do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from django.db import transaction

from annotate.models import Concept, Workflow, WorkflowVersion
from annotate.services.classifications import (
    SUPPORTED_TASK_TYPES,
    WILDCARD_VERSION,
    QuarantineEntry,
)
from annotate.services.classifications.answers import AnswerMap
from annotate.services.classifications.read import version_numeric
from annotate.services.vocabulary import concept_index, label_normalise
from annotate.services.zooniverse.operation import client_or_connect, zooniverse_operation
from annotate.zooniverse.export_csv.rows import ExportFormatError
from annotate.zooniverse.export_csv.workflows import (
    WorkflowExportRow,
    parse_workflow_export,
    survey_labels,
)

if TYPE_CHECKING:
    from annotate.zooniverse.client import ZooniverseClient


class WorkflowConfigError(Exception):
    """The workflow cannot be configured from what was given."""


@dataclass(slots=True)
class WorkflowConfigResult:
    """What ``workflow_configure`` stored and what it could not map."""

    workflow: Workflow
    task_key: str
    versions: list[str] = field(default_factory=list)
    mapped: int = 0
    unmapped: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    refused_rows: list[QuarantineEntry] = field(default_factory=list)
    other_workflows: int = 0

    def summary(self) -> str:
        versions = (
            ", ".join(self.versions)
            if len(self.versions) <= 6
            else (f"{self.versions[0]} ... {self.versions[-1]}")
        )
        text = (
            f"workflow {self.workflow.zooniverse_id} task {self.task_key}: "
            f"{len(self.versions)} version(s) ({versions}), {self.mapped} answer(s) mapped, "
            f"{len(self.unmapped)} unmapped"
        )
        if self.unmapped:
            text += f" ({', '.join(sorted(set(self.unmapped))[:10])})"
        if self.unsupported:
            text += f", unsupported task type in {', '.join(self.unsupported[:10])}"
        if self.refused_rows:
            text += f", {len(self.refused_rows)} bad export row(s)"
        return text


def answers_map(
    labels: list[str], concepts: dict[str, str], choices: list[str] | None = None
) -> list[dict[str, str | None]]:
    """``[{"label", "concept"}]`` in index order; ``concept`` is None where nothing matches.

    With ``choices`` (a survey's choice codes, parallel to ``labels``) each entry also keeps its
    ``"choice"``, and a choice whose label matches no concept is matched by its code.
    """
    mapped: list[dict[str, str | None]] = []
    for i, label in enumerate(labels):
        texts = [label] + ([choices[i]] if choices else [])
        concept = None
        for text in texts:
            normal = label_normalise(text)  # the function the ingest reads export labels with
            # Labels may be written as the key with spaces ("archaeological site").
            concept = concepts.get(normal) or concepts.get(normal.replace(" ", "_"))
            if concept:
                break
        entry: dict[str, str | None] = {"label": label, "concept": concept}
        if choices:
            entry = {"label": label, "choice": choices[i], "concept": concept}
        mapped.append(entry)
    return mapped


def workflow_configure(
    *, workflow_id: int, task_key: str | None = None, export_path: Path | None = None
) -> WorkflowConfigResult:
    """Create or update the workflow and its version answer maps; safe to run again.

    ``task_key`` defaults to the workflow's first task in the export, else its stored task key.
    """
    workflow, _ = Workflow.objects.get_or_create(zooniverse_id=workflow_id)
    if export_path is None:
        return _configure_wildcard(workflow, task_key or workflow.task_key)
    rows: list[WorkflowExportRow] = []
    refused: list[QuarantineEntry] = []
    others = 0
    try:
        with export_path.open("rb") as handle:
            for row in parse_workflow_export(handle):
                if isinstance(row, QuarantineEntry):
                    refused.append(row)
                elif row.workflow_id != workflow_id:
                    others += 1
                else:
                    rows.append(row)
    except OSError as exc:
        raise WorkflowConfigError(f"{export_path}: cannot read the workflow export ({exc})")
    except ExportFormatError as exc:
        raise WorkflowConfigError(f"{export_path}: {exc}")
    if not rows:
        raise WorkflowConfigError(
            f"{export_path}: no usable row for workflow {workflow_id} "
            f"({others} row(s) of other workflows, {len(refused)} bad row(s))"
        )
    task_key = task_key or rows[-1].first_task or workflow.task_key
    offered = sorted({key for row in rows for key in row.tasks})
    if task_key not in offered:
        # A wrong task would make every classification "not asked": no label, ever.
        raise WorkflowConfigError(
            f"{export_path}: workflow {workflow_id} has no task {task_key!r} in any version; "
            f"its tasks: {', '.join(offered) or 'none'}"
        )
    result = WorkflowConfigResult(
        workflow=workflow, task_key=task_key, refused_rows=refused, other_workflows=others
    )
    concepts = concept_index()
    with transaction.atomic():
        for row in rows:
            task = row.tasks.get(task_key)
            task_type = task.type if task else "absent"
            answers = answers_map(task.answers, concepts, task.choices) if task else []
            if task_type not in SUPPORTED_TASK_TYPES:
                # Drawing, text, dropdown ... are recognised and reported, not mapped: the
                # ingest quarantines their classifications as unsupported_task_type.
                result.unsupported.append(f"{row.version}:{task_type}")
                answers = []
            WorkflowVersion.objects.update_or_create(
                workflow=workflow,
                version=row.version,
                defaults={"task_key": task_key, "task_type": task_type, "answers": answers},
            )
            result.versions.append(row.version)
            result.mapped += sum(1 for a in answers if a["concept"])
            result.unmapped += [f"{row.version}:{a['label']}" for a in answers if not a["concept"]]
        latest = rows[-1]
        workflow.task_key = task_key
        latest_task = latest.tasks.get(task_key)
        workflow.task_type = latest_task.type if latest_task else workflow.task_type
        workflow.display_name = latest.display_name or workflow.display_name
        workflow.save(update_fields=["task_key", "task_type", "display_name"])
    return result


def _configure_wildcard(workflow: Workflow, task_key: str) -> WorkflowConfigResult:
    concepts = list(Concept.objects.filter(active=True).order_by("position", "key"))
    if not concepts:
        raise WorkflowConfigError("no active concepts: run load_vocabulary first")
    answers = [{"label": c.label, "concept": c.key} for c in concepts]
    with transaction.atomic():
        WorkflowVersion.objects.update_or_create(
            workflow=workflow,
            version=WILDCARD_VERSION,
            defaults={"task_key": task_key, "task_type": workflow.task_type, "answers": answers},
        )
        workflow.task_key = task_key
        workflow.save(update_fields=["task_key"])
    return WorkflowConfigResult(
        workflow=workflow, task_key=task_key, versions=[WILDCARD_VERSION], mapped=len(answers)
    )


def workflow_subject_match_set(*, workflow_id: int, match: str) -> tuple[Workflow, int]:
    """Say how the workflow's subjects find their items, then link those that now can.

    ``match`` is ``subject_id`` (items made by ``import_subjects``), a subject metadata key
    holding the item's external id (``!europeana_id``, ``Filename``), or empty for the built-in
    keys. Returns the workflow and how many items got subjects linked.
    """
    from annotate.services.classifications.subjects import subjects_link_pending

    match = match.strip()
    max_length = Workflow._meta.get_field("subject_match").max_length
    if max_length is not None and len(match) > max_length:
        raise WorkflowConfigError(f"match key too long: {match[:40]!r}...")
    workflow, _ = Workflow.objects.get_or_create(zooniverse_id=workflow_id)
    if workflow.subject_match != match:
        workflow.subject_match = match
        workflow.save(update_fields=["subject_match"])
    return workflow, len(subjects_link_pending())


def workflow_versions_asked(pairs: list[tuple[int, str]], concepts: list[Concept]) -> np.ndarray:
    """``(n_pairs, n_concepts)`` bool: which concepts each (workflow id, version name) pair's
    question offered, from the version's answer map.

    The version is found as the ingest found it (``IngestContext.answer_map``): by name, else by
    number (``16.5`` for ``16.50``), else the workflow's wildcard version. A pair with none of
    these (votes stored before versions were configured) is taken to have offered everything,
    as every vote was read before.
    """
    asked = np.ones((len(pairs), len(concepts)), dtype=bool)
    if not pairs or not concepts:
        return asked
    column = {c.pk: j for j, c in enumerate(concepts)}
    keys = {
        key.casefold(): (pk, label)
        for pk, key, label in Concept.objects.values_list("id", "key", "label")
    }
    by_workflow: dict[int, dict[str, WorkflowVersion]] = {}
    stored = WorkflowVersion.objects.filter(workflow_id__in={w for w, _ in pairs})
    for version in stored:
        by_workflow.setdefault(version.workflow_id, {})[version.version] = version
    for row, (workflow_id, name) in enumerate(pairs):
        versions = by_workflow.get(workflow_id, {})
        found = versions.get(name)
        if found is None and (number := version_numeric(name)) is not None:
            same = [v for v in versions.values() if version_numeric(v.version) == number]
            found = same[0] if len(same) == 1 else None
        found = found or versions.get(WILDCARD_VERSION)
        if found is None:
            continue
        offered = AnswerMap.build(found, keys).by_index
        asked[row] = False
        asked[row, [column[pk] for pk in offered if pk in column]] = True
    return asked


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
