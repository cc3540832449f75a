"""What every Zooniverse sync service shares: a client with a wall budget per call, the project id.

A service decorated with :func:`zooniverse_operation` takes ``client=`` or connects one from
settings; :class:`SyncConfigError` says the configuration cannot sync (no project id, no workflow).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from django.conf import settings

from annotate.models import Workflow

if TYPE_CHECKING:
    from annotate.zooniverse.client import ZooniverseClient


class SyncConfigError(Exception):
    """Sync cannot run with the configuration given (no project id, no workflow on the round)."""


def client_or_connect(client: ZooniverseClient | None) -> ZooniverseClient:
    """The client given, or one connected from settings."""
    if client is not None:
        return client
    # Imported here: the HTTP client (requests, panoptes-client) is loaded by the services that
    # call Zooniverse, not by the ones that only read workflow answer maps.
    from annotate.zooniverse.client import connect

    return connect()


P = ParamSpec("P")
R = TypeVar("R")


def zooniverse_operation(func: Callable[P, R]) -> Callable[P, R]:
    """Give a service a client (``client=`` or one from settings) and its own wall budget.

    A client passed in by a long-lived caller (the demo, a command looping over workflows) gets a
    fresh budget for this call; a nested service call shares its caller's.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        # P.kwargs values are object to mypy; every decorated service takes client=.
        client = client_or_connect(kwargs.get("client"))  # type: ignore[arg-type]  # see above
        kwargs["client"] = client
        with client.operation():
            return func(*args, **kwargs)

    return wrapper


def workflow_project_id(workflow: Workflow) -> int:
    """The workflow's Panoptes project id, else ``PANOPTES_PROJECT_ID``; SyncConfigError if none."""
    value = workflow.project_id or settings.PANOPTES_PROJECT_ID
    if not value:
        raise SyncConfigError(
            f"workflow {workflow.zooniverse_id} has no project id: set PANOPTES_PROJECT_ID"
        )
    return int(value)
