"""The classification import's edge cases: a classification id that comes back with other
content (B5), re-imports that must change nothing, quarantine included (B1, B5), one anonymous
volunteer whichever source brings their votes (B7), and another project's votes (S4)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from annotate.models import (
    Classification,
    ImportReport,
    QuarantinedRow,
    Workflow,
    WorkflowVersion,
)
from annotate.services.classifications import classifications_ingest
from tests.annotate.test_classification_import import (
    ANSWERS,
    T0,
    ingest,
    record,
    report_new,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def workflow(concepts) -> Workflow:
    """Workflow 7, version 3.1, as in ``test_classification_import``."""
    workflow = Workflow.objects.create(zooniverse_id=7, task_key="T0", task_type="multiple")
    WorkflowVersion.objects.create(
        workflow=workflow,
        version="3.1",
        task_type="multiple",
        answers=[{"label": label.title(), "concept": label} for label in ANSWERS],
    )
    return workflow


def quarantined() -> list[tuple[int | None, str, str, str]]:
    return list(
        QuarantinedRow.objects.order_by("id").values_list("line", "record_id", "field", "reason")
    )


# --- B5: one id, one classification ---------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"subject_ids": [999]},
        {"answers": ["Drawing"]},
        {"user_id": 77, "user_name": "someone-else"},
    ],
    ids=["another subject", "another annotation", "another volunteer"],
)
def test_an_id_repeated_in_one_file_with_other_content_is_quarantined_and_the_first_kept(
    workflow, change
):
    """Reliability B5: the same id twice is one row; a second copy that says something else is
    bad input, reported with its id and line, and the first copy stays as it was."""
    first = record(1, line=2)
    report = report_new()
    counts = classifications_ingest(
        records=[first, record(2, line=3), record(1, line=4, **change)],
        workflow=workflow,
        report=report,
    )
    stored = Classification.objects.select_related("subject", "volunteer").get(zooniverse_id=1)
    assert stored.subject.zooniverse_id == first.subject_ids[0]
    assert stored.volunteer.zooniverse_user_id == first.user_id
    assert (counts.created, counts.unchanged, counts.quarantined) == (2, 0, 1)
    [(line, record_id, field, reason)] = quarantined()
    assert (line, record_id, field) == (4, "1", "classification_id")
    assert reason.startswith("classification_id_conflict") and "line 2" in reason
    assert ImportReport.objects.get(pk=report.pk).quarantined == 1


def test_an_identical_copy_in_one_file_is_one_row_and_no_quarantine(workflow):
    counts = ingest(workflow, [record(1, line=2), record(1, line=3)])
    assert (counts.created, counts.unchanged, counts.quarantined) == (1, 1, 0)
    assert not QuarantinedRow.objects.exists()


@pytest.mark.parametrize(
    "change",
    [{"subject_ids": [999]}, {"user_id": 77, "user_name": "someone-else"}],
    ids=["another subject", "another volunteer"],
)
def test_an_id_already_stored_coming_back_as_another_vote_is_quarantined(workflow, change):
    """Reliability B5 across imports and syncs: the stored row is the first copy."""
    ingest(workflow, [record(1)])
    counts = ingest(workflow, [record(1, line=7, **change), record(2)])
    assert (counts.created, counts.unchanged, counts.quarantined) == (1, 0, 1)
    [(line, record_id, field, reason)] = quarantined()
    assert (line, record_id, field) == (7, "1", "classification_id")
    assert reason.startswith("classification_id_conflict") and "stored" in reason
    stored = Classification.objects.select_related("subject").get(zooniverse_id=1)
    assert stored.subject.zooniverse_id == record(1).subject_ids[0]


def test_the_same_vote_from_the_api_after_the_export_is_unchanged_not_a_conflict(workflow):
    """An export row and the API's copy differ in how they say it (labels, indices, seconds)."""
    ingest(workflow, [record(1, answers=["Painting"], source="export")])
    counts = ingest(
        workflow,
        [record(1, answers=[0], source="api", created_at=T0 + timedelta(minutes=1, seconds=0.25))],
    )
    assert (counts.created, counts.unchanged, counts.quarantined) == (0, 1, 0)
