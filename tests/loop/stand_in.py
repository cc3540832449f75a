"""The Zooniverse stand-in serving a workflow of the digits, configured in settings and active:
a fixture of the loop's staff-action tests and their browser twins."""

from __future__ import annotations

import pytest

from tests.factories import WorkflowFactory


@pytest.fixture
def stand_in(settings):
    """The Zooniverse stand-in serving a workflow of the digits, configured here and active."""
    from annotate.zooniverse.sandbox import Sandbox, serve
    from ml.mosaics import DIGIT_KEYS

    sandbox = Sandbox(list(DIGIT_KEYS), keys=list(DIGIT_KEYS))
    server, _ = serve("127.0.0.1", 0, sandbox=sandbox)
    settings.PANOPTES_ENDPOINT = server.endpoint
    settings.PANOPTES_PROJECT_ID = str(sandbox.project_id)
    settings.PANOPTES_CLIENT_ID, settings.PANOPTES_CLIENT_SECRET = "crowdloop-test", "secret"
    settings.PUBLIC_MEDIA_BASE_URL = "http://127.0.0.1:9/media"
    WorkflowFactory(zooniverse_id=sandbox.workflow_id, project_id=sandbox.project_id, version=None)
    try:
        yield sandbox
    finally:
        server.shutdown()
        server.server_close()
