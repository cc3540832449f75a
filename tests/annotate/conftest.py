"""Fixtures shared by the classification tests of this folder."""

from __future__ import annotations

import pytest

from annotate.models import Workflow
from tests.factories import WorkflowFactory


@pytest.fixture
def workflow(concepts) -> Workflow:
    """Workflow 7, version 3.1: a multiple-answer task over four pilot concepts
    (``WORKFLOW_ANSWERS``)."""
    return WorkflowFactory(zooniverse_id=7)
