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

import bisect
import copy
import csv
import hashlib
import io
import json
import math
import os
import random
import re
import secrets
import socket
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import parse_qs, urlencode, urlsplit

from .faults import FaultAction, FaultPlan, FaultRule, _action
from .formats import _compact, _utcnow, csv_time, iso, parse_iso
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
    _by_id,
)
from .tasks import TASK_TYPES, AnswerIndex, _api_value, choice_codes, task_type_of
from .truth import Truth, TruthFn, _truth_fn, _truth_indices, _truth_sizes
from .volunteers import PROFILES, CrowdConfig, VolunteerProfile, eyesight
from .wire import (
    JSONAPI_MEDIA_TYPE,
    ApiError,
    Request,
    RequestLogEntry,
    Response,
    _id_list,
    _int,
    _json_response,
    _no_content,
    _str_ids,
    error_response,
    etag_for,
)

DEFAULT_QUESTION = "Which of these labels apply?"

RETIREMENT_REASONS = (
    "classification_count",
    "flagged",
    "nothing_here",
    "consensus",
    "other",
    "human",
)
EXPORT_TYPES = ("classifications", "subjects", "workflows")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
LIVE_JITTER = 0.1  # a live crowd's gaps vary by up to 10 % either side of 60 / per_minute
LIVE_IDLE_POLL_S = 1.0  # how often an idle live crowd looks for newly linked subjects




class TokenInfo(TypedDict):
    user_id: int | None
    refresh_token: str


@dataclass
class CrowdRun:
    """What one ``run_volunteers`` call produced."""

    classifications: list[ClassificationRecord]
    volunteers: list[VolunteerRecord]
    retired_subject_ids: list[int]

    def count_by_profile(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for c in self.classifications:
            counts[c.profile] = counts.get(c.profile, 0) + 1
        return counts

    def subjects_by_votes(self) -> dict[int, int]:
        """Votes a subject got in this run -> number of such subjects; a vote is a volunteer's
        classification that counts towards retirement (no repeat, no gold standard)."""
        per_subject: dict[int, int] = {}
        for c in self.classifications:
            if not c.gold_standard and not c.metadata["subject_selection_state"]["already_seen"]:
                per_subject[c.subject_ids[0]] = per_subject.get(c.subject_ids[0], 0) + 1
        counts: dict[int, int] = {}
        for n in per_subject.values():
            counts[n] = counts.get(n, 0) + 1
        return dict(sorted(counts.items()))

    def summary(self) -> dict[str, Any]:
        return {
            "classifications": len(self.classifications),
            "classification_ids": [c.id for c in self.classifications],
            "by_profile": self.count_by_profile(),
            "volunteers": len(self.volunteers),
            "retired_subject_ids": self.retired_subject_ids,
            "subjects_by_votes": {str(n): k for n, k in self.subjects_by_votes().items()},
        }


@dataclass
class _CrowdTurns:
    """What a crowd carries from one turn to the next on one workflow.

    ``run_volunteers`` builds one and loops over it; the live crowd keeps one per workflow and
    refreshes ``open_ids``, ``seen`` and ``active`` before each turn, since the store changes
    between its turns.
    """

    workflow: WorkflowRecord
    crowd: CrowdConfig
    rng: random.Random
    truth: TruthFn
    answer_index: AnswerIndex
    volunteers: list[VolunteerRecord]
    active: list[VolunteerRecord]  # volunteers who may still have something to see
    seen: dict[str, set[int]]  # volunteer name -> subject ids they classified on this workflow
    open_ids: list[int] = field(default_factory=list)  # unretired linked subjects, in order
    seen_upto: int = 0  # how far into the sorted classification ids ``seen`` has read


class LiveCrowdStatus(TypedDict):
    """``Sandbox.live_crowd_status()`` and ``GET /_sandbox/live``."""

    running: bool
    per_minute: float  # 0 when stopped
    workflow_id: int | None  # None: every workflow with open subjects
    classifications: int  # made by live crowds since this sandbox started
    retired: int  # subjects those classifications retired
    last_at: str | None  # created_at of the latest live classification
    started_at: str | None
    idle: bool
    idle_reason: str | None  # why the last turn made nothing
    open_subjects: int  # linked, unretired subjects at the last turn
    volunteers: int
    error: str | None  # the last error a turn raised (the crowd keeps going)


@dataclass
class _LiveCrowd:
    per_minute: float
    crowd: CrowdConfig
    truth: TruthFn
    workflow_id: int | None
    volunteers: list[VolunteerRecord]
    rng: random.Random  # the turns' draws, as in run_volunteers
    jitter: random.Random  # the spacing, kept apart so a rate change does not alter the answers
    started_at: str
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    turns: dict[int, _CrowdTurns] = field(default_factory=dict)  # workflow id -> its turns
    cursor: int = 0  # round-robin position over workflows
    idle_reason: str | None = None
    open_subjects: int = 0
    error: str | None = None



# --------------------------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------------------------


class Sandbox:
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
        keys: Sequence[str] | None = None,
        project_id: int = 1,
        workflow_id: int = 1,
        project_name: str = "crowdloop sandbox",
        workflow_name: str = "Which labels apply?",
        question: str = DEFAULT_QUESTION,
        retirement_count: int = DEFAULT_RETIREMENT_COUNT,
        prioritized: bool = True,
        state_path: str | os.PathLike[str] | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] | None = None,
        token_ttl_s: int = 7200,
        export_delay_s: float = 0.0,
        task_type: str = "multiple",
    ) -> None:
        if not vocabulary:
            raise ValueError("the sandbox workflow needs at least one answer label")
        if keys is not None and len(keys) != len(vocabulary):
            raise ValueError("keys must be parallel to vocabulary")
        if task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {sorted(TASK_TYPES)}, not {task_type!r}")
        self.lock = threading.RLock()
        self.faults = FaultPlan()
        self.request_log: list[RequestLogEntry] = []
        self.clock = clock or _utcnow
        self.sleep = sleep
        self.token_ttl_s = token_ttl_s
        self.export_delay_s = export_delay_s
        self.question = question
        self.base_url = "http://127.0.0.1"
        self.state_path = Path(state_path) if state_path else None
        self._tokens: dict[str, TokenInfo] = {}
        self._sessions: dict[str, int] = {}
        self._csrf: set[str] = set()
        self._uploads: dict[str, tuple[str, bytes]] = {}
        self._last_classified_at: datetime | None = None
        self._shutdown = threading.Event()
        # The live crowd: one at a time, started and stopped under _live_control (not the store
        # lock, which its thread takes for every turn), with totals that outlive restarts.
        self._live: _LiveCrowd | None = None
        self._live_control = threading.Lock()
        self._live_made = 0
        self._live_retired = 0
        self._live_last_at: str | None = None

        if self.state_path and self.state_path.exists():
            self.state = StoreState.from_json(json.loads(self.state_path.read_text()))
        else:
            self.state = StoreState()
        self._reindex()
        with self.lock:
            if project_id not in self.state.projects:
                self._create_project(project_id, project_name)
            self.project_id = project_id
            if workflow_id not in self.state.workflows:
                self._create_workflow(
                    workflow_id,
                    project_id,
                    workflow_name,
                    list(vocabulary),
                    question,
                    retirement_count,
                    prioritized,
                    task_type,
                )
            else:
                # A restarted demo with an edited vocabulary gets a new workflow version, as an
                # edit in the Project Builder would.
                self.set_vocabulary(workflow_id, vocabulary)
            self.workflow_id = workflow_id
            self.state.answer_keys = list(keys) if keys is not None else self.state.answer_keys
            self._save()

    # ---------------------------------------------------------------- ids, time, persistence

    def _next_id(self, kind: str) -> int:
        current = self.state.counters.get(kind, ID_BASES[kind] - 1)
        self.state.counters[kind] = current + 1
        return current + 1

    def _bump_counter(self, kind: str, used: int) -> None:
        self.state.counters[kind] = max(self.state.counters.get(kind, ID_BASES[kind] - 1), used)

    def now(self) -> str:
        return iso(self.clock())

    def _save(self) -> None:
        if not self.state_path:
            return
        # Write then rename, so a demo killed mid-write never leaves a half file behind.
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_path.parent, prefix=".sandbox-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(self.state.to_json(), fh)
        os.replace(tmp, self.state_path)

    # ---------------------------------------------------------------- project and workflow

    def _create_project(self, project_id: int, name: str) -> ProjectRecord:
        now = self.now()
        slug = "crowdloop/" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        project = ProjectRecord(project_id, name, slug, now, now)
        self.state.projects[project_id] = project
        self._bump_counter("projects", project_id)
        return project

    @staticmethod
    def _task_definition(labels: Sequence[str], task_type: str = "multiple") -> dict[str, Any]:
        """Task T0 as the Project Builder writes it: a question (``single``, ``multiple``)
        whose answers are ``T0.answers.i.label``, or a ``survey`` whose choices, one per label,
        are coded as ``choice_codes`` makes them, with no questions about each choice."""
        if task_type == "survey":
            codes = choice_codes(labels)
            return {
                "T0": {
                    "type": "survey",
                    "choices": {
                        code: {
                            "label": f"T0.choices.{code}.label",
                            "images": [],
                            "characteristics": {},
                            "confusionsOrder": [],
                            "noQuestions": True,
                        }
                        for code in codes
                    },
                    "choicesOrder": codes,
                    "questions": {},
                    "questionsOrder": [],
                    "characteristics": {},
                    "characteristicsOrder": [],
                    "images": {},
                }
            }
        return {
            "T0": {
                "type": task_type,
                "question": "T0.question",
                "help": "T0.help",
                "required": False,
                "answers": [{"label": f"T0.answers.{i}.label"} for i in range(len(labels))],
            }
        }

    def _strings(
        self, labels: Sequence[str], question: str, task_type: str = "multiple"
    ) -> dict[str, str]:
        strings = {"T0.question": question, "T0.help": ""}
        if task_type == "survey":
            for code, label in zip(choice_codes(labels), labels, strict=True):
                strings[f"T0.choices.{code}.label"] = label
            return strings
        for i, label in enumerate(labels):
            strings[f"T0.answers.{i}.label"] = label
        return strings

    def _create_workflow(
        self,
        workflow_id: int,
        project_id: int,
        name: str,
        labels: list[str],
        question: str,
        retirement_count: int,
        prioritized: bool,
        task_type: str = "multiple",
    ) -> WorkflowRecord:
        now = self.now()
        workflow = WorkflowRecord(
            id=workflow_id,
            project_id=project_id,
            display_name=name,
            tasks=self._task_definition(labels, task_type),
            strings=self._strings(labels, question, task_type),
            retirement={"criteria": "classification_count", "options": {"count": retirement_count}},
            created_at=now,
            updated_at=now,
            prioritized=prioritized,
        )
        self.state.workflows[workflow_id] = workflow
        self._bump_counter("workflows", workflow_id)
        self.state.projects[project_id].workflow_ids.append(workflow_id)
        self._record_version(workflow)
        return workflow

    def _record_version(self, workflow: WorkflowRecord) -> None:
        version = WorkflowVersionRecord(
            id=self._next_id("workflow_versions"),
            workflow_id=workflow.id,
            major_number=workflow.version,
            minor_number=workflow.minor_version,
            tasks=copy.deepcopy(workflow.tasks),
            strings=dict(workflow.strings),
            first_task=workflow.first_task,
            created_at=self.now(),
        )
        self.state.workflow_versions[version.id] = version

    def set_vocabulary(self, workflow_id: int, labels: Sequence[str]) -> str:
        """Edit the answers; returns the new ``major.minor`` version (unchanged if no edit).

        Panoptes bumps the major version when ``tasks`` change (an answer added or removed) and
        the minor version when ``strings`` change (a label renamed).
        """
        with self.lock:
            workflow = self._workflow(workflow_id)
            question = workflow.strings.get("T0.question", self.question)
            task_type = task_type_of(workflow.tasks)
            tasks = self._task_definition(labels, task_type)
            strings = self._strings(labels, question, task_type)
            changed = False
            if tasks != workflow.tasks:
                workflow.tasks = tasks
                workflow.version += 1
                changed = True
            if strings != workflow.strings:
                workflow.strings = strings
                workflow.minor_version += 1
                changed = True
            if changed:
                workflow.updated_at = self.now()
                workflow.lock_version += 1
                self._record_version(workflow)
                self._save()
            return workflow.version_string

    def set_retirement(self, workflow_id: int, count: int | None) -> None:
        """``count=None`` means ``never_retire``."""
        with self.lock:
            workflow = self._workflow(workflow_id)
            if count is None:
                workflow.retirement = {"criteria": "never_retire", "options": {}}
            else:
                workflow.retirement = {
                    "criteria": "classification_count",
                    "options": {"count": count},
                }
            workflow.updated_at = self.now()
            self._save()

    def set_prioritized(self, workflow_id: int, prioritized: bool) -> None:
        with self.lock:
            self._workflow(workflow_id).prioritized = prioritized
            self._save()

    # ---------------------------------------------------------------- lookups

    def _workflow(self, workflow_id: int) -> WorkflowRecord:
        try:
            return self.state.workflows[workflow_id]
        except KeyError:
            raise ApiError(404, f"Could not find workflow with id='{workflow_id}'") from None

    def _subject_set(self, set_id: int) -> SubjectSetRecord:
        try:
            return self.state.subject_sets[set_id]
        except KeyError:
            raise ApiError(404, f"Could not find subject_set with id='{set_id}'") from None

    def _project(self, project_id: int) -> ProjectRecord:
        try:
            return self.state.projects[project_id]
        except KeyError:
            raise ApiError(404, f"Could not find project with id='{project_id}'") from None

    def _reindex(self) -> None:
        """Build the lookup indexes; the store itself stays plain dicts for JSON round-trips.

        Without them every upload (one membership GET per subject) and every simulated turn
        (a retirement check per candidate) would scan whole tables.
        """
        self._status_index: dict[tuple[int, int], StatusRecord] = {
            (s.subject_id, s.workflow_id): s for s in self.state.statuses.values()
        }
        self._members_by_set: dict[int, dict[int, SetMemberSubjectRecord]] = {}
        self._sets_by_subject: dict[int, set[int]] = {}
        for m in sorted(self.state.set_member_subjects.values(), key=_by_id):
            self._index_member(m)
        # Classification ids only grow, so appending keeps this sorted for keyset paging.
        self._classification_ids: list[int] = sorted(self.state.classifications)

    def _index_member(self, m: SetMemberSubjectRecord) -> None:
        self._members_by_set.setdefault(m.subject_set_id, {})[m.subject_id] = m
        self._sets_by_subject.setdefault(m.subject_id, set()).add(m.subject_set_id)

    def _drop_member(self, m: SetMemberSubjectRecord) -> None:
        del self.state.set_member_subjects[m.id]
        self._members_by_set.get(m.subject_set_id, {}).pop(m.subject_id, None)
        self._sets_by_subject.get(m.subject_id, set()).discard(m.subject_set_id)

    def _members_of_set(self, set_id: int) -> list[SetMemberSubjectRecord]:
        return sorted(self._members_by_set.get(set_id, {}).values(), key=_by_id)

    def _sets_of_subject(self, subject_id: int) -> list[int]:
        return sorted(self._sets_by_subject.get(subject_id, ()))

    def _workflows_of_set(self, set_id: int) -> list[int]:
        return sorted(w.id for w in self.state.workflows.values() if set_id in w.subject_set_ids)

    def _status_for(self, subject_id: int, workflow_id: int) -> StatusRecord | None:
        return self._status_index.get((subject_id, workflow_id))

    def _ensure_status(self, subject_id: int, workflow_id: int) -> StatusRecord:
        status = self._status_for(subject_id, workflow_id)
        if status is None:
            now = self.now()
            status = StatusRecord(
                self._next_id("subject_workflow_statuses"),
                subject_id,
                workflow_id,
                0,
                None,
                None,
                now,
                now,
            )
            self.state.statuses[status.id] = status
            self._status_index[(subject_id, workflow_id)] = status
        return status

    def labels(self, workflow_id: int | None = None, version: str | None = None) -> list[str]:
        """Answer labels of a workflow, at its current or at a given ``major.minor`` version."""
        with self.lock:
            workflow_id = workflow_id or self.workflow_id
            strings = self._strings_at(workflow_id, version)
            if task_type_of(self._workflow(workflow_id).tasks) == "survey":
                return [
                    v for k, v in strings.items() if re.fullmatch(r"T0\.choices\.\w+\.label", k)
                ]
            n = sum(1 for k in strings if re.fullmatch(r"T0\.answers\.\d+\.label", k))
            return [strings[f"T0.answers.{i}.label"] for i in range(n)]

    def _strings_at(self, workflow_id: int, version: str | None) -> dict[str, str]:
        workflow = self._workflow(workflow_id)
        if version is None or version == workflow.version_string:
            return workflow.strings
        for v in self.state.workflow_versions.values():
            if v.workflow_id == workflow_id and f"{v.major_number}.{v.minor_number}" == version:
                return v.strings
        return {}

    # ---------------------------------------------------------------- Python seeding API

    def create_subject_set(
        self,
        display_name: str,
        *,
        project_id: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        with self.lock:
            project = self._project(project_id or self.project_id)
            now = self.now()
            record = SubjectSetRecord(
                self._next_id("subject_sets"),
                project.id,
                display_name,
                dict(metadata or {}),
                now,
                now,
            )
            self.state.subject_sets[record.id] = record
            project.subject_set_ids.append(record.id)
            project.updated_at = now
            self._save()
            return record.id

    def create_subject(
        self,
        *locations: dict[str, str],
        metadata: dict[str, Any] | None = None,
        subject_set_id: int | None = None,
        project_id: int | None = None,
    ) -> int:
        with self.lock:
            project = self._project(project_id or self.project_id)
            subject = self._new_subject(project.id, list(locations), dict(metadata or {}))
            if subject_set_id is not None:
                self._link_subjects(subject_set_id, [subject.id])
            self._save()
            return subject.id

    def _new_subject(
        self, project_id: int, locations: list[dict[str, str]], metadata: dict[str, Any]
    ) -> SubjectRecord:
        now = self.now()
        subject = SubjectRecord(
            self._next_id("subjects"), project_id, locations, metadata, now, now
        )
        self.state.subjects[subject.id] = subject
        return subject

    def delete_subject(self, subject_id: int) -> None:
        """Delete a subject upstream: its GET turns 404, its classifications stay (B10)."""
        with self.lock:
            self._delete_subject(subject_id)
            self._save()

    def _delete_subject(self, subject_id: int) -> None:
        if self.state.subjects.pop(subject_id, None) is None:
            raise ApiError(404, f"Could not find subject with id='{subject_id}'")
        for set_id in self._sets_of_subject(subject_id):
            member = self._members_by_set[set_id][subject_id]
            self._drop_member(member)

    def add_subjects_to_set(self, subject_set_id: int, subject_ids: Iterable[int]) -> None:
        with self.lock:
            self._link_subjects(subject_set_id, list(subject_ids))
            self._save()

    def _link_subjects(self, set_id: int, subject_ids: list[int]) -> None:
        subject_set = self._subject_set(set_id)
        present = set(self._members_by_set.get(set_id, {}))
        missing = [sid for sid in subject_ids if sid not in self.state.subjects]
        if missing:
            raise ApiError(422, f"Could not find subjects with ids {_str_ids(missing)}")
        now = self.now()
        for sid in subject_ids:
            if sid in present:
                continue
            member = SetMemberSubjectRecord(
                self._next_id("set_member_subjects"),
                set_id,
                sid,
                _priority_of(self.state.subjects[sid].metadata),
                now,
                now,
            )
            self.state.set_member_subjects[member.id] = member
            self._index_member(member)
            present.add(sid)
        subject_set.updated_at = now
        subject_set.lock_version += 1

    def link_subject_set(self, workflow_id: int, subject_set_id: int) -> None:
        with self.lock:
            self._link_sets(workflow_id, [subject_set_id])
            self._save()

    def _link_sets(self, workflow_id: int, set_ids: list[int]) -> None:
        workflow = self._workflow(workflow_id)
        for set_id in set_ids:
            subject_set = self._subject_set(set_id)
            if subject_set.project_id != workflow.project_id:
                raise ApiError(422, f"subject_set {set_id} belongs to another project")
            if set_id not in workflow.subject_set_ids:
                workflow.subject_set_ids.append(set_id)
        workflow.updated_at = self.now()
        workflow.lock_version += 1

    def unlink_subject_set(self, workflow_id: int, subject_set_id: int) -> None:
        with self.lock:
            workflow = self._workflow(workflow_id)
            if subject_set_id in workflow.subject_set_ids:
                workflow.subject_set_ids.remove(subject_set_id)
                workflow.updated_at = self.now()
                workflow.lock_version += 1
            self._save()

    def retire(self, workflow_id: int, subject_ids: Iterable[int], reason: str = "other") -> None:
        with self.lock:
            self._retire(workflow_id, list(subject_ids), reason)
            self._save()

    def _retire(self, workflow_id: int, subject_ids: list[int], reason: str) -> None:
        self._workflow(workflow_id)
        if reason not in RETIREMENT_REASONS:
            raise ApiError(422, f"retirement_reason must be one of {', '.join(RETIREMENT_REASONS)}")
        now = self.now()
        for sid in subject_ids:
            if sid not in self.state.subjects:
                continue  # Panoptes quietly skips ids it cannot retire.
            status = self._ensure_status(sid, workflow_id)
            if status.retired_at is None:
                status.retired_at = now
                status.retirement_reason = reason
                status.updated_at = now

    def unretire(self, workflow_id: int, subject_ids: Iterable[int]) -> None:
        with self.lock:
            self._unretire(workflow_id, list(subject_ids))
            self._save()

    def _unretire(self, workflow_id: int, subject_ids: list[int]) -> None:
        self._workflow(workflow_id)
        now = self.now()
        for sid in subject_ids:
            status = self._status_for(sid, workflow_id)
            if status is not None and status.retired_at is not None:
                status.retired_at = None
                status.retirement_reason = None
                status.updated_at = now

    def set_priority(self, subject_set_id: int, subject_id: int, priority: float | None) -> None:
        with self.lock:
            for member in self._members_of_set(subject_set_id):
                if member.subject_id == subject_id:
                    member.priority = priority
                    member.updated_at = self.now()
                    member.lock_version += 1
            self._save()

    # ---------------------------------------------------------------- Python reading API

    def uploaded(self, url: str) -> tuple[str, bytes] | None:
        """The content type and bytes PUT to an upload URL this sandbox handed out, or None."""
        match = re.search(r"/media/uploads/([\w.-]+)$", urlsplit(url).path)
        with self.lock:
            return self._uploads.get(match.group(1)) if match else None

    def subjects(self) -> list[SubjectRecord]:
        with self.lock:
            return [copy.deepcopy(s) for s in sorted(self.state.subjects.values(), key=_by_id)]

    def find_subjects(self, **metadata: Any) -> list[SubjectRecord]:
        """Subjects whose metadata has every given key with the given value (compared as text)."""
        with self.lock:
            return [
                copy.deepcopy(s)
                for s in sorted(self.state.subjects.values(), key=_by_id)
                if all(str(s.metadata.get(k)) == str(v) for k, v in metadata.items())
            ]

    def subject_sets(self) -> list[SubjectSetRecord]:
        with self.lock:
            return [copy.deepcopy(s) for s in sorted(self.state.subject_sets.values(), key=_by_id)]

    def set_members(self, subject_set_id: int) -> list[SetMemberSubjectRecord]:
        with self.lock:
            return [
                copy.deepcopy(m) for m in sorted(self._members_of_set(subject_set_id), key=_by_id)
            ]

    def workflow(self, workflow_id: int | None = None) -> WorkflowRecord:
        with self.lock:
            return copy.deepcopy(self._workflow(workflow_id or self.workflow_id))

    def status(self, subject_id: int, workflow_id: int | None = None) -> StatusRecord | None:
        with self.lock:
            status = self._status_for(subject_id, workflow_id or self.workflow_id)
            return copy.deepcopy(status)

    def classifications(self, workflow_id: int | None = None) -> list[ClassificationRecord]:
        with self.lock:
            return [
                copy.deepcopy(c)
                for c in sorted(self.state.classifications.values(), key=_by_id)
                if workflow_id is None or c.workflow_id == workflow_id
            ]

    def volunteers(self) -> list[VolunteerRecord]:
        with self.lock:
            return [copy.deepcopy(v) for v in self.state.volunteers.values()]

    def linked_subject_ids(self, workflow_id: int | None = None) -> list[int]:
        with self.lock:
            return [m.subject_id for m in self._linked_members(workflow_id or self.workflow_id)]

    def _linked_members(self, workflow_id: int) -> list[SetMemberSubjectRecord]:
        """Set members of the workflow's linked sets, one per subject, in selection order."""
        workflow = self._workflow(workflow_id)
        seen: set[int] = set()
        members: list[SetMemberSubjectRecord] = []
        for m in sorted(self.state.set_member_subjects.values(), key=_by_id):
            if m.subject_set_id in workflow.subject_set_ids and m.subject_id not in seen:
                seen.add(m.subject_id)
                members.append(m)
        if workflow.prioritized:
            # Panoptes' prioritized selector orders by set_member_subjects.priority ascending;
            # unprioritized members come last.
            members.sort(key=lambda m: (m.priority is None, m.priority or 0.0, m.id))
        return members

    # ---------------------------------------------------------------- simulated volunteers

    def run_volunteers(
        self,
        workflow_id: int | None = None,
        *,
        crowd: CrowdConfig | None = None,
        classifications: int | None = None,
        truth: Truth | None = None,
    ) -> CrowdRun:
        """Let a simulated crowd classify the subjects linked to a workflow.

        Each turn a random volunteer (among those with something left to see) either repeats a
        subject they already classified (``repeat_rate``; a repeat does not count towards
        retirement, as in Panoptes) or takes the next unseen, unretired subject: lowest
        ``#priority`` first when the workflow is prioritized, otherwise at random. The run stops
        after ``classifications`` turns, or (None) when no volunteer has anything left to see.
        ``truth``: None reads ``metadata["#truth"]``; a function ``f(subject_id, metadata)``; or a
        mapping ``{external_id: [labels or keys]}`` read through ``metadata["external_id"]``.
        """
        crowd = crowd or CrowdConfig()
        truth_fn = _truth_fn(truth)
        with self.lock:
            workflow = self._workflow(workflow_id or self.workflow_id)
            rng = random.Random(crowd.seed)
            volunteers = self._recruit(crowd, rng)
            answer_index = self._answer_index(workflow)
            made: list[ClassificationRecord] = []
            retired: list[int] = []

            members = self._linked_members(workflow.id)
            if crowd.gold_share > 0:
                made.extend(
                    self._gold_classifications(
                        workflow, members, crowd, rng, truth_fn, answer_index
                    )
                )
            turns = self._crowd_turns(workflow, crowd, rng, truth_fn, volunteers)
            turns.open_ids = [
                m.subject_id for m in members if not self._is_retired(m.subject_id, workflow.id)
            ]
            budget = classifications
            crowd_made = 0
            # Repeats never exhaust anyone, so bound the turns whatever the budget.
            turns_left = 4 * (len(members) + 1) * (len(volunteers) + 1)
            while turns.active and turns_left > 0 and (budget is None or crowd_made < budget):
                turns_left -= 1
                record, retired_now = self._crowd_turn(turns)
                if record is None:
                    continue
                made.append(record)
                crowd_made += 1
                if retired_now:
                    retired.append(record.subject_ids[0])
            self._save()
            return CrowdRun(made, [copy.deepcopy(v) for v in volunteers], retired)

    def _crowd_turns(
        self,
        workflow: WorkflowRecord,
        crowd: CrowdConfig,
        rng: random.Random,
        truth: TruthFn,
        volunteers: list[VolunteerRecord],
    ) -> _CrowdTurns:
        """The state a crowd carries from turn to turn on one workflow (open ids left empty)."""
        turns = _CrowdTurns(
            workflow=workflow,
            crowd=crowd,
            rng=rng,
            truth=truth,
            answer_index=self._answer_index(workflow),
            volunteers=volunteers,
            active=list(volunteers),
            seen={v.name: set() for v in volunteers},
        )
        self._crowd_catch_up(turns)
        return turns

    def _crowd_catch_up(self, turns: _CrowdTurns) -> None:
        """Add the classifications stored since the last call to what each volunteer has seen.

        Classification ids only grow, so this reads each classification once over a crowd's
        life, whoever made it (this crowd, another run with the same names, or a live crowd).
        """
        ids = self._classification_ids
        workflow_id = turns.workflow.id
        for cid in ids[turns.seen_upto :]:
            c = self.state.classifications[cid]
            if c.workflow_id == workflow_id and c.user_name in turns.seen:
                turns.seen[c.user_name].update(c.subject_ids)
        turns.seen_upto = len(ids)

    def _crowd_turn(self, turns: _CrowdTurns) -> tuple[ClassificationRecord | None, bool]:
        """One volunteer's turn: ``(classification, retired it)``, or ``(None, False)`` when the
        volunteer drawn has nothing left to see (they leave ``turns.active``)."""
        workflow, crowd, rng = turns.workflow, turns.crowd, turns.rng
        volunteer = rng.choice(turns.active)
        profile = crowd.profiles.get(volunteer.profile, PROFILES["careful"])
        seen = turns.seen[volunteer.name]
        repeatable: list[int] = []
        if crowd.repeat_rate > 0 and rng.random() < crowd.repeat_rate:
            repeatable = [sid for sid in sorted(seen) if not self._is_retired(sid, workflow.id)]
        if repeatable:
            subject_id = rng.choice(repeatable)
            repeat = True
        else:
            next_id = _next_subject(turns.open_ids, seen, workflow.prioritized, rng)
            if next_id is None:
                turns.active.remove(volunteer)
                return None, False
            subject_id = next_id
            repeat = False
        subject = self.state.subjects[subject_id]
        sizes = _truth_sizes(turns.truth(subject_id, subject.metadata), turns.answer_index)
        true_idx = set(sizes)
        sees: dict[int, float] | None = None
        if profile.half_seen_scale > 0 and not profile.ignores_truth:
            own = eyesight(volunteer.name)
            sees = {i: profile.seen_probability(s, own) for i, s in sizes.items()}
        n_answers = len(turns.answer_index.labels)
        if task_type_of(workflow.tasks) == "single":
            ticked = _answer_one(profile, true_idx, n_answers, rng, sees)
        else:
            ticked = _answer(profile, true_idx, n_answers, rng, sees)
        record = self._record_classification(
            workflow, volunteer, subject_id, ticked, repeat=repeat, gold=False
        )
        seen.add(subject_id)
        if not repeat and self._count_towards_retirement(
            workflow, subject_id, votes=crowd.votes_for(workflow.id, subject_id)
        ):
            turns.open_ids.remove(subject_id)
            return record, True
        return record, False

    def _recruit(self, crowd: CrowdConfig, rng: random.Random) -> list[VolunteerRecord]:
        names = [n for n, w in crowd.mix.items() if w > 0]
        unknown = [n for n in names if n not in crowd.profiles]
        if unknown:
            raise ValueError(f"unknown volunteer profiles {unknown}; known: {list(crowd.profiles)}")
        total = sum(crowd.mix[n] for n in names)
        quotas = [crowd.n_volunteers * crowd.mix[n] / total for n in names]
        counts = [math.floor(q) for q in quotas]
        # Largest remainder, so 20 volunteers at 0.6/0.3/0.1 are exactly 12/6/2.
        by_remainder = sorted(range(len(names)), key=lambda i: quotas[i] - counts[i], reverse=True)
        for i in by_remainder[: crowd.n_volunteers - sum(counts)]:
            counts[i] += 1
        profiles = [name for name, count in zip(names, counts, strict=True) for _ in range(count)]
        rng.shuffle(profiles)
        n_anonymous = round(crowd.n_volunteers * crowd.anonymous_share)
        anonymous = set(rng.sample(range(crowd.n_volunteers), n_anonymous))
        volunteers: list[VolunteerRecord] = []
        for i, profile in enumerate(profiles):
            seed_text = f"{crowd.seed}:{crowd.name_prefix}{i}"
            ip_hash = hashlib.sha1(seed_text.encode(), usedforsecurity=False).hexdigest()[:20]
            session = hashlib.sha256(("session:" + seed_text).encode()).hexdigest()
            if i in anonymous:
                name = f"not-logged-in-{ip_hash}"
                user_id = None
            else:
                name = f"{crowd.name_prefix}{i:03d}"
                user_id = self._user_for_login(name).id
            existing = self.state.volunteers.get(name)
            if existing is None:
                existing = VolunteerRecord(name, profile, user_id, ip_hash, session)
                self.state.volunteers[name] = existing
            volunteers.append(existing)
        return volunteers

    def _user_for_login(self, login: str) -> UserRecord:
        for user in self.state.users.values():
            if user.login == login:
                return user
        user = UserRecord(self._next_id("users"), login, login)
        self.state.users[user.id] = user
        return user

    def _answer_index(self, workflow: WorkflowRecord) -> AnswerIndex:
        if task_type_of(workflow.tasks) == "survey":
            codes = workflow.tasks["T0"]["choicesOrder"]
            labels = [workflow.strings.get(f"T0.choices.{c}.label", c) for c in codes]
        else:
            n = len(workflow.tasks["T0"]["answers"])
            labels = [workflow.strings.get(f"T0.answers.{i}.label", "") for i in range(n)]
        lookup = {label.lower(): i for i, label in enumerate(labels)}
        for i, key in enumerate(self.state.answer_keys[: len(labels)]):
            lookup.setdefault(key.lower(), i)
        return AnswerIndex(labels, lookup)

    def _is_retired(self, subject_id: int, workflow_id: int) -> bool:
        status = self._status_for(subject_id, workflow_id)
        return status is not None and status.retired_at is not None

    def _count_towards_retirement(
        self, workflow: WorkflowRecord, subject_id: int, *, votes: int | None = None
    ) -> bool:
        """Count one classification; True when it retires the subject.

        ``votes``: the crowd's own number of votes for this subject (``votes_per_subject``); it
        retires at that count when it comes before the workflow's retirement count, as a
        per-subject retirement rule would. A workflow that never retires keeps every subject.
        """
        status = self._ensure_status(subject_id, workflow.id)
        status.classifications_count += 1
        status.updated_at = self.now()
        limit = workflow.retirement_count
        if limit is not None and votes is not None:
            limit = min(limit, votes)
        if (
            limit is not None
            and status.retired_at is None
            and status.classifications_count >= limit
        ):
            status.retired_at = status.updated_at
            status.retirement_reason = "classification_count"
            return True
        return False

    def _gold_classifications(
        self,
        workflow: WorkflowRecord,
        members: list[SetMemberSubjectRecord],
        crowd: CrowdConfig,
        rng: random.Random,
        truth: TruthFn,
        answer_index: AnswerIndex,
    ) -> list[ClassificationRecord]:
        has_gold = {
            sid
            for c in self.state.classifications.values()
            if c.gold_standard and c.workflow_id == workflow.id
            for sid in c.subject_ids
        }
        expert_login = f"{crowd.name_prefix}expert"
        expert = self.state.volunteers.get(expert_login)
        if expert is None:
            user = self._user_for_login(expert_login)
            ip_hash = hashlib.sha1(expert_login.encode(), usedforsecurity=False).hexdigest()[:20]
            expert = VolunteerRecord(
                expert_login,
                "expert",
                user.id,
                ip_hash,
                hashlib.sha256(expert_login.encode()).hexdigest(),
            )
            self.state.volunteers[expert_login] = expert
        made = []
        for member in members:
            if rng.random() >= crowd.gold_share or member.subject_id in has_gold:
                continue
            subject = self.state.subjects[member.subject_id]
            ticked = sorted(_truth_indices(truth(subject.id, subject.metadata), answer_index))
            # Gold-standard classifications are reference answers; they do not count towards
            # retirement here, so the crowd still sees every subject the usual number of times.
            made.append(
                self._record_classification(
                    workflow, expert, subject.id, ticked, repeat=False, gold=True
                )
            )
        return made

    def _record_classification(
        self,
        workflow: WorkflowRecord,
        volunteer: VolunteerRecord,
        subject_id: int,
        ticked: list[int],
        *,
        repeat: bool,
        gold: bool,
    ) -> ClassificationRecord:
        moment = self.clock()
        # Strictly increasing timestamps keep "earliest created_at" meaningful within one run.
        if self._last_classified_at is not None and moment <= self._last_classified_at:
            moment = self._last_classified_at + timedelta(milliseconds=1)
        self._last_classified_at = moment
        started = moment - timedelta(seconds=5 + (subject_id % 40))
        metadata = {
            "source": "sandbox",
            "session": volunteer.session,
            "started_at": iso(started),
            "finished_at": iso(moment),
            "user_agent": "crowdloop-sandbox/1.0",
            "user_language": "en",
            "workflow_version": workflow.version_string,
            "subject_dimensions": [None],
            "subject_selection_state": {
                "retired": False,
                "already_seen": repeat,
                "selection_state": "normal",
                "finished_workflow": False,
                "user_has_finished_workflow": False,
            },
            "seen_before": True if repeat else None,
        }
        if metadata["seen_before"] is None:
            del metadata["seen_before"]
        record = ClassificationRecord(
            id=self._next_id("classifications"),
            project_id=workflow.project_id,
            workflow_id=workflow.id,
            workflow_version=workflow.version_string,
            user_id=volunteer.user_id,
            user_name=volunteer.name,
            user_ip=volunteer.ip_hash,
            created_at=iso(moment),
            annotations=[{"task": "T0", "value": _api_value(workflow.tasks, ticked)}],
            subject_ids=[subject_id],
            metadata=metadata,
            gold_standard=gold,
            expert=gold,
            profile=volunteer.profile,
        )
        self.state.classifications[record.id] = record
        self._classification_ids.append(record.id)
        workflow.classifications_count += 1
        return record

    # ---------------------------------------------------------------- live crowd

    def live_crowd_start(
        self,
        *,
        per_minute: float,
        crowd: CrowdConfig | None = None,
        truth: Truth | None = None,
        workflow_id: int | None = None,
    ) -> None:
        """Start a crowd that keeps classifying in a background thread, or change it.

        About ``per_minute`` classifications a minute, evenly spaced with a little jitter from
        the crowd's seed, one at a time and each the way a ``run_volunteers`` turn makes it
        (same volunteers for the same config, same subject choice and retirement), on every
        active workflow with linked, unretired subjects in turn, or only on ``workflow_id``.
        With no open subject it idles and looks again every second. A running crowd is
        replaced; ``per_minute=0`` stops it. Gold-standard classifications are not made live.

        Raises:
            ValueError: a negative or non-finite rate, no volunteers, an unknown profile.
        """
        rate = float(per_minute)
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(f"per_minute must be a finite number >= 0, got {per_minute!r}")
        crowd = crowd or CrowdConfig()
        if rate > 0 and crowd.n_volunteers < 1:
            raise ValueError("a live crowd needs at least one volunteer")
        truth_fn = _truth_fn(truth)
        with self._live_control:
            self._live_stop()
            if rate == 0:
                return
            with self.lock:
                if workflow_id is not None:
                    self._workflow(workflow_id)
                rng = random.Random(crowd.seed)
                volunteers = self._recruit(crowd, rng)
                self._save()
                live = _LiveCrowd(
                    per_minute=rate,
                    crowd=crowd,
                    truth=truth_fn,
                    workflow_id=workflow_id,
                    volunteers=volunteers,
                    rng=rng,
                    jitter=random.Random(f"live-crowd:{crowd.seed}"),
                    started_at=self.now(),
                )
                self._live = live
            live.thread = threading.Thread(
                target=self._live_run, args=(live,), name="sandbox-live-crowd", daemon=True
            )
            live.thread.start()

    def live_crowd_stop(self) -> None:
        """Stop the live crowd, if any; no classification is made after this returns."""
        with self._live_control:
            self._live_stop()

    def live_crowd_status(self) -> LiveCrowdStatus:
        with self.lock:
            live = self._live
            running = (
                live is not None
                and not live.stop.is_set()
                and live.thread is not None
                and live.thread.is_alive()
            )
            return LiveCrowdStatus(
                running=running,
                per_minute=live.per_minute if live and running else 0.0,
                workflow_id=live.workflow_id if live else None,
                classifications=self._live_made,
                retired=self._live_retired,
                last_at=self._live_last_at,
                started_at=live.started_at if live else None,
                idle=running and live is not None and live.idle_reason is not None,
                idle_reason=live.idle_reason if live and running else None,
                open_subjects=live.open_subjects if live else 0,
                volunteers=len(live.volunteers) if live else 0,
                error=live.error if live else None,
            )

    def _live_stop(self) -> None:
        live = self._live
        if live is None:
            return
        live.stop.set()
        if live.thread is not None and live.thread is not threading.current_thread():
            # A turn checks the stop signal under the store lock before classifying, so even a
            # caller holding that lock (and timing out here) gets no classification afterwards.
            live.thread.join(5)
        with self.lock:
            if self._live is live:
                self._live = None

    def _live_run(self, live: _LiveCrowd) -> None:
        interval = 60.0 / live.per_minute
        while not live.stop.is_set():
            try:
                made = self._live_turn(live)
            except Exception as exc:
                # A demo's crowd must not die silently: report the error and keep going.
                with self.lock:
                    live.error = f"{type(exc).__name__}: {exc}"
                made = False
            if made:
                delay = interval * live.jitter.uniform(1 - LIVE_JITTER, 1 + LIVE_JITTER)
            else:
                delay = min(interval, LIVE_IDLE_POLL_S)
            if self.sleep is None:
                if live.stop.wait(delay):
                    break
            else:
                self.sleep(delay)

    def _live_turn(self, live: _LiveCrowd) -> bool:
        """One classification on the next workflow with open subjects; False when idle."""
        with self.lock:
            if live.stop.is_set():
                return False
            if live.workflow_id is not None:
                workflow_ids = [live.workflow_id]
            else:
                workflow_ids = sorted(w.id for w in self.state.workflows.values() if w.active)
            candidates = [self._live_turns_for(live, wid) for wid in workflow_ids]
            live.open_subjects = sum(len(t.open_ids) for t in candidates)
            candidates = [t for t in candidates if t.open_ids]
            if not candidates:
                live.idle_reason = "no open subject: none linked, or all retired"
                return False
            # Round robin: start after the workflow that got the previous classification.
            candidates.sort(key=lambda t: (t.workflow.id <= live.cursor, t.workflow.id))
            for turns in candidates:
                while turns.active:
                    record, retired = self._crowd_turn(turns)
                    if record is None:
                        continue
                    live.cursor = turns.workflow.id
                    live.idle_reason = None
                    self._live_made += 1
                    self._live_retired += int(retired)
                    self._live_last_at = record.created_at
                    if retired:
                        live.open_subjects -= 1
                    self._save()
                    return True
            live.idle_reason = "every volunteer has classified every open subject"
            return False

    def _live_turns_for(self, live: _LiveCrowd, workflow_id: int) -> _CrowdTurns:
        """The live crowd's turns on a workflow, brought up to date with the store."""
        workflow = self._workflow(workflow_id)
        turns = live.turns.get(workflow_id)
        if turns is None:
            turns = self._crowd_turns(workflow, live.crowd, live.rng, live.truth, live.volunteers)
            live.turns[workflow_id] = turns
        else:
            self._crowd_catch_up(turns)
        # Between two turns anything may have changed: new sets linked, subjects retired or
        # unretired by the app, the vocabulary edited, the selection order switched.
        turns.workflow = workflow
        turns.answer_index = self._answer_index(workflow)
        turns.open_ids = [
            m.subject_id
            for m in self._linked_members(workflow_id)
            if not self._is_retired(m.subject_id, workflow_id)
        ]
        turns.active = list(turns.volunteers)
        return turns

    # ---------------------------------------------------------------- exports

    def export_csv(
        self, export_type: str, owner: str = "projects", owner_id: int | None = None
    ) -> str:
        """Generate an export's CSV text now, in the format of zooniverse.md §5."""
        with self.lock:
            owner_id = owner_id or (self.project_id if owner == "projects" else self.workflow_id)
            return self._render_export(export_type, owner, owner_id)

    def _owner_workflows(self, owner: str, owner_id: int) -> list[WorkflowRecord]:
        if owner == "workflows":
            return [self._workflow(owner_id)]
        project = self._project(owner_id)
        return [self.state.workflows[w] for w in project.workflow_ids]

    def _render_export(self, export_type: str, owner: str, owner_id: int) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        workflows = self._owner_workflows(owner, owner_id)
        if export_type == "classifications":
            writer.writerow(CLASSIFICATION_EXPORT_COLUMNS)
            ids = {w.id for w in workflows}
            for c in sorted(self.state.classifications.values(), key=_by_id):
                if c.workflow_id in ids:
                    writer.writerow(self._classification_row(c))
        elif export_type == "subjects":
            writer.writerow(SUBJECT_EXPORT_COLUMNS)
            for row in self._subject_rows(owner, owner_id, workflows):
                writer.writerow(row)
        elif export_type == "workflows":
            writer.writerow(WORKFLOW_EXPORT_COLUMNS)
            for workflow in workflows:
                for v in sorted(self.state.workflow_versions.values(), key=_by_id):
                    if v.workflow_id == workflow.id:
                        writer.writerow(self._workflow_row(workflow, v))
        else:
            raise ApiError(404, f"Unknown export type {export_type!r}")
        return out.getvalue()

    def _classification_row(self, c: ClassificationRecord) -> list[str]:
        workflow = self.state.workflows[c.workflow_id]
        strings = self._strings_at(c.workflow_id, c.workflow_version)
        annotations = []
        for annotation in c.annotations:
            task, value = annotation["task"], annotation["value"]
            if isinstance(value, list) and value and isinstance(value[0], dict):
                annotations.append({"task": task, "value": value})  # survey: passed through
                continue

            def label(i: int, task: str = task) -> str:
                return strings.get(f"{task}.answers.{i}.label", "unknown answer label")

            annotations.append(
                {
                    "task": task,
                    "task_label": strings.get(f"{task}.question", ""),
                    # single: the label or null; multiple: the labels ticked
                    "value": (
                        [label(i) for i in value]
                        if isinstance(value, list)
                        else None
                        if value is None
                        else label(value)
                    ),
                }
            )
        subject_data: dict[str, Any] = {}
        for sid in c.subject_ids:
            subject = self.state.subjects.get(sid)
            status = self._status_for(sid, c.workflow_id)
            retired = None
            if status is not None and status.retired_at is not None:
                retired = {
                    "id": status.id,
                    "workflow_id": status.workflow_id,
                    "classifications_count": status.classifications_count,
                    "created_at": status.created_at,
                    "updated_at": status.updated_at,
                    "retired_at": status.retired_at,
                    "subject_id": status.subject_id,
                    "retirement_reason": status.retirement_reason,
                }
            subject_data[str(sid)] = {"retired": retired, **(subject.metadata if subject else {})}
        return [
            str(c.id),
            c.user_name,
            "" if c.user_id is None else str(c.user_id),
            c.user_ip,
            str(c.workflow_id),
            workflow.display_name,
            c.workflow_version,
            csv_time(c.created_at),
            "true" if c.gold_standard else "",
            "expert" if c.expert else "",
            _compact(c.metadata),
            _compact(annotations),
            _compact(subject_data),
            ";".join(str(s) for s in c.subject_ids),
        ]

    def _subject_rows(
        self, owner: str, owner_id: int, workflows: list[WorkflowRecord]
    ) -> Iterable[list[str]]:
        project_id = owner_id if owner == "projects" else workflows[0].project_id
        workflow_ids = {w.id for w in workflows}
        for member in sorted(self.state.set_member_subjects.values(), key=_by_id):
            subject = self.state.subjects[member.subject_id]
            if subject.project_id != project_id:
                continue
            linked = [w for w in self._workflows_of_set(member.subject_set_id) if w in workflow_ids]
            if not linked and owner == "workflows":
                continue
            base = [str(subject.id), str(subject.project_id)]
            tail = [
                _compact(subject.metadata),
                _compact(
                    {
                        str(i): next(iter(loc.values()), "")
                        for i, loc in enumerate(subject.locations)
                    }
                ),
            ]
            times = [csv_time(subject.created_at), csv_time(subject.updated_at)]
            if not linked:
                # An unlinked set: workflow and status columns stay empty.
                yield [*base, "", str(member.subject_set_id), *tail, "", "", "", *times]
                continue
            for wid in linked:
                status = self._status_for(subject.id, wid)
                yield [
                    *base,
                    str(wid),
                    str(member.subject_set_id),
                    *tail,
                    str(status.classifications_count if status else 0),
                    csv_time(status.retired_at) if status else "",
                    (status.retirement_reason or "") if status else "",
                    *times,
                ]

    def _workflow_row(self, workflow: WorkflowRecord, v: WorkflowVersionRecord) -> list[str]:
        retired = sum(
            1
            for s in self.state.statuses.values()
            if s.workflow_id == workflow.id and s.retired_at is not None
        )
        return [
            str(workflow.id),
            workflow.display_name,
            str(v.major_number),
            _bool(workflow.active),
            str(workflow.classifications_count),
            _bool(workflow.pairwise),
            _bool(workflow.grouped),
            _bool(workflow.prioritized),
            workflow.primary_language,
            v.first_task,
            "",
            str(retired),
            _compact(v.tasks),
            _compact(workflow.retirement),
            "{}",
            _compact(v.strings),
            str(v.minor_number),
        ]

    def _export_record(self, owner: str, owner_id: int, export_type: str) -> ExportRecord | None:
        for record in self.state.exports.values():
            if (record.owner_type, record.owner_id, record.export_type) == (
                owner,
                owner_id,
                export_type,
            ):
                return record
        return None

    def _advance_export(self, record: ExportRecord) -> None:
        """Finish a requested export once its delay has passed (unless a fault keeps it stuck)."""
        if record.state != "creating" or record.stuck:
            return
        if record.ready_after and self.clock() < parse_iso(record.ready_after):
            return
        record.content = self._render_export(record.export_type, record.owner_type, record.owner_id)
        record.state = "ready"
        record.updated_at = self.now()
        self._save()

    def request_export(
        self,
        export_type: str,
        owner: str = "projects",
        owner_id: int | None = None,
        *,
        fault: FaultAction | None = None,
    ) -> ExportRecord:
        """What ``POST .../<type>_export`` does; returns the export record."""
        with self.lock:
            if export_type not in EXPORT_TYPES:
                raise ApiError(404, f"Unknown export type {export_type!r}")
            owner_id = owner_id or (self.project_id if owner == "projects" else self.workflow_id)
            if owner == "projects":
                self._project(owner_id)
            else:
                self._workflow(owner_id)
            now = self.clock()
            record = self._export_record(owner, owner_id, export_type)
            if fault is not None and fault.kind == "export_stale":
                # Panoptes-Front-End#1257: the link keeps serving an export older than the request.
                if record is None or record.content is None:
                    old = iso(now - timedelta(days=1))
                    header = self._render_export(export_type, owner, owner_id).split("\n", 1)[0]
                    record = record or ExportRecord(
                        self._next_id("media"), owner, owner_id, export_type, "ready", old, old
                    )
                    record.content = header + "\n"
                    record.updated_at = old
                record.state = "ready"
                record.stuck = False
                self.state.exports[record.id] = record
                self._save()
                return copy.deepcopy(record)
            if record is None:
                record = ExportRecord(
                    self._next_id("media"),
                    owner,
                    owner_id,
                    export_type,
                    "creating",
                    iso(now),
                    iso(now),
                )
                self.state.exports[record.id] = record
            record.state = "creating"
            record.requested_at = iso(now)
            record.updated_at = iso(now)
            record.ready_after = iso(now + timedelta(seconds=self.export_delay_s))
            record.stuck = fault is not None and fault.kind == "export_stuck"
            self._save()
            return copy.deepcopy(record)

    def describe_export(
        self, export_type: str, owner: str = "projects", owner_id: int | None = None
    ) -> ExportRecord | None:
        with self.lock:
            owner_id = owner_id or (self.project_id if owner == "projects" else self.workflow_id)
            record = self._export_record(owner, owner_id, export_type)
            if record is not None:
                self._advance_export(record)
            return copy.deepcopy(record)

    # ---------------------------------------------------------------- serializers

    def _project_json(self, p: ProjectRecord) -> dict[str, Any]:
        return {
            "id": str(p.id),
            "display_name": p.display_name,
            "slug": p.slug,
            "description": "Local stand-in for a Zooniverse project.",
            "primary_language": "en",
            "private": False,
            "launch_approved": False,
            "live": True,
            "configuration": {},
            "classifications_count": sum(
                1 for c in self.state.classifications.values() if c.project_id == p.id
            ),
            "subjects_count": sum(1 for s in self.state.subjects.values() if s.project_id == p.id),
            "created_at": p.created_at,
            "updated_at": p.updated_at,
            "href": f"/projects/{p.id}",
            "links": {
                "workflows": _str_ids(p.workflow_ids),
                "active_workflows": _str_ids(
                    w for w in p.workflow_ids if self.state.workflows[w].active
                ),
                "subject_sets": _str_ids(p.subject_set_ids),
                "owner": {
                    "id": "1",
                    "display_name": "crowdloop",
                    "type": "users",
                    "href": "/users/1",
                },
            },
        }

    def _workflow_json(self, w: WorkflowRecord) -> dict[str, Any]:
        linked = {
            m.subject_id
            for m in self.state.set_member_subjects.values()
            if m.subject_set_id in w.subject_set_ids
        }
        retired = sum(
            1
            for s in self.state.statuses.values()
            if s.workflow_id == w.id and s.retired_at is not None
        )
        return {
            "id": str(w.id),
            "display_name": w.display_name,
            "tasks": w.tasks,
            "strings": w.strings,
            "first_task": w.first_task,
            "primary_language": w.primary_language,
            "version": w.version_string,
            "content_language": w.primary_language,
            "prioritized": w.prioritized,
            "grouped": w.grouped,
            "pairwise": w.pairwise,
            "retirement": w.retirement,
            "active": w.active,
            "mobile_friendly": False,
            "configuration": {},
            "aggregation": {},
            "classifications_count": w.classifications_count,
            "subjects_count": len(linked),
            "retired_set_member_subjects_count": retired,
            "completeness": (retired / len(linked)) if linked else 0.0,
            "created_at": w.created_at,
            "updated_at": w.updated_at,
            "href": f"/workflows/{w.id}",
            "links": {
                "project": str(w.project_id),
                "subject_sets": _str_ids(w.subject_set_ids),
                "tutorial_subject": None,
            },
        }

    def _workflow_version_json(self, v: WorkflowVersionRecord) -> dict[str, Any]:
        return {
            "id": str(v.id),
            "major_number": v.major_number,
            "minor_number": v.minor_number,
            "first_task": v.first_task,
            "tasks": v.tasks,
            "strings": v.strings,
            "created_at": v.created_at,
            "updated_at": v.created_at,
            "href": f"/workflow_versions/{v.id}",
            "links": {"workflow": str(v.workflow_id)},
        }

    def _subject_set_json(self, s: SubjectSetRecord) -> dict[str, Any]:
        members = sorted(self._members_of_set(s.id), key=_by_id)
        return {
            "id": str(s.id),
            "display_name": s.display_name,
            "metadata": s.metadata,
            "set_member_subjects_count": len(members),
            "created_at": s.created_at,
            "updated_at": s.updated_at,
            "href": f"/subject_sets/{s.id}",
            "links": {
                "project": str(s.project_id),
                "workflows": _str_ids(self._workflows_of_set(s.id)),
                "subjects": _str_ids(m.subject_id for m in members),
            },
        }

    def _subject_json(self, s: SubjectRecord) -> dict[str, Any]:
        return {
            "id": str(s.id),
            "metadata": s.metadata,
            "locations": s.locations,
            "zooniverse_id": None,
            "external_id": None,
            "created_at": s.created_at,
            "updated_at": s.updated_at,
            "href": f"/subjects/{s.id}",
            "links": {
                "project": str(s.project_id),
                "collections": [],
                "subject_sets": _str_ids(self._sets_of_subject(s.id)),
            },
        }

    def _member_json(self, m: SetMemberSubjectRecord) -> dict[str, Any]:
        retired_in = [
            str(w)
            for w in self._workflows_of_set(m.subject_set_id)
            if self._is_retired(m.subject_id, w)
        ]
        return {
            "id": str(m.id),
            "state": "active",
            "priority": m.priority,
            "created_at": m.created_at,
            "updated_at": m.updated_at,
            "href": f"/set_member_subjects/{m.id}",
            "links": {
                "subject": str(m.subject_id),
                "subject_set": str(m.subject_set_id),
                "retired_workflows": retired_in,
            },
        }

    def _status_json(self, s: StatusRecord) -> dict[str, Any]:
        return {
            "id": str(s.id),
            "classifications_count": s.classifications_count,
            "retired_at": s.retired_at,
            "retirement_reason": s.retirement_reason,
            "created_at": s.created_at,
            "updated_at": s.updated_at,
            "href": f"/subject_workflow_statuses/{s.id}",
            "links": {"workflow": str(s.workflow_id), "subject": str(s.subject_id)},
        }

    def _classification_json(self, c: ClassificationRecord) -> dict[str, Any]:
        return {
            "id": str(c.id),
            "created_at": c.created_at,
            "updated_at": c.created_at,
            "completed": True,
            "gold_standard": True if c.gold_standard else None,
            "expert_classifier": "expert" if c.expert else None,
            "metadata": c.metadata,
            "annotations": c.annotations,
            "href": f"/classifications/{c.id}",
            "links": {
                "project": str(c.project_id),
                "user": None if c.user_id is None else str(c.user_id),
                "user_group": None,
                "workflow": str(c.workflow_id),
                "subjects": _str_ids(c.subject_ids),
            },
        }

    def _export_json(self, e: ExportRecord, base_url: str) -> dict[str, Any]:
        owner_singular = "project" if e.owner_type == "projects" else "workflow"
        return {
            "id": str(e.id),
            "href": f"/{e.owner_type}/{e.owner_id}/{e.export_type}_export",
            "src": f"{base_url}/media/exports/{e.id}/{owner_singular}-{e.owner_id}-"
            f"{e.export_type}.csv",
            "content_type": "text/csv",
            "media_type": f"{owner_singular}_{e.export_type}_export",
            "external_link": False,
            "metadata": {"state": e.state},
            "created_at": e.created_at,
            "updated_at": e.updated_at,
            "links": {
                "linked": {
                    "href": f"/{e.owner_type}/{e.owner_id}",
                    "id": str(e.owner_id),
                    "type": e.owner_type,
                }
            },
        }

    # ---------------------------------------------------------------- HTTP routing

    def handle(self, request: Request, fault: FaultAction | None = None) -> Response:
        """Route one request. Never raises: errors become ``{"errors": [...]}`` responses."""
        try:
            if request.path.startswith("/api/") or request.path == "/api":
                if JSONAPI_MEDIA_TYPE not in request.headers.get("accept", ""):
                    # Panoptes routes /api only for its JSON-API media type.
                    return error_response(404, "Not Found")
                route_path = request.path[len("/api") :]
                with self.lock:
                    return self._route_api(request, route_path, fault)
            if request.path == "/_sandbox/live":
                # Outside the store lock: stopping waits for the crowd thread, which takes that
                # lock for every turn.
                return self._admin_live(request)
            with self.lock:
                return self._route_other(request, fault)
        except ApiError as exc:
            return error_response(exc.status, exc.message)

    _API_ROUTES: list[tuple[str, str, str]] = [
        ("GET", r"/projects", "list_projects"),
        ("GET", r"/projects/(?P<id>\d+)", "show_project"),
        ("GET", r"/subject_sets", "list_subject_sets"),
        ("POST", r"/subject_sets", "create_subject_set_api"),
        ("GET", r"/subject_sets/(?P<id>[\d,]+)", "show_subject_set"),
        ("PUT", r"/subject_sets/(?P<id>\d+)", "update_subject_set"),
        ("POST", r"/subject_sets/(?P<id>\d+)/links/subjects", "link_subjects_api"),
        (
            "DELETE",
            r"/subject_sets/(?P<id>\d+)/links/subjects/(?P<ids>[\d,]+)",
            "unlink_subjects_api",
        ),
        ("GET", r"/subjects", "list_subjects"),
        ("POST", r"/subjects", "create_subject_api"),
        ("GET", r"/subjects/(?P<id>[\d,]+)", "show_subject"),
        ("PUT", r"/subjects/(?P<id>\d+)", "update_subject"),
        ("DELETE", r"/subjects/(?P<id>\d+)", "delete_subject_api"),
        ("GET", r"/set_member_subjects", "list_members"),
        ("GET", r"/set_member_subjects/(?P<id>\d+)", "show_member"),
        ("PUT", r"/set_member_subjects/(?P<id>\d+)", "update_member"),
        ("GET", r"/workflows", "list_workflows"),
        ("GET", r"/workflows/(?P<id>\d+)", "show_workflow"),
        ("GET", r"/workflow_versions", "list_workflow_versions"),
        ("POST", r"/workflows/(?P<id>\d+)/links/subject_sets", "link_sets_api"),
        ("DELETE", r"/workflows/(?P<id>\d+)/links/subject_sets/(?P<ids>[\d,]+)", "unlink_sets_api"),
        ("POST", r"/workflows/(?P<id>\d+)/retired_subjects", "retire_api"),
        ("POST", r"/workflows/(?P<id>\d+)/unretire_subjects", "unretire_api"),
        ("GET", r"/subject_workflow_statuses", "list_statuses"),
        ("GET", r"/classifications", "list_own_classifications"),
        ("GET", r"/classifications/project", "list_project_classifications"),
        ("GET", r"/classifications/gold_standard", "list_gold_classifications"),
        ("GET", r"/(?P<owner>projects|workflows)/(?P<id>\d+)/(?P<kind>\w+)_export", "show_export"),
        (
            "POST",
            r"/(?P<owner>projects|workflows)/(?P<id>\d+)/(?P<kind>\w+)_export",
            "create_export",
        ),
    ]

    # Writes need a bearer token, as on Panoptes (the sandbox accepts any token).
    _NEEDS_LOGIN = {"POST", "PUT", "DELETE"}

    def _route_api(self, req: Request, path: str, fault: FaultAction | None) -> Response:
        path = path.rstrip("/") or "/"
        method_allowed = False
        for method, pattern, name in self._API_ROUTES:
            match = re.fullmatch(pattern, path)
            if not match:
                continue
            method_allowed = True
            if method != req.method:
                continue
            if req.method in self._NEEDS_LOGIN and not req.bearer:
                return error_response(401, "You must be logged in to access this resource.")
            handler = getattr(self, "_api_" + name)
            return handler(req, fault, **match.groupdict())
        if method_allowed:
            return error_response(405, f"{req.method} not allowed on {path}")
        return error_response(404, "Not Found")

    def _route_other(self, req: Request, fault: FaultAction | None) -> Response:
        path = req.path
        if path == "/users/sign_in" and req.method == "GET":
            token = secrets.token_urlsafe(24)
            self._csrf.add(token)
            return _json_response(200, {}, {"X-CSRF-Token": token})
        if path == "/users/sign_in" and req.method == "POST":
            return self._sign_in(req)
        if path == "/oauth/token" and req.method == "POST":
            return self._oauth_token(req)
        match = re.fullmatch(r"/media/exports/(\d+)/[\w.-]+\.csv", path)
        if match and req.method == "GET":
            record = self.state.exports.get(int(match.group(1)))
            if record is not None:
                self._advance_export(record)
            if record is None or record.content is None:
                return Response(404, b"Not Found", {"Content-Type": "text/plain"})
            return Response(200, record.content.encode(), {"Content-Type": "text/csv"})
        match = re.fullmatch(r"/media/uploads/([\w.-]+)", path)
        if match:
            return self._upload(req, match.group(1))
        if path.startswith("/_sandbox/"):
            return self._admin(req, path[len("/_sandbox/") :])
        return Response(404, b"Not Found", {"Content-Type": "text/plain"})

    # ---------------------------------------------------------------- auth routes

    def _sign_in(self, req: Request) -> Response:
        data = req.json()
        user = data.get("user") if isinstance(data, dict) else None
        if data.get("authenticity_token") not in self._csrf:
            # Rails refuses a sign-in whose token it did not hand out with GET /users/sign_in.
            return _json_response(422, {"error": "Can't verify CSRF token authenticity."})
        if not isinstance(user, dict) or not user.get("login") or not user.get("password"):
            return _json_response(401, {"error": "Invalid login or password."})
        record = self._user_for_login(str(user["login"]))
        session = secrets.token_urlsafe(24)
        self._sessions[session] = record.id
        self._save()
        body = {
            "users": [
                {"id": str(record.id), "login": record.login, "display_name": record.display_name}
            ]
        }
        return _json_response(
            200, body, {"Set-Cookie": f"_sandbox_session={session}; Path=/; HttpOnly"}
        )

    def _oauth_token(self, req: Request) -> Response:
        form = req.form()
        grant = form.get("grant_type", "")
        user_id: int | None = None
        if grant == "password":
            session = req.cookie("_sandbox_session")
            if session not in self._sessions:
                return _json_response(
                    401, {"error": "invalid_grant", "error_description": "sign in first"}
                )
            user_id = self._sessions[session]
        elif grant == "refresh_token":
            old = next(
                (
                    t
                    for t, info in self._tokens.items()
                    if info["refresh_token"] == form.get("refresh_token")
                ),
                None,
            )
            if old is None:
                return _json_response(
                    401, {"error": "invalid_grant", "error_description": "unknown refresh token"}
                )
            user_id = self._tokens.pop(old)["user_id"]
        elif grant != "client_credentials":
            return _json_response(400, {"error": "unsupported_grant_type"})
        token = secrets.token_urlsafe(32)
        refresh = secrets.token_urlsafe(32)
        self._tokens[token] = {"user_id": user_id, "refresh_token": refresh}
        return _json_response(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.token_ttl_s,
                "refresh_token": refresh,
                "scope": "public project",
                "created_at": int(self.clock().timestamp()),
            },
        )

    def _upload(self, req: Request, key: str) -> Response:
        if req.method == "PUT":
            self._uploads[key] = (
                req.headers.get("content-type", "application/octet-stream"),
                req.body,
            )
            return Response(201, b"", {})
        if req.method == "GET" and key in self._uploads:
            content_type, body = self._uploads[key]
            return Response(200, body, {"Content-Type": content_type})
        return Response(404, b"Not Found", {"Content-Type": "text/plain"})

    # ---------------------------------------------------------------- paging helpers

    def _page(
        self,
        req: Request,
        slug: str,
        path: str,
        resources: list[dict[str, Any]],
        fault: FaultAction | None,
        *,
        max_size: int = 100,
    ) -> Response:
        page_size = min(max(_int(req.query.get("page_size", 20), "page_size"), 1), max_size)
        page = max(_int(req.query.get("page", 1), "page"), 1)
        count = len(resources)
        page_count = math.ceil(count / page_size) if count else 0
        chunk = resources[(page - 1) * page_size : page * page_size]
        if fault is not None and fault.kind == "empty_page":
            chunk = []
        elif fault is not None and fault.kind == "repeat_id" and chunk:
            start = (page - 1) * page_size
            chunk = [resources[start - 1] if start > 0 else chunk[0], *chunk]
        params = {k: v for k, v in req.query.items() if k not in ("page", "admin")}
        params["page_size"] = str(page_size)

        def href(n: int | None) -> str | None:
            return (
                None if n is None else f"{path}?{urlencode(sorted({**params, 'page': n}.items()))}"
            )

        empty_fault = fault is not None and fault.kind == "empty_page"
        next_page = page + 1 if page < page_count and not empty_fault else None
        meta = {
            "page": page,
            "page_size": page_size,
            "count": count,
            "include": [],
            "page_count": page_count,
            "previous_page": page - 1 if page > 1 else None,
            "next_page": next_page,
            "first_href": href(1),
            "previous_href": href(page - 1 if page > 1 else None),
            "next_href": href(next_page),
            "last_href": href(page_count or 1),
        }
        return _json_response(
            200, {slug: chunk, "links": {}, "meta": {slug: meta}}, {"ETag": etag_for(chunk)}
        )

    def _show(
        self,
        slug: str,
        resources: list[dict[str, Any]],
        status: int = 200,
        extra: dict[str, str] | None = None,
    ) -> Response:
        headers = {"ETag": etag_for(resources), **(extra or {})}
        return _json_response(status, {slug: resources, "links": {}, "meta": {}}, headers)

    @staticmethod
    def _body(req: Request, slug: str) -> dict[str, Any]:
        data = req.json()
        body = data.get(slug) if isinstance(data, dict) else None
        if not isinstance(body, dict):
            raise ApiError(422, f"param is missing or the value is empty: {slug}")
        return body

    def _check_if_match(self, req: Request, current: dict[str, Any]) -> None:
        given = req.headers.get("if-match")
        if not given:
            raise ApiError(428, "Precondition required: send If-Match with the resource's ETag")
        if given != etag_for([current]):
            raise ApiError(412, "Precondition failed: the resource changed since it was read")

    @staticmethod
    def _link_id(links: Any, name: str) -> int | None:
        if not isinstance(links, dict) or links.get(name) in (None, ""):
            return None
        return _int(links[name], f"links.{name}")

    # ---------------------------------------------------------------- API handlers

    def _api_list_projects(self, req: Request, fault: FaultAction | None) -> Response:
        ids = _id_list(req.query.get("id"), "id")
        items = [
            self._project_json(p)
            for p in sorted(self.state.projects.values(), key=_by_id)
            if ids is None or p.id in ids
        ]
        return self._page(req, "projects", "/projects", items, fault)

    def _api_show_project(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        return self._show("projects", [self._project_json(self._project(int(id)))])

    def _api_list_subject_sets(self, req: Request, fault: FaultAction | None) -> Response:
        ids = _id_list(req.query.get("id"), "id")
        project = req.query.get("project_id")
        workflow = req.query.get("workflow_id")
        name = req.query.get("display_name")
        items = []
        for s in sorted(self.state.subject_sets.values(), key=_by_id):
            if ids is not None and s.id not in ids:
                continue
            if project and s.project_id != _int(project, "project_id"):
                continue
            if workflow and _int(workflow, "workflow_id") not in self._workflows_of_set(s.id):
                continue
            if name is not None and s.display_name != name:
                continue
            items.append(self._subject_set_json(s))
        return self._page(req, "subject_sets", "/subject_sets", items, fault)

    def _api_show_subject_set(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        ids = _id_list(id, "id") or []
        return self._show(
            "subject_sets", [self._subject_set_json(self._subject_set(i)) for i in ids]
        )

    def _api_create_subject_set_api(self, req: Request, fault: FaultAction | None) -> Response:
        body = self._body(req, "subject_sets")
        project_id = self._link_id(body.get("links"), "project")
        if project_id is None:
            raise ApiError(422, "links.project is required")
        if not body.get("display_name"):
            raise ApiError(400, "Validation failed: display_name can't be blank")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise ApiError(422, "metadata must be an object")
        set_id = self.create_subject_set(
            str(body["display_name"]), project_id=project_id, metadata=metadata
        )
        record = self._subject_set_json(self.state.subject_sets[set_id])
        return self._show(
            "subject_sets", [record], 201, {"Location": f"{req.base_url}/api/subject_sets/{set_id}"}
        )

    def _api_update_subject_set(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        subject_set = self._subject_set(int(id))
        self._check_if_match(req, self._subject_set_json(subject_set))
        body = self._body(req, "subject_sets")
        if "display_name" in body:
            subject_set.display_name = str(body["display_name"])
        if "metadata" in body:
            if not isinstance(body["metadata"], dict):
                raise ApiError(422, "metadata must be an object")
            subject_set.metadata = body["metadata"]
        subject_set.updated_at = self.now()
        subject_set.lock_version += 1
        self._save()
        return self._show("subject_sets", [self._subject_set_json(subject_set)])

    def _api_link_subjects_api(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        data = req.json()
        ids = data.get("subjects") if isinstance(data, dict) else None
        if not isinstance(ids, list) or not ids:
            raise ApiError(422, "param is missing or the value is empty: subjects")
        self._link_subjects(int(id), [_int(i, "subjects") for i in ids])
        self._save()
        return self._show(
            "subject_sets", [self._subject_set_json(self.state.subject_sets[int(id)])]
        )

    def _api_unlink_subjects_api(
        self, req: Request, fault: FaultAction | None, id: str, ids: str
    ) -> Response:
        self._subject_set(int(id))
        drop = set(_id_list(ids, "subjects") or [])
        for member in self._members_of_set(int(id)):
            if member.subject_id in drop:
                self._drop_member(member)
        self._save()
        return _no_content()

    def _api_list_subjects(self, req: Request, fault: FaultAction | None) -> Response:
        ids = _id_list(req.query.get("id"), "id")
        set_id = req.query.get("subject_set_id")
        project = req.query.get("project_id")
        workflow = req.query.get("workflow_id")
        # Sandbox extension: metadata.<key>=<value> filters on subject metadata (as text).
        wanted = {
            k[len("metadata.") :]: v for k, v in req.query.items() if k.startswith("metadata.")
        }
        in_set = None
        linked: set[int] = set()
        if set_id:
            in_set = [
                m.subject_id
                for m in sorted(self._members_of_set(_int(set_id, "subject_set_id")), key=_by_id)
            ]
        if workflow:
            linked = set(self.linked_subject_ids(_int(workflow, "workflow_id")))
        candidates = (
            [self.state.subjects[i] for i in in_set]
            if in_set is not None
            else sorted(self.state.subjects.values(), key=_by_id)
        )
        items = []
        for s in candidates:
            if ids is not None and s.id not in ids:
                continue
            if project and s.project_id != _int(project, "project_id"):
                continue
            if workflow and s.id not in linked:
                continue
            if any(str(s.metadata.get(k)) != v for k, v in wanted.items()):
                continue
            items.append(self._subject_json(s))
        return self._page(req, "subjects", "/subjects", items, fault)

    def _api_show_subject(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        out = []
        for i in _id_list(id, "id") or []:
            if i not in self.state.subjects:
                raise ApiError(404, f"Could not find subject with id='{i}'")
            out.append(self._subject_json(self.state.subjects[i]))
        return self._show("subjects", out)

    def _api_create_subject_api(self, req: Request, fault: FaultAction | None) -> Response:
        body = self._body(req, "subjects")
        links = body.get("links") or {}
        project_id = self._link_id(links, "project")
        if project_id is None:
            raise ApiError(422, "links.project is required")
        self._project(project_id)
        locations = self._locations(req, body.get("locations"))
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise ApiError(422, "metadata must be an object")
        set_ids = links.get("subject_sets") or []
        if not isinstance(set_ids, list):
            set_ids = [set_ids]
        for set_id in set_ids:
            self._subject_set(_int(set_id, "links.subject_sets"))
        subject = self._new_subject(project_id, locations, metadata)
        for set_id in set_ids:
            self._link_subjects(_int(set_id, "links.subject_sets"), [subject.id])
        self._save()
        return self._show(
            "subjects",
            [self._subject_json(subject)],
            201,
            {"Location": f"{req.base_url}/api/subjects/{subject.id}"},
        )

    def _locations(self, req: Request, locations: Any) -> list[dict[str, str]]:
        if not isinstance(locations, list) or not locations:
            raise ApiError(422, "locations must be a non-empty list")
        out = []
        for loc in locations:
            if isinstance(loc, dict) and len(loc) == 1:
                out.append({str(k): str(v) for k, v in loc.items()})
            elif isinstance(loc, str) and "/" in loc:
                # A local file: Panoptes answers with a signed URL to PUT the bytes to.
                ext = loc.split("/", 1)[1].split("+")[0]
                out.append({loc: f"{req.base_url}/media/uploads/{uuid.uuid4().hex}.{ext}"})
            else:
                raise ApiError(422, f"invalid location {loc!r}")
        return out

    def _api_update_subject(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        subject = self.state.subjects.get(int(id))
        if subject is None:
            raise ApiError(404, f"Could not find subject with id='{id}'")
        self._check_if_match(req, self._subject_json(subject))
        body = self._body(req, "subjects")
        if "metadata" in body:
            if not isinstance(body["metadata"], dict):
                raise ApiError(422, "metadata must be an object")
            subject.metadata = body["metadata"]
            # SubjectMetadataWorker copies #priority to the subject's set memberships.
            for member in self.state.set_member_subjects.values():
                if member.subject_id == subject.id:
                    member.priority = _priority_of(subject.metadata)
        if "locations" in body:
            subject.locations = self._locations(req, body["locations"])
        subject.updated_at = self.now()
        subject.lock_version += 1
        self._save()
        return self._show("subjects", [self._subject_json(subject)])

    def _api_delete_subject_api(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        subject = self.state.subjects.get(int(id))
        if subject is None:
            raise ApiError(404, f"Could not find subject with id='{id}'")
        self._check_if_match(req, self._subject_json(subject))
        self._delete_subject(subject.id)
        self._save()
        return _no_content()

    def _api_list_members(self, req: Request, fault: FaultAction | None) -> Response:
        set_ids = _id_list(req.query.get("subject_set_id"), "subject_set_id")
        subject_ids = _id_list(req.query.get("subject_id"), "subject_id")
        ids = _id_list(req.query.get("id"), "id")
        if set_ids is not None:
            pool = [m for set_id in set_ids for m in self._members_of_set(set_id)]
        else:
            pool = list(self.state.set_member_subjects.values())
        items = [
            self._member_json(m)
            for m in sorted(pool, key=_by_id)
            if (set_ids is None or m.subject_set_id in set_ids)
            and (subject_ids is None or m.subject_id in subject_ids)
            and (ids is None or m.id in ids)
        ]
        return self._page(req, "set_member_subjects", "/set_member_subjects", items, fault)

    def _api_show_member(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        member = self.state.set_member_subjects.get(int(id))
        if member is None:
            raise ApiError(404, f"Could not find set_member_subject with id='{id}'")
        return self._show("set_member_subjects", [self._member_json(member)])

    def _api_update_member(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        member = self.state.set_member_subjects.get(int(id))
        if member is None:
            raise ApiError(404, f"Could not find set_member_subject with id='{id}'")
        self._check_if_match(req, self._member_json(member))
        body = self._body(req, "set_member_subjects")
        if "priority" in body:
            value = body["priority"]
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise ApiError(422, "priority must be a number or null")
            member.priority = None if value is None else float(value)
        member.updated_at = self.now()
        member.lock_version += 1
        self._save()
        return self._show("set_member_subjects", [self._member_json(member)])

    def _api_list_workflows(self, req: Request, fault: FaultAction | None) -> Response:
        ids = _id_list(req.query.get("id"), "id")
        project = req.query.get("project_id")
        items = [
            self._workflow_json(w)
            for w in sorted(self.state.workflows.values(), key=_by_id)
            if (ids is None or w.id in ids)
            and (not project or w.project_id == _int(project, "project_id"))
        ]
        return self._page(req, "workflows", "/workflows", items, fault, max_size=25)

    def _api_show_workflow(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        return self._show("workflows", [self._workflow_json(self._workflow(int(id)))])

    def _api_list_workflow_versions(self, req: Request, fault: FaultAction | None) -> Response:
        workflow = req.query.get("workflow_id")
        items = [
            self._workflow_version_json(v)
            for v in sorted(self.state.workflow_versions.values(), key=_by_id)
            if not workflow or v.workflow_id == _int(workflow, "workflow_id")
        ]
        return self._page(req, "workflow_versions", "/workflow_versions", items, fault)

    def _api_link_sets_api(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        data = req.json()
        ids = data.get("subject_sets") if isinstance(data, dict) else None
        if not isinstance(ids, list) or not ids:
            raise ApiError(422, "param is missing or the value is empty: subject_sets")
        self._link_sets(int(id), [_int(i, "subject_sets") for i in ids])
        self._save()
        return self._show("workflows", [self._workflow_json(self.state.workflows[int(id)])])

    def _api_unlink_sets_api(
        self, req: Request, fault: FaultAction | None, id: str, ids: str
    ) -> Response:
        self._workflow(int(id))
        for set_id in _id_list(ids, "subject_sets") or []:
            self.unlink_subject_set(int(id), set_id)
        return _no_content()

    def _api_retire_api(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        data = req.json()
        if not isinstance(data, dict):
            raise ApiError(422, "body must be an object")
        ids = data.get("subject_ids")
        if ids is None and data.get("subject_id") is not None:
            ids = [data["subject_id"]]
        if not isinstance(ids, list) or not ids:
            raise ApiError(422, "param is missing or the value is empty: subject_ids")
        reason = data.get("retirement_reason") or "other"
        self._retire(int(id), [_int(i, "subject_ids") for i in ids], str(reason))
        self._save()
        return _no_content()

    def _api_unretire_api(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        data = req.json()
        if not isinstance(data, dict):
            raise ApiError(422, "body must be an object")
        ids = [_int(i, "subject_ids") for i in (data.get("subject_ids") or [])]
        for set_id in data.get("subject_set_ids") or []:
            ids.extend(m.subject_id for m in self._members_of_set(_int(set_id, "subject_set_ids")))
        if not ids and not data.get("subject_set_ids"):
            raise ApiError(422, "param is missing or the value is empty: subject_ids")
        self._unretire(int(id), ids)
        self._save()
        return _no_content()

    def _api_list_statuses(self, req: Request, fault: FaultAction | None) -> Response:
        subject_ids = _id_list(
            req.query.get("subject_ids") or req.query.get("subject_id"), "subject_ids"
        )
        workflow = req.query.get("workflow_id")
        ids = _id_list(req.query.get("id"), "id")
        items = [
            self._status_json(s)
            for s in sorted(self.state.statuses.values(), key=_by_id)
            if (subject_ids is None or s.subject_id in subject_ids)
            and (not workflow or s.workflow_id == _int(workflow, "workflow_id"))
            and (ids is None or s.id in ids)
        ]
        return self._page(
            req, "subject_workflow_statuses", "/subject_workflow_statuses", items, fault
        )

    def _api_list_own_classifications(self, req: Request, fault: FaultAction | None) -> Response:
        # Without a scope Panoptes lists only the caller's own classifications.
        info = self._tokens.get(req.bearer or "")
        user_id = info["user_id"] if info else None
        return self._classification_page(
            req, "/classifications", lambda c: user_id is not None and c.user_id == user_id, fault
        )

    def _api_list_project_classifications(
        self, req: Request, fault: FaultAction | None
    ) -> Response:
        if not req.bearer:
            raise ApiError(401, "You must be logged in to access this resource.")
        return self._classification_page(req, "/classifications/project", lambda c: True, fault)

    def _api_list_gold_classifications(self, req: Request, fault: FaultAction | None) -> Response:
        if not req.query.get("workflow_id"):
            raise ApiError(422, "workflow_id is required")
        return self._classification_page(
            req, "/classifications/gold_standard", lambda c: c.gold_standard, fault
        )

    def _classification_page(
        self,
        req: Request,
        path: str,
        scope: Callable[[ClassificationRecord], bool],
        fault: FaultAction | None,
    ) -> Response:
        """Panoptes' NoCountSerializer paging: count 0, walk ``next_href`` until an empty page."""
        query = req.query
        last_id = query.get("last_id")
        if last_id not in (None, "") and not query.get("project_id"):
            raise ApiError(422, "Project ID required if last_id is included")
        project_id = _int(query["project_id"], "project_id") if query.get("project_id") else None
        workflow_id = (
            _int(query["workflow_id"], "workflow_id") if query.get("workflow_id") else None
        )

        def keep(c: ClassificationRecord) -> bool:
            return (
                (project_id is None or c.project_id == project_id)
                and (workflow_id is None or c.workflow_id == workflow_id)
                and scope(c)
            )

        page_size = min(max(_int(query.get("page_size", 20), "page_size"), 1), 100)
        page = max(_int(query.get("page", 1), "page"), 1)
        params = {k: v for k, v in query.items() if k not in ("page", "admin", "last_id")}
        params["page_size"] = str(page_size)
        table = self.state.classifications
        if last_id not in (None, ""):
            # Keyset: start right after the cursor in the sorted id list, so a page costs
            # O(page) however many classifications are stored (load tests page through 1M).
            cursor = _int(last_id, "last_id")
            start = bisect.bisect_right(self._classification_ids, cursor)
            ids = self._classification_ids
            chunk = []
            for k in range(start, len(ids)):
                if keep(table[ids[k]]):
                    chunk.append(table[ids[k]])
                    if len(chunk) == page_size:
                        break
            previous = None
            if fault is not None and fault.kind == "repeat_id":
                previous = next(
                    (table[ids[k]] for k in range(start - 1, -1, -1) if keep(table[ids[k]])),
                    None,
                )
            page = 1
        else:
            items = [table[cid] for cid in self._classification_ids if keep(table[cid])]
            start = (page - 1) * page_size
            chunk = items[start : start + page_size]
            previous = items[start - 1] if start > 0 and start - 1 < len(items) else None
        if fault is not None and fault.kind == "empty_page":
            chunk = []
        elif fault is not None and fault.kind == "repeat_id" and chunk:
            chunk = [previous or chunk[0], *chunk]
        resources = [self._classification_json(c) for c in chunk]

        def href(extra: dict[str, Any]) -> str:
            return f"{path}?{urlencode(sorted({**params, **extra}.items()))}"

        if not chunk:
            next_href = None
        elif last_id not in (None, ""):
            next_href = href({"last_id": max(c.id for c in chunk)})
        else:
            next_href = href({"page": page + 1})
        meta = {
            "page": page,
            "page_size": page_size,
            "count": 0,
            "include": [],
            "page_count": 0,
            "previous_page": page - 1 if page > 1 else None,
            "next_page": page + 1 if next_href else None,
            "first_href": href({"page": 1}) if last_id in (None, "") else href({}),
            "previous_href": href({"page": page - 1}) if page > 1 else None,
            "next_href": next_href,
            "last_href": None,
        }
        return _json_response(
            200,
            {"classifications": resources, "links": {}, "meta": {"classifications": meta}},
            {"ETag": etag_for(resources)},
        )

    def _api_show_export(
        self, req: Request, fault: FaultAction | None, owner: str, id: str, kind: str
    ) -> Response:
        if kind not in EXPORT_TYPES:
            raise ApiError(404, f"Unknown export type {kind!r}")
        if not req.bearer:
            raise ApiError(401, "You must be logged in to access this resource.")
        record = self.describe_export(kind, owner, int(id))
        if record is None:
            raise ApiError(404, f"No {kind}_export exists for {owner[:-1]} {id}")
        return self._show("media", [self._export_json(record, req.base_url)])

    def _api_create_export(
        self, req: Request, fault: FaultAction | None, owner: str, id: str, kind: str
    ) -> Response:
        data = req.json()
        if not isinstance(data, dict) or not isinstance(data.get("media"), dict):
            raise ApiError(422, "param is missing or the value is empty: media")
        record = self.request_export(kind, owner, int(id), fault=fault)
        return self._show(
            "media",
            [self._export_json(record, req.base_url)],
            201,
            {"Location": f"{req.base_url}/api/{owner}/{id}/{kind}_export"},
        )

    # ---------------------------------------------------------------- admin routes

    def _admin(self, req: Request, route: str) -> Response:
        if route == "faults":
            if req.method == "GET":
                return _json_response(200, {"faults": [asdict(r) for r in self.faults.rules()]})
            if req.method == "DELETE":
                self.faults.clear()
                return _no_content()
            if req.method == "POST":
                data = req.json()
                try:
                    rule = self.faults.add(
                        FaultRule(
                            path=str(data["path"]),
                            actions=[_action(a) for a in data.get("actions") or []],
                            method=str(data.get("method", "*")).upper(),
                            params={k: str(v) for k, v in (data.get("params") or {}).items()},
                            skip=int(data.get("skip", 0)),
                        )
                    )
                except (KeyError, TypeError, ValueError) as exc:
                    raise ApiError(422, f"bad fault rule: {exc}") from exc
                if not rule.actions:
                    raise ApiError(422, "a fault rule needs at least one action")
                return _json_response(201, {"faults": [asdict(rule)]})
        if route == "volunteers" and req.method == "POST":
            data = req.json()
            try:
                crowd = CrowdConfig.from_json(data.get("crowd") or {})
                truth = data.get("truth")
                if truth is not None and not isinstance(truth, dict):
                    raise ValueError("truth must be an object {external_id: [labels]}")
                run = self.run_volunteers(
                    _int(data.get("workflow_id", self.workflow_id), "workflow_id"),
                    crowd=crowd,
                    classifications=data.get("classifications"),
                    truth=truth,
                )
            except (TypeError, ValueError) as exc:
                raise ApiError(422, f"bad crowd: {exc}") from exc
            return _json_response(200, run.summary())
        if route == "state" and req.method == "GET":
            return _json_response(200, self.state.to_json())
        if route == "requests" and req.method == "GET":
            return _json_response(200, {"requests": [asdict(e) for e in self.request_log]})
        return error_response(404, f"Unknown sandbox admin route {route!r}")

    def _admin_live(self, req: Request) -> Response:
        if req.method == "GET":
            return _json_response(200, self.live_crowd_status())
        if req.method == "DELETE":
            self.live_crowd_stop()
            return _json_response(200, self.live_crowd_status())
        if req.method != "POST":
            return error_response(405, f"{req.method} not allowed on /_sandbox/live")
        data = req.json()
        if not isinstance(data, dict):
            raise ApiError(422, "the body must be a JSON object")
        per_minute = data.get("per_minute")
        if isinstance(per_minute, bool) or not isinstance(per_minute, int | float):
            raise ApiError(422, f"per_minute must be a number (0 stops), got {per_minute!r}")
        crowd = data.get("crowd") or {}
        if not isinstance(crowd, dict):
            raise ApiError(422, "crowd must be a JSON object of CrowdConfig fields")
        # Fields left out keep the running crowd's, so {"per_minute": K} only changes the rate.
        running = self._live
        truth: Truth | None = data.get("truth")
        workflow_id = data.get("workflow_id")
        try:
            if running is not None and "crowd" not in data:
                config = running.crowd
            else:
                config = CrowdConfig.from_json(crowd)
            if running is not None and "truth" not in data:
                truth = running.truth
            if running is not None and "workflow_id" not in data:
                workflow_id = running.workflow_id
            self.live_crowd_start(
                per_minute=per_minute,
                crowd=config,
                truth=truth,
                workflow_id=None if workflow_id is None else _int(workflow_id, "workflow_id"),
            )
        except (TypeError, ValueError) as exc:
            raise ApiError(422, f"bad live crowd: {exc}") from exc
        return _json_response(200, self.live_crowd_status())


CLASSIFICATION_EXPORT_COLUMNS = (
    "classification_id",
    "user_name",
    "user_id",
    "user_ip",
    "workflow_id",
    "workflow_name",
    "workflow_version",
    "created_at",
    "gold_standard",
    "expert",
    "metadata",
    "annotations",
    "subject_data",
    "subject_ids",
)
SUBJECT_EXPORT_COLUMNS = (
    "subject_id",
    "project_id",
    "workflow_id",
    "subject_set_id",
    "metadata",
    "locations",
    "classifications_count",
    "retired_at",
    "retirement_reason",
    "created_at",
    "updated_at",
)
WORKFLOW_EXPORT_COLUMNS = (
    "workflow_id",
    "display_name",
    "version",
    "active",
    "classifications_count",
    "pairwise",
    "grouped",
    "prioritized",
    "primary_language",
    "first_task",
    "tutorial_subject_id",
    "retired_set_member_subjects_count",
    "tasks",
    "retirement",
    "aggregation",
    "strings",
    "minor_version",
)


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _priority_of(metadata: dict[str, Any]) -> float | None:
    value = metadata.get("#priority")
    if isinstance(value, bool):
        return None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _next_subject(
    open_ids: list[int], seen: set[int], prioritized: bool, rng: random.Random
) -> int | None:
    """The subject a volunteer gets next: first unseen in priority order, else a random one."""
    if prioritized:
        return next((sid for sid in open_ids if sid not in seen), None)
    # Random selection: a few cheap draws usually hit an unseen subject; scan only when they miss.
    for _ in range(8):
        if not open_ids:
            return None
        sid = open_ids[rng.randrange(len(open_ids))]
        if sid not in seen:
            return sid
    unseen = [sid for sid in open_ids if sid not in seen]
    return rng.choice(unseen) if unseen else None


def _answer_one(
    profile: VolunteerProfile,
    true_idx: set[int],
    n: int,
    rng: random.Random,
    sees: Mapping[int, float] | None = None,
) -> list[int]:
    """One answer of a single-answer question: a true one with the profile's sensitivity (times
    the chance to see the biggest true object, with ``sees``), else another at random (any
    answer for a volunteer who ignores the subject)."""
    p_true = profile.sensitivity * (max(sees.values(), default=1.0) if sees else 1.0)
    if true_idx and not profile.ignores_truth and rng.random() < p_true:
        return [rng.choice(sorted(true_idx))]
    others = [i for i in range(n) if i not in true_idx] or list(range(n))
    return [rng.choice(others if not profile.ignores_truth else list(range(n)))]


def _answer(
    profile: VolunteerProfile,
    true_idx: set[int],
    n: int,
    rng: random.Random,
    sees: Mapping[int, float] | None = None,
) -> list[int]:
    """The answers ticked: each true one with the sensitivity times the chance to see it
    (``sees``: answer index -> probability; 1 when left out), each other one with the false
    positive rate; one draw per answer either way, so sizes change no other draw."""
    ticked = []
    for i in range(n):
        if profile.ignores_truth or i not in true_idx:
            p = profile.false_positive_rate
        else:
            p = profile.sensitivity * (sees.get(i, 1.0) if sees else 1.0)
        if rng.random() < p:
            ticked.append(i)
    return ticked


# --------------------------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------------------------


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    def shutdown(self) -> None:
        # Wake hanging fault handlers so shutdown is not held up by a simulated hang, and stop
        # a live crowd that was started over HTTP with this server.
        self.sandbox._shutdown.set()
        self.sandbox.live_crowd_stop()
        super().shutdown()

    def __enter__(self) -> SandboxServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: SandboxServer
    server_version = "crowdloop-panoptes-sandbox/1.0"
    # HTTP/1.0: one request per connection, so a cut or reset only ever affects one response.
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # The sandbox keeps its own request log; stderr noise would bury test output.
        return

    def _dispatch(self, method: str) -> None:
        sandbox = self.server.sandbox
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        request = Request(
            method=method,
            path=split.path,
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            base_url=f"http://{host}",
        )
        sandbox.base_url = request.base_url
        fault = None
        if not split.path.startswith("/_sandbox/"):
            fault = sandbox.faults.match(method, split.path, query)
        self._log(request, body, fault)
        if fault is not None and fault.kind == "reset":
            self._finish_log(0)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None and fault.kind == "status":
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            message = fault.message or f"Sandbox fault: HTTP {fault.status}"
            self._send(error_response(fault.status, message, headers))
            return
        if fault is not None and fault.kind == "hang":
            sandbox._shutdown.wait(fault.seconds)
        response = sandbox.handle(request, fault)
        if fault is not None and fault.kind == "after":
            # The work is done and stored; only the answer is lost (duplicate-create hazard).
            response = error_response(fault.status, fault.message or "Sandbox fault after commit")
        cut = fault.fraction if fault is not None and fault.kind == "cut" else None
        self._send(response, cut=cut)

    def _log(self, request: Request, body: bytes, fault: FaultAction | None) -> None:
        params = dict(request.query)
        if request.path == "/oauth/token":
            # Keep the grant type for tests; never keep secrets.
            form = request.form()
            params["grant_type"] = form.get("grant_type", "")
        self._entry = RequestLogEntry(
            request.method, request.path, params, 0, fault.kind if fault else None
        )
        with self.server.sandbox.lock:
            self.server.sandbox.request_log.append(self._entry)

    def _finish_log(self, status: int) -> None:
        self._entry.status = status

    def _send(self, response: Response, cut: float | None = None) -> None:
        self._finish_log(response.status)
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if cut is None:
                self.wfile.write(response.body)
            else:
                # Promise the whole body, deliver part of it, hang up: a download cut mid-body.
                self.wfile.write(response.body[: int(len(response.body) * cut)])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
        except (BrokenPipeError, ConnectionResetError, OSError):
            # The client gave up (read timeout during a hang fault); nothing left to do.
            self.close_connection = True


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    sandbox: Sandbox | None = None,
    vocabulary: Sequence[str] | None = None,
    **sandbox_kwargs: Any,
) -> tuple[SandboxServer, threading.Thread]:
    """Start the sandbox on a loopback address in a daemon thread.

    Pass a ready ``sandbox`` or a ``vocabulary`` (plus any ``Sandbox`` keyword). ``port=0`` picks
    a free port; read it back from ``server.endpoint``. Stop with ``server.shutdown()`` and
    ``server.server_close()``.
    """
    if host not in LOOPBACK_HOSTS:
        # The sandbox accepts any credentials, so it must never listen beyond this machine.
        raise ValueError(
            f"the sandbox binds loopback only ({', '.join(LOOPBACK_HOSTS)}), not {host!r}"
        )
    if sandbox is None:
        if vocabulary is None:
            raise ValueError("pass sandbox= or vocabulary=")
        sandbox = Sandbox(vocabulary, **sandbox_kwargs)
    sandbox._shutdown.clear()
    server = SandboxServer((host, port), sandbox)
    sandbox.base_url = server.endpoint
    # A short poll interval keeps shutdown() quick: tests start and stop one server each.
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="panoptes-sandbox",
        daemon=True,
    )
    thread.start()
    return server, thread
