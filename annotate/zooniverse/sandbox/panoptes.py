"""The Sandbox: a stand-in Panoptes, a Store with a crowd, exports and routes around it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from .crowd import Crowd, CrowdRun
from .csv_exports import Exports
from .faults import FaultAction, FaultPlan
from .jsonapi import JsonApi
from .live_crowd import LiveCrowd, LiveCrowdStatus
from .oauth import Auth
from .records import ExportRecord
from .resources import Resources
from .routes import Router
from .store import Store
from .truth import Truth
from .volunteers import CrowdConfig
from .wire import Request, RequestLogEntry, Response


class Sandbox(Store):
    """In-memory Panoptes with one project and one workflow (multiple-answer unless told).

    Args:
        vocabulary: answer labels, in order; answer index i of task T0 is ``vocabulary[i]``.
        keys: optional concept keys parallel to ``vocabulary``, so ``#truth`` may use either.
        project_id / workflow_id: the ids to create (both 1 by default).
        retirement_count: the workflow's classification_count retirement (Panoptes default 15).
        prioritized: whether volunteers get subjects in ``#priority`` order.
        state_path: JSON file to load on start and rewrite after every change.
        clock: returns "now" as an aware UTC datetime; tests can move time.
        sleep: how the live crowd waits between classifications; None waits on its stop signal
            (so a stop is immediate). Tests pass a fake that moves their clock.
        token_ttl_s: ``expires_in`` of issued OAuth tokens.
        export_delay_s: how long a requested export stays "creating" before it is generated.
        task_type: T0's type when the workflow is created: ``multiple`` (volunteers tick any
            answers), ``single`` (one answer each: a true one with the profile's sensitivity)
            or ``survey`` (one choice per label, coded by ``choice_codes``; volunteers mark
            species as they tick answers). Exports and the API carry each in its real shape.
    """

    def __init__(
        self,
        vocabulary: Sequence[str],
        *,
        sleep: Callable[[float], None] | None = None,
        token_ttl_s: int = 7200,
        export_delay_s: float = 0.0,
        **store: Any,
    ) -> None:
        super().__init__(vocabulary, **store)
        self.faults = FaultPlan()
        self.request_log: list[RequestLogEntry] = []
        self.base_url = "http://127.0.0.1"
        # Set while the server shuts down: wakes request handlers that a hang fault holds.
        self.stopping = threading.Event()
        self.crowd = Crowd(self)
        self.live = LiveCrowd(self, self.crowd, sleep)
        self.exports = Exports(self, export_delay_s)
        self.auth = Auth(self, token_ttl_s)
        self.router = Router(
            self,
            faults=self.faults,
            request_log=self.request_log,
            crowd=self.crowd,
            live=self.live,
            exports=self.exports,
            auth=self.auth,
            resources=Resources(self, JsonApi(self), self.exports, self.auth),
        )

    # Settings tests change on a running sandbox, held by the part that reads them.

    @property
    def sleep(self) -> Callable[[float], None] | None:
        return self.live.sleep

    @sleep.setter
    def sleep(self, value: Callable[[float], None] | None) -> None:
        self.live.sleep = value

    @property
    def token_ttl_s(self) -> int:
        return self.auth.token_ttl_s

    @token_ttl_s.setter
    def token_ttl_s(self, value: int) -> None:
        self.auth.token_ttl_s = value

    @property
    def export_delay_s(self) -> float:
        return self.exports.delay_s

    @export_delay_s.setter
    def export_delay_s(self, value: float) -> None:
        self.exports.delay_s = value

    # ---------------------------------------------------------------- the crowd

    def run_volunteers(
        self,
        workflow_id: int | None = None,
        *,
        crowd: CrowdConfig | None = None,
        classifications: int | None = None,
        truth: Truth | None = None,
    ) -> CrowdRun:
        """Let a simulated crowd classify the subjects linked to a workflow (``Crowd.run``)."""
        return self.crowd.run(
            workflow_id, crowd=crowd, classifications=classifications, truth=truth
        )

    def live_crowd_start(
        self,
        *,
        per_minute: float,
        crowd: CrowdConfig | None = None,
        truth: Truth | None = None,
        workflow_id: int | None = None,
    ) -> None:
        """Start a crowd that keeps classifying in a background thread (``LiveCrowd.start``)."""
        self.live.start(per_minute=per_minute, crowd=crowd, truth=truth, workflow_id=workflow_id)

    def live_crowd_stop(self) -> None:
        """Stop the live crowd, if any; no classification is made after this returns."""
        self.live.stop()

    def live_crowd_status(self) -> LiveCrowdStatus:
        return self.live.status()

    # ---------------------------------------------------------------- exports

    def export_csv(
        self, export_type: str, owner: str = "projects", owner_id: int | None = None
    ) -> str:
        """Generate an export's CSV text now, in the format of zooniverse.md §5."""
        return self.exports.csv(export_type, owner, owner_id)

    def request_export(
        self,
        export_type: str,
        owner: str = "projects",
        owner_id: int | None = None,
        *,
        fault: FaultAction | None = None,
    ) -> ExportRecord:
        """What ``POST .../<type>_export`` does; returns the export record."""
        return self.exports.request(export_type, owner, owner_id, fault=fault)

    def describe_export(
        self, export_type: str, owner: str = "projects", owner_id: int | None = None
    ) -> ExportRecord | None:
        return self.exports.describe(export_type, owner, owner_id)

    # ---------------------------------------------------------------- HTTP

    def handle(self, request: Request, fault: FaultAction | None = None) -> Response:
        """Route one request. Never raises: errors become ``{"errors": [...]}`` responses."""
        return self.router.handle(request, fault)

    def uploaded(self, url: str) -> tuple[str, bytes] | None:
        """The content type and bytes PUT to an upload URL this sandbox handed out, or None."""
        return self.router.uploaded(url)
