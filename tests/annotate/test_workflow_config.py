"""configure_workflow maps each version's answers to concepts, or falls back to a wildcard."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotate.models import Concept, Workflow, WorkflowVersion
from annotate.services.zooniverse.workflows import WorkflowConfigError, workflow_configure
from tests.reference import reference_path

pytestmark = pytest.mark.django_db

WF_COLUMNS = [
    "workflow_id", "display_name", "version", "active", "classifications_count", "pairwise",
    "grouped", "prioritized", "primary_language", "first_task", "tutorial_subject_id",
    "retired_set_member_subjects_count", "tasks", "retirement", "aggregation", "strings",
    "minor_version",
]  # fmt: skip


def workflow_export(path: Path, versions: list[tuple[int, int, dict, dict]], wid: int = 7) -> Path:
    """A workflow export with one row per (version, minor, tasks, strings), as in §5.3."""
    out = io.StringIO()
    writer = csv.DictWriter(out, WF_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for major, minor, tasks, strings in versions:
        writer.writerow(
            {
                "workflow_id": wid,
                "display_name": "Which labels apply?",
                "version": major,
                "minor_version": minor,
                "active": "true",
                "first_task": "T0",
                "tasks": json.dumps(tasks),
                "strings": json.dumps(strings),
                "retirement": json.dumps({"criteria": "classification_count", "options": {}}),
                "aggregation": "{}",
            }
        )
    path.write_text(out.getvalue())
    return path


def multiple_task(labels: list[str]) -> tuple[dict, dict]:
    tasks = {
        "T0": {
            "type": "multiple",
            "question": "T0.question",
            "answers": [{"label": f"T0.answers.{i}.label"} for i in range(len(labels))],
        }
    }
    strings = {"T0.question": "Which of these labels apply?"}
    strings.update({f"T0.answers.{i}.label": label for i, label in enumerate(labels)})
    return tasks, strings


def test_each_version_of_the_export_gets_its_own_answer_map(concepts, tmp_path):
    v1 = multiple_task(["Painting", "DRAWING", "Archaeological site"])
    v2 = multiple_task(["drawing", "painting", "Sea monster"])
    path = workflow_export(tmp_path / "wf.csv", [(3, 1, *v1), (4, 2, *v2)])
    result = workflow_configure(workflow_id=7, export_path=path)
    maps = {v.version: v.answers for v in WorkflowVersion.objects.filter(workflow__zooniverse_id=7)}
    assert maps["3.1"] == [
        {"label": "Painting", "concept": "painting"},
        {"label": "DRAWING", "concept": "drawing"},
        {"label": "Archaeological site", "concept": "archaeological_site"},
    ]
    assert [a["concept"] for a in maps["4.2"]] == ["drawing", "painting", None]
    assert result.unmapped == ["4.2:Sea monster"]
    assert "5 answer(s) mapped, 1 unmapped (4.2:Sea monster)" in result.summary()
    workflow = Workflow.objects.get(zooniverse_id=7)
    assert (workflow.task_key, workflow.task_type) == ("T0", "multiple")


def test_the_reference_workflow_export_configures_six_versions(db, tmp_path):
    Concept.objects.create(key="yes", label="Yes")
    path = reference_path("zooniverse", "wf_export.csv")
    result = workflow_configure(workflow_id=10, task_key="T0", export_path=path)
    assert result.versions == ["14.52", "14.53", "14.54", "14.55", "15.55", "16.55"]
    version = WorkflowVersion.objects.get(workflow__zooniverse_id=10, version="16.55")
    assert version.task_type == "single"
    assert version.answers == [{"label": "Yes", "concept": "yes"}, {"label": "No", "concept": None}]
    assert Workflow.objects.get(zooniverse_id=10).display_name == "Superluminous Supernovae"


def test_configuring_twice_updates_in_place(concepts, tmp_path):
    path = workflow_export(tmp_path / "wf.csv", [(3, 1, *multiple_task(["painting"]))])
    workflow_configure(workflow_id=7, export_path=path)
    path = workflow_export(tmp_path / "wf.csv", [(3, 1, *multiple_task(["map"]))])
    workflow_configure(workflow_id=7, export_path=path)
    assert WorkflowVersion.objects.get().answers == [{"label": "map", "concept": "map"}]


def test_a_survey_task_maps_its_choices_by_label_then_by_code(db):
    """--task T1: each choice is an answer; "Nothing here" maps to no concept and is reported."""
    for key, label in (("zebra", "Zebra"), ("baboon", "Baboon"), ("warthog", "Warthog")):
        Concept.objects.create(key=key, label=label)
    path = Path(__file__).parent / "fixtures" / "zooniverse" / "survey_workflow.csv"
    out = io.StringIO()
    call_command(
        "configure_workflow", "--workflow-id", "9", "--task", "T1", "--workflow-export",
        str(path), stdout=out,
    )  # fmt: skip
    version = WorkflowVersion.objects.get()
    assert (version.version, version.task_key, version.task_type) == ("4.12", "T1", "survey")
    assert [(a["choice"], a["concept"]) for a in version.answers] == [
        ("ZBR", "zebra"),
        ("BBN", "baboon"),  # its label is Markdown around "Baboon"
        ("WARTHOG", "warthog"),  # its label is the Latin name: matched by code
        ("NTHNGHR", None),
    ]
    assert "3 answer(s) mapped, 1 unmapped (4.12:Nothing here)" in out.getvalue()


def test_without_an_export_a_wildcard_lists_the_active_concepts_in_order(concepts):
    Concept.objects.filter(key="toy").update(active=False)
    result = workflow_configure(workflow_id=7)
    wildcard = WorkflowVersion.objects.get(workflow__zooniverse_id=7, version="*")
    active = list(Concept.objects.filter(active=True).order_by("position", "key"))
    assert [a["concept"] for a in wildcard.answers] == [c.key for c in active]
    assert "toy" not in {a["concept"] for a in wildcard.answers}
    assert result.versions == ["*"]


def test_the_wildcard_needs_a_vocabulary(db):
    with pytest.raises(WorkflowConfigError, match="load_vocabulary"):
        workflow_configure(workflow_id=7)


def test_an_export_without_rows_for_the_workflow_is_an_error(concepts, tmp_path):
    path = workflow_export(tmp_path / "wf.csv", [(3, 1, *multiple_task(["painting"]))], wid=8)
    with pytest.raises(WorkflowConfigError, match="no usable row for workflow 7"):
        workflow_configure(workflow_id=7, export_path=path)


def test_the_command_prints_one_summary_line(concepts, tmp_path, capsys):
    path = workflow_export(tmp_path / "wf.csv", [(3, 1, *multiple_task(["painting", "x"]))])
    call_command("configure_workflow", "--workflow-id", "7", "--workflow-export", str(path))
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        "configure_workflow: workflow 7 task T0: 1 version(s) (3.1), 1 answer(s) mapped, "
        "1 unmapped (3.1:x)"
    ]


def test_the_command_fails_on_a_missing_export(concepts, tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        call_command(
            "configure_workflow", "--workflow-id", "7", "--workflow-export", str(tmp_path / "no")
        )


def test_a_task_that_no_version_of_the_workflow_has_is_refused_naming_the_tasks_it_has(
    db, concepts, tmp_path
):
    import csv
    import json

    from annotate.services.zooniverse.workflows import WorkflowConfigError, workflow_configure

    path = tmp_path / "wf.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["workflow_id", "display_name", "version", "minor_version", "active",
                         "tasks", "strings", "first_task", "retirement"])
        tasks = {"T1": {"type": "multiple", "question": "T1.question",
                        "answers": [{"label": "T1.answers.0.label"}]}}
        strings = {"T1.question": "Which?", "T1.answers.0.label": "Painting"}
        writer.writerow([44, "Which?", 3, 1, "true", json.dumps(tasks), json.dumps(strings),
                         "T1", "{}"])
    with pytest.raises(WorkflowConfigError, match=r"no task 'T0' in any version; its tasks: T1"):
        workflow_configure(workflow_id=44, task_key="T0", export_path=path)
    assert workflow_configure(workflow_id=44, task_key="T1", export_path=path).mapped == 1
