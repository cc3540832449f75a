"""A local stand-in for Zooniverse's Panoptes API, faithful enough for the real ``panoptes-client``.

Zooniverse cannot be reached from development machines or CI, so crowdloop's sync code is tested
against this sandbox. It speaks the Panoptes JSON-API wire format described in
``docs/zooniverse.md`` (§2-§5): plural keys and arrays, string ids, ``meta.<slug>`` paging with
``next_href`` relative to ``/api``, ``ETag`` / ``If-Match`` (428, 412), ``{"errors": [...]}``
bodies, 204 for retire/unretire/unlink, 404 under ``/api`` without the JSON-API ``Accept``
header, keyset paging of ``classifications/project`` and the three CSV exports. It accepts any
credentials.

It also simulates the crowd (careful, careless and spamming volunteers, logged-out users,
repeats, gold-standard classifications, priority selection and retirement) and lets a test script
faults (5xx sequences, 429 with ``Retry-After``, hangs, empty pages, repeated ids, stuck or stale
exports, downloads cut mid-body). No Django import here: the vocabulary comes in as answer labels.

Starting it
-----------
::

    from annotate.zooniverse.sandbox import Sandbox, serve

    sandbox = Sandbox(["painting", "drawing", "map"], keys=["painting", "drawing", "map"])
    server, thread = serve("127.0.0.1", 0, sandbox=sandbox)  # port 0: any free port
    server.endpoint            # "http://127.0.0.1:54321": PANOPTES_ENDPOINT
    sandbox.project_id         # 1
    sandbox.workflow_id        # 1 (task "T0", type "multiple", answers = the vocabulary;
                               #    Sandbox(..., task_type="single" | "survey") for the others)
    ...
    server.shutdown(); server.server_close()   # or: with serve(...)[0]: ...

``Sandbox(state_path=...)`` persists the store as JSON after every change and reloads it on start,
so a demo can restart it (``manage.py zooniverse_sandbox --state var/sandbox.json``).

Ids are strings on the wire and ints here. Each resource type starts at its own base (projects and
workflows 1, subject sets 11, subjects 100001, set-member-subjects 500001, statuses 700001,
users 5001, classifications 9000001) so a test that mixes up two kinds of id fails loudly.

Seeding without HTTP
--------------------
::

    set_id = sandbox.create_subject_set("round-1")
    sid = sandbox.create_subject(
        {"image/jpeg": "https://example.org/1.jpg"},
        metadata={"external_id": "item-1", "#priority": 1, "#truth": ["painting"]},
        subject_set_id=set_id,
    )
    sandbox.link_subject_set(sandbox.workflow_id, set_id)
    sandbox.find_subjects(external_id="item-1")      # -> [SubjectRecord]

Over HTTP a client can find a subject by metadata with ``GET /api/subjects?metadata.external_id=x``
(a sandbox extension: real Panoptes ignores that parameter), or portably by listing
``GET /api/subjects?subject_set_id=N`` and reading each subject's ``metadata``.

Simulated volunteers
--------------------
::

    run = sandbox.run_volunteers(
        sandbox.workflow_id,
        crowd=CrowdConfig(n_volunteers=20, mix={"careful": 0.6, "careless": 0.3, "spammer": 0.1},
                          anonymous_share=0.2, repeat_rate=0.05, gold_share=0.1, seed=7),
        classifications=None,          # None: until every linked subject retires or all are seen
        truth=None,                    # None: metadata["#truth"]; f(subject_id, metadata); or
    )                                  # {external_id: [labels or keys]} (else "#truth")
    run.classifications                # [ClassificationRecord], in id order
    run.count_by_profile()             # {"careful": 120, ...}
    sandbox.volunteers()               # [VolunteerRecord] with their hidden profile

Truth entries are answer labels or keys (case-insensitive). ``#priority`` (lower first) decides the
order when the workflow is prioritized; retired subjects are skipped; a subject retires when its
non-repeat classification count reaches the workflow's ``retirement`` count (default 15).
Over HTTP: ``POST /_sandbox/volunteers`` with ``{"workflow_id": 1, "classifications": 100,
"crowd": {...CrowdConfig fields...}, "truth": {external_id: [labels]}}`` (truth optional).

Object sizes, votes per subject and the hard crowd
--------------------------------------------------
A truth entry (in a mapping, ``#truth`` or from a function) may give each present object's size
instead of a list: ``{"item-1": {"three": 0.12, "zero": 0.31}}``, the side of the object as a
share of the image side (null: unknown). Volunteers whose profile has a ``half_seen_scale`` miss
small objects as ``ml.simulation.CrowdProfile`` says (``VolunteerProfile.seen_probability``);
sizes change nothing for the others, nor any draw, so a crowd without such profiles answers as
it did without sizes. ``CrowdConfig(votes_per_subject=(1, 3))`` gives each subject one to three
non-repeat classifications (drawn per workflow and subject): it retires with reason
``classification_count`` at that count, or at the workflow's retirement count if that comes
first, and the crowd moves on; the app may still retire or unretire it (one more vote then).
``CrowdConfig.for_scenario("hard", n_volunteers=40, seed=7)`` is ``ml.scenarios``' hard crowd:
``HARD_CROWD``'s profiles (careful and careless volunteers who miss small objects, 15% spammers
who tick each answer with probability one half) and ``HARD_VOTES``; over HTTP send its
``to_json()``, whose ``profiles`` and ``votes_per_subject`` ``from_json`` reads back.

Live crowd
----------
A crowd that keeps classifying in a background thread, as a long-running demo needs::

    sandbox.live_crowd_start(per_minute=6, crowd=CrowdConfig(seed=7), truth={"item-1": ["map"]})
    sandbox.live_crowd_status()   # {"running", "per_minute", "classifications", "retired",
                                  #  "last_at", "idle", "idle_reason", "open_subjects", ...}
    sandbox.live_crowd_stop()     # no classification after it returns

About ``per_minute`` classifications a minute, 60/per_minute seconds apart with up to 10 % jitter
from the crowd's seed, each one ``run_volunteers`` turn (same volunteers for the same config, same
subject choice, retirement at the workflow's count; no gold standard), on every workflow with
linked, unretired subjects in turn (or ``workflow_id=`` only). It re-reads the store before every
turn, so subjects the app retires are skipped and a newly linked set is picked up within a second
when idle; the status says why it is idle. Turns take ``sandbox.lock`` like the HTTP handlers. It
waits with ``sandbox.sleep`` when set (tests pass a fake that moves their ``clock``), else on its
stop signal. ``start`` replaces a running crowd; ``per_minute=0`` stops it; so does the server's
``shutdown()``. Over HTTP: ``POST /_sandbox/live`` with ``{"per_minute": K, "crowd": {...},
"truth": {...}, "workflow_id": 1}`` (fields left out keep the running crowd's; 0 stops),
``GET /_sandbox/live`` for the status, ``DELETE`` stops. From the shell:
``manage.py zooniverse_sandbox --volunteers-per-minute 6 --truth truth.json --crowd-seed 7``
(``--crowd hard`` for the hard scenario's crowd).

Faults
------
A fault rule matches requests by method, a regex searched in the path (``/api/...`` or
``/media/...``) and optional query parameters; it lets ``skip`` matching requests through, then
applies one action per matching request until its actions run out::

    sandbox.faults.fail(r"/classifications/project", 500, 500, skip=2)   # page 3: 500, 500, then OK
    sandbox.faults.throttle(r"/classifications/project", retry_after=7)  # one 429 + Retry-After: 7
    sandbox.faults.hang(r"/classifications/project", seconds=5)          # sleeps, then answers
    sandbox.faults.empty_page(r"/classifications/project")               # [] and next_href null
    sandbox.faults.repeat_id(r"/classifications/project", skip=1)        # page 2 repeats an id
    sandbox.faults.fail_after_commit(r"/api/subjects$", 502, method="POST")  # creates, then 502
    sandbox.faults.reset(r"/api/subjects$")                              # closes without answering
    sandbox.faults.export_stuck("classifications")                       # stays "creating"
    sandbox.faults.export_stale("classifications")                       # serves the old file
    sandbox.faults.cut_download(fraction=0.6)                            # cut at 60 %
    sandbox.faults.add(FaultRule(path=..., actions=[FaultAction("status", status=503), ...]))
    sandbox.faults.clear()

Over HTTP: ``POST /_sandbox/faults`` with ``{"method": "GET", "path": "...", "params": {},
"skip": 0, "actions": [{"kind": "status", "status": 500}, ...]}``; ``GET`` lists, ``DELETE`` clears.
Admin routes under ``/_sandbox/`` are never faulted.

Other changes, as a project owner would make them
-------------------------------------------------
``add_subjects_to_set(set_id, ids)``, ``unlink_subject_set(wf, set_id)``,
``retire(wf, ids, reason="consensus")``, ``unretire(wf, ids)``,
``set_priority(set_id, subject_id, 1.5)``, ``set_retirement(wf, count | None)`` (None: never),
``set_prioritized(wf, bool)``, ``set_vocabulary(wf, labels) -> "major.minor"`` (a new workflow
version: adding or removing answers bumps the major number, renaming bumps the minor),
``delete_subject(id)`` (its GET turns 404; votes stay), ``request_export(type, owner, owner_id,
fault=FaultAction("export_stuck"))`` / ``describe_export(...)`` (fault rules only see HTTP
requests, so the Python path takes the fault directly).
Tests can move time with ``sandbox.clock = lambda: ...`` (and the live crowd's waits with
``sandbox.sleep``) and make exports take time with
``sandbox.export_delay_s``; ``sandbox.token_ttl_s`` below 120 forces the client's refresh grant.

Reading state
-------------
``sandbox.subjects()``, ``find_subjects(**metadata)``, ``subject_sets()``, ``set_members(set_id)``,
``classifications(workflow_id=None)``, ``status(subject_id, workflow_id)``, ``workflow(wf)``,
``labels(wf, version=None)``, ``linked_subject_ids(wf)``, ``volunteers()``,
``export_csv("classifications" | "subjects" | "workflows", owner="projects", owner_id=1)``
(generated on the spot), ``request_log`` (``[RequestLogEntry]``; secrets are never logged),
``faults.rules()``; over HTTP ``GET /_sandbox/state`` and ``GET /_sandbox/requests``.
All readers return copies, so a test cannot corrupt the store by mutating what it reads.
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
from .volunteers import EYESIGHT_SIGMA, PROFILES, CrowdConfig, VolunteerProfile, eyesight
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
    "EYESIGHT_SIGMA",
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
    "PROFILES",
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
    "VolunteerProfile",
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
    "serve",
    "task_type_of",
]
