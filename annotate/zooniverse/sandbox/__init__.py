"""A local stand-in for Zooniverse's Panoptes API, faithful enough for the real ``panoptes-client``.

Zooniverse cannot be reached from development machines or CI, so crowdloop's sync code is tested
against this sandbox. It speaks the Panoptes JSON-API wire format of ``docs/zooniverse.md``
(§2-§5; the routes are listed in ``routes.Router``), accepts any credentials, simulates the crowd
and lets a test script faults. No Django import here. Start it with::

    sandbox = Sandbox(["painting", "drawing", "map"], keys=["painting", "drawing", "map"])
    server, thread = serve("127.0.0.1", 0, sandbox=sandbox)  # server.endpoint: PANOPTES_ENDPOINT

or ``manage.py zooniverse_sandbox``. The package's README.md tells how to seed it, run volunteers
and a live crowd, script faults and read its state; this module re-exports the public names.
"""

from __future__ import annotations

from .crowd import CrowdRun
from .csv_exports import (
    CLASSIFICATION_EXPORT_COLUMNS,
    EXPORT_TYPES,
    SUBJECT_EXPORT_COLUMNS,
    WORKFLOW_EXPORT_COLUMNS,
)
from .faults import FAULT_KINDS, FaultAction, FaultKind, FaultPlan, FaultRule
from .formats import csv_time, iso, parse_iso
from .live_crowd import LIVE_IDLE_POLL_S, LIVE_JITTER, LiveCrowdStatus
from .oauth import TokenInfo
from .panoptes import Sandbox
from .records import (
    DEFAULT_RETIREMENT_COUNT,
    ID_BASES,
    ClassificationRecord,
    ExportRecord,
    ProjectRecord,
    SetMemberSubjectRecord,
    StatusRecord,
    StoreState,
    SubjectRecord,
    SubjectSetRecord,
    UserRecord,
    VolunteerRecord,
    WorkflowRecord,
    WorkflowVersionRecord,
)
from .server import LOOPBACK_HOSTS, SandboxServer, serve
from .store import DEFAULT_QUESTION, RETIREMENT_REASONS, Store
from .tasks import TASK_TYPES, choice_codes, task_type_of
from .truth import Truth, TruthFn
from .volunteers import CrowdConfig, eyesight, profile_from_json, profile_to_json
from .wire import (
    JSONAPI_MEDIA_TYPE,
    ApiError,
    Request,
    RequestLogEntry,
    Response,
    error_response,
    etag_for,
)

__all__ = [
    "ApiError",
    "CLASSIFICATION_EXPORT_COLUMNS",
    "ClassificationRecord",
    "CrowdConfig",
    "CrowdRun",
    "DEFAULT_QUESTION",
    "DEFAULT_RETIREMENT_COUNT",
    "EXPORT_TYPES",
    "ExportRecord",
    "FAULT_KINDS",
    "FaultAction",
    "FaultKind",
    "FaultPlan",
    "FaultRule",
    "ID_BASES",
    "JSONAPI_MEDIA_TYPE",
    "LIVE_IDLE_POLL_S",
    "LIVE_JITTER",
    "LOOPBACK_HOSTS",
    "LiveCrowdStatus",
    "ProjectRecord",
    "RETIREMENT_REASONS",
    "Request",
    "RequestLogEntry",
    "Response",
    "SUBJECT_EXPORT_COLUMNS",
    "Sandbox",
    "SandboxServer",
    "SetMemberSubjectRecord",
    "StatusRecord",
    "Store",
    "StoreState",
    "SubjectRecord",
    "SubjectSetRecord",
    "TASK_TYPES",
    "TokenInfo",
    "Truth",
    "TruthFn",
    "UserRecord",
    "VolunteerRecord",
    "WORKFLOW_EXPORT_COLUMNS",
    "WorkflowRecord",
    "WorkflowVersionRecord",
    "choice_codes",
    "csv_time",
    "error_response",
    "etag_for",
    "eyesight",
    "iso",
    "parse_iso",
    "profile_from_json",
    "profile_to_json",
    "serve",
    "task_type_of",
]
