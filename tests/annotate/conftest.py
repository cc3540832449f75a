"""Fixtures shared by the tests of this folder: a configured workflow, the sync environment
(``tests.annotate.sync_env``) and the loopback web server (``tests.annotate.web_fixtures``)."""

from __future__ import annotations

import pytest

from annotate.models import Workflow
from tests.annotate.export_pool import pool  # noqa: F401 - a fixture
from tests.annotate.sync_env import env  # noqa: F401 - a fixture
from tests.annotate.web_fixtures import loopback_allowed, server  # noqa: F401 - fixtures
from tests.factories import WorkflowFactory


@pytest.fixture
def workflow(concepts) -> Workflow:
    """Workflow 7, version 3.1: a multiple-answer task over four pilot concepts
    (``WORKFLOW_ANSWERS``)."""
    return WorkflowFactory(zooniverse_id=7)
