"""Fixtures shared by the classification tests of this folder."""

from __future__ import annotations

import pytest

from annotate.models import Workflow, WorkflowVersion

#: The answers of the ``workflow`` fixture's task, each the label of a pilot concept.
ANSWERS = ["painting", "drawing", "map", "photograph"]


@pytest.fixture
def workflow(concepts) -> Workflow:
    """Workflow 7, version 3.1: a multiple-answer task over four pilot concepts."""
    return workflow_create()


def workflow_create() -> Workflow:
    """The ``workflow`` fixture's workflow, for tests that make it later (concepts loaded)."""
    workflow = Workflow.objects.create(zooniverse_id=7, task_key="T0", task_type="multiple")
    WorkflowVersion.objects.create(
        workflow=workflow,
        version="3.1",
        task_type="multiple",
        answers=[{"label": label.title(), "concept": label} for label in ANSWERS],
    )
    return workflow
