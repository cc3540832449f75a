"""The sandbox's live crowd keeps classifying in the background, as a demo's crowd would.

Most tests run it on a fake clock whose ``sleep`` moves time on at once, so a crowd at two
classifications a minute gets through a round in milliseconds; the HTTP test runs it in real time
at a fast rate. Every test stops its crowd, so no thread outlives its test.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from django.core.management import CommandError, call_command
from panoptes_client import Classification, Panoptes

from annotate.zooniverse.sandbox import (
    CrowdConfig,
    LiveCrowdStatus,
    Sandbox,
    SandboxServer,
    parse_iso,
    serve,
)

VOCABULARY = ["painting", "drawing", "map", "photograph"]
KEYS = ["painting", "drawing", "map", "photo"]
LIVE_THREAD = "sandbox-live-crowd"


class FakeTime:
    """A clock that only moves when the live crowd sleeps; each sleep yields the CPU briefly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.moment = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
        self.slept = 0.0

    def now(self) -> datetime:
        with self._lock:
            return self.moment

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.moment += timedelta(seconds=seconds)
            self.slept += seconds
        time.sleep(0.001)


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the live crowd")
        time.sleep(0.005)


def live_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == LIVE_THREAD and t.is_alive()]


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def sandbox(fake_time: FakeTime) -> Iterator[Sandbox]:
    sandbox = Sandbox(
        VOCABULARY, keys=KEYS, retirement_count=3, clock=fake_time.now, sleep=fake_time.sleep
    )
    yield sandbox
    sandbox.live_crowd_stop()


def linked_subjects(
    sandbox: Sandbox, n: int, *, name: str = "round-1", link: bool = True, truth: list[str] | None
) -> tuple[int, list[int]]:
    """n subjects in a new set; the first has the lowest #priority, so it is shown first."""
    set_id = sandbox.create_subject_set(name)
    ids = []
    for i in range(n):
        metadata: dict[str, object] = {"external_id": f"{name}-item-{i}", "#priority": i + 1}
        if truth is not None:
            metadata["#truth"] = truth
        ids.append(
            sandbox.create_subject(
                {"image/jpeg": f"https://images.example.org/{name}/{i}.jpg"},
                metadata=metadata,
                subject_set_id=set_id,
            )
        )
    if link:
        sandbox.link_subject_set(sandbox.workflow_id, set_id)
    return set_id, ids


def status(sandbox: Sandbox) -> LiveCrowdStatus:
    return sandbox.live_crowd_status()


# ------------------------------------------------------------------------------ the crowd


def test_the_live_crowd_classifies_linked_subjects_one_a_gap_until_they_retire(
    sandbox: Sandbox,
) -> None:
    _, ids = linked_subjects(sandbox, 4, truth=["map"])
    sandbox.live_crowd_start(per_minute=2, crowd=CrowdConfig(n_volunteers=5, seed=1))
    wait_for(lambda: status(sandbox)["idle"] and status(sandbox)["classifications"] == 12)

    made = sandbox.classifications()
    assert len(made) == 12  # 4 subjects x retirement 3, and nothing after
    # Prioritized selection: each vote goes to the open subject with the lowest #priority that
    # its volunteer has not classified yet, and no volunteer sees a subject twice.
    counts = dict.fromkeys(ids, 0)
    seen: dict[str, set[int]] = {}
    for c in made:
        mine = seen.setdefault(c.user_name, set())
        expected = next(sid for sid in ids if counts[sid] < 3 and sid not in mine)
        assert c.subject_ids == [expected]
        counts[expected] += 1
        mine.add(expected)
    for sid in ids:
        subject_status = sandbox.status(sid)
        assert subject_status is not None
        assert subject_status.classifications_count == 3
        assert subject_status.retirement_reason == "classification_count"
    # Two a minute: 30 s apart, give or take the 10 % jitter.
    times = [parse_iso(c.created_at) for c in made]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    assert all(27 <= gap <= 33 for gap in gaps), gaps
    assert len(set(gaps)) > 1  # jittered, not a metronome

    now = status(sandbox)
    assert now["running"] and now["per_minute"] == 2
    assert (now["retired"], now["open_subjects"], now["volunteers"]) == (4, 0, 5)
    assert now["idle_reason"] is not None and "no open subject" in now["idle_reason"]
    assert now["last_at"] == made[-1].created_at
    assert now["error"] is None


def test_the_live_crowd_meets_the_volunteers_run_volunteers_recruits(
    fake_time: FakeTime, sandbox: Sandbox
) -> None:
    crowd = CrowdConfig(n_volunteers=6, seed=4)
    scripted = Sandbox(VOCABULARY, keys=KEYS, retirement_count=3)
    linked_subjects(scripted, 2, truth=["map"])
    expected = {(v.name, v.profile) for v in scripted.run_volunteers(crowd=crowd).volunteers}

    linked_subjects(sandbox, 2, truth=["map"])
    sandbox.live_crowd_start(per_minute=60, crowd=crowd)
    wait_for(lambda: status(sandbox)["retired"] == 2)
    sandbox.live_crowd_stop()
    assert {(c.user_name, c.profile) for c in sandbox.classifications()} <= expected
    assert {(v.name, v.profile) for v in sandbox.volunteers()} == expected


def test_subjects_retired_by_the_app_are_skipped(sandbox: Sandbox) -> None:
    _, (settled, open_one) = linked_subjects(sandbox, 2, truth=["map"])
    sandbox.retire(sandbox.workflow_id, [settled], reason="consensus")
    sandbox.live_crowd_start(per_minute=30, crowd=CrowdConfig(n_volunteers=4, seed=2))
    wait_for(lambda: status(sandbox)["retired"] == 1)
    assert {c.subject_ids[0] for c in sandbox.classifications()} == {open_one}


def test_it_idles_without_an_open_subject_and_starts_on_a_set_linked_later(
    fake_time: FakeTime, sandbox: Sandbox
) -> None:
    sandbox.live_crowd_start(per_minute=1, crowd=CrowdConfig(n_volunteers=4, seed=3))
    wait_for(lambda: status(sandbox)["idle"])
    set_id, ids = linked_subjects(sandbox, 2, truth=["drawing"], link=False)
    # A set that exists but is not linked gives the crowd nothing to do.
    slept = fake_time.slept
    wait_for(lambda: fake_time.slept >= slept + 10)
    idle = status(sandbox)
    assert idle["running"] and idle["idle"] and idle["classifications"] == 0
    assert idle["idle_reason"] is not None and "no open subject" in idle["idle_reason"]

    linked_at = fake_time.now()
    sandbox.link_subject_set(sandbox.workflow_id, set_id)
    wait_for(lambda: status(sandbox)["classifications"] >= 1)
    first = sandbox.classifications()[0]
    # Idle, it looks again every second: the first vote comes at once, not a minute later.
    assert parse_iso(first.created_at) - linked_at <= timedelta(seconds=2)
    wait_for(lambda: status(sandbox)["retired"] == 2)
    # It notices on its next look that nothing is open any more.
    wait_for(lambda: status(sandbox)["idle"])
    assert {c.subject_ids[0] for c in sandbox.classifications()} == set(ids)


def test_it_reads_the_truth_from_an_external_id_mapping(sandbox: Sandbox) -> None:
    sandbox.set_retirement(sandbox.workflow_id, 10)
    # The mapping wins over #truth; a subject it does not list falls back to #truth.
    _, ids = linked_subjects(sandbox, 3, truth=["painting"])
    truth = {"round-1-item-0": ["photo"], "round-1-item-1": ["drawing", "Map"]}
    careful = CrowdConfig(n_volunteers=10, mix={"careful": 1.0}, anonymous_share=0.0, seed=5)
    sandbox.live_crowd_start(per_minute=60, crowd=careful, truth=truth)
    wait_for(lambda: status(sandbox)["retired"] == 3)
    sandbox.live_crowd_stop()

    def ticks(subject_id: int) -> list[list[int]]:
        return [
            c.annotations[0]["value"]
            for c in sandbox.classifications()
            if c.subject_ids == [subject_id]
        ]

    expected = {ids[0]: {3}, ids[1]: {1, 2}, ids[2]: {0}}
    for sid, true_answers in expected.items():
        answers = ticks(sid)
        assert len(answers) == 10
        exact = sum(set(a) == true_answers for a in answers)
        assert exact >= 7, (sid, answers)  # careful: 95 % sensitivity, 1 % false positives
        false_ticks = sum(len(set(a) - true_answers) for a in answers)
        assert false_ticks <= 2, (sid, answers)


def test_run_volunteers_takes_the_same_external_id_mapping(sandbox: Sandbox) -> None:
    _, ids = linked_subjects(sandbox, 1, truth=None)
    experts = CrowdConfig(n_volunteers=3, mix={"expert": 1.0}, seed=1)
    sandbox.run_volunteers(crowd=experts, truth={"round-1-item-0": ["photo"]})
    assert [c.annotations[0]["value"] for c in sandbox.classifications()] == [[3]] * 3


def test_stop_stops_it_and_no_classification_follows(sandbox: Sandbox) -> None:
    linked_subjects(sandbox, 50, truth=["map"])
    sandbox.live_crowd_start(per_minute=120, crowd=CrowdConfig(n_volunteers=5, seed=6))
    wait_for(lambda: status(sandbox)["classifications"] >= 3)
    sandbox.live_crowd_stop()
    stopped = status(sandbox)
    count = len(sandbox.classifications())
    assert not stopped["running"] and stopped["per_minute"] == 0
    assert stopped["classifications"] == count
    assert live_threads() == []
    time.sleep(0.1)
    assert len(sandbox.classifications()) == count
    sandbox.live_crowd_stop()  # stopping twice is fine


def test_a_zero_rate_stops_it_and_bad_settings_are_refused(sandbox: Sandbox) -> None:
    linked_subjects(sandbox, 50, truth=["map"])
    sandbox.live_crowd_start(per_minute=120, crowd=CrowdConfig(n_volunteers=5, seed=6))
    wait_for(lambda: status(sandbox)["classifications"] >= 1)
    sandbox.live_crowd_start(per_minute=0)
    assert not status(sandbox)["running"] and live_threads() == []
    with pytest.raises(ValueError, match="per_minute"):
        sandbox.live_crowd_start(per_minute=-1)
    with pytest.raises(ValueError, match="unknown volunteer profiles"):
        sandbox.live_crowd_start(per_minute=5, crowd=CrowdConfig(mix={"angel": 1.0}))
    assert not status(sandbox)["running"]


# ------------------------------------------------------------------------------ over HTTP


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    real = Sandbox(VOCABULARY, keys=KEYS, retirement_count=3)  # real time
    server, thread = serve("127.0.0.1", 0, sandbox=real)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)
    assert live_threads() == []  # the server's shutdown stops a crowd started over HTTP


def test_the_http_route_starts_reports_and_stops_it_and_the_client_pulls_its_votes(
    server: SandboxServer,
) -> None:
    sandbox = server.sandbox
    linked_subjects(sandbox, 10, truth=["map"])
    live = server.endpoint + "/_sandbox/live"
    assert requests.get(live, timeout=5).json()["running"] is False

    started = requests.post(
        live, json={"per_minute": 3000, "crowd": {"n_volunteers": 4, "seed": 2}}, timeout=5
    )
    assert started.status_code == 200
    assert started.json()["running"] is True and started.json()["per_minute"] == 3000
    wait_for(lambda: requests.get(live, timeout=5).json()["classifications"] >= 5)

    Panoptes.connect(endpoint=server.endpoint, client_id="live", client_secret="any")
    try:
        # The app's pull, while the crowd keeps going: keyset pages, ids only ever grow.
        first = [
            int(c.id)
            for c in Classification.where(scope="project", project_id=1, last_id=0, page_size=4)
        ]
        assert first == sorted(set(first)) and len(first) >= 5

        # Only the rate changes: the same four volunteers carry on.
        changed = requests.post(live, json={"per_minute": 1500}, timeout=5).json()
        assert changed["running"] is True and changed["per_minute"] == 1500
        assert changed["volunteers"] == 4
        stopped = requests.post(live, json={"per_minute": 0}, timeout=5).json()
        assert stopped["running"] is False and stopped["per_minute"] == 0

        rest = [
            int(c.id)
            for c in Classification.where(
                scope="project", project_id=1, last_id=first[-1], page_size=4
            )
        ]
    finally:
        Panoptes._local.panoptes_client = None
    made = [c.id for c in sandbox.classifications()]
    assert first + rest == made
    assert requests.get(live, timeout=5).json()["classifications"] == len(made)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"per_minute": "fast"}, "per_minute must be a number"),
        ({"per_minute": -1}, "per_minute must be a finite number"),
        ({"per_minute": 5, "crowd": {"mix": {"angel": 1}}}, "unknown volunteer profiles"),
        ({"per_minute": 5, "crowd": [1]}, "crowd must be a JSON object"),
        ({"per_minute": 5, "workflow_id": 9}, "Could not find workflow"),
    ],
)
def test_the_http_route_refuses_bad_settings(
    server: SandboxServer, body: dict[str, object], message: str
) -> None:
    response = requests.post(server.endpoint + "/_sandbox/live", json=body, timeout=5)
    assert response.status_code in (404, 422)
    assert message in response.json()["errors"][0]["message"]
    assert server.sandbox.live_crowd_status()["running"] is False


# ------------------------------------------------------------------------------ the command


@pytest.mark.django_db
def test_the_command_starts_a_live_crowd_with_the_truth_file_and_stops_it_on_exit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from annotate.management.commands import zooniverse_sandbox as command
    from annotate.models import Concept

    Concept.objects.create(key="painting", label="Painting", position=1)
    Concept.objects.create(key="map", label="Map", position=2)
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"item-1": ["painting"], "item-2": ["unicorn"]}))
    calls: list[dict[str, object]] = []
    original = Sandbox.live_crowd_start

    def spy(self: Sandbox, **kwargs: object) -> None:
        calls.append(kwargs)
        original(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Sandbox, "live_crowd_start", spy)
    seen: dict[str, object] = {}

    def run_briefly(server: SandboxServer, thread: object) -> None:
        sandbox = server.sandbox
        seen["sandbox"] = sandbox
        set_id = sandbox.create_subject_set("s")
        sandbox.create_subject(
            {"image/jpeg": "https://x/1.jpg"},
            metadata={"external_id": "item-1"},
            subject_set_id=set_id,
        )
        sandbox.link_subject_set(sandbox.workflow_id, set_id)
        live = server.endpoint + "/_sandbox/live"
        wait_for(lambda: requests.get(live, timeout=5).json()["classifications"] >= 2)
        seen["status"] = requests.get(live, timeout=5).json()

    monkeypatch.setattr(command, "wait_until_interrupted", run_briefly)
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "zooniverse_sandbox",
        "--port=0",
        "--retirement-count=2",
        "--volunteers-per-minute=600",
        f"--truth={truth}",
        "--crowd-seed=5",
        "--crowd-size=3",
        stdout=out,
        stderr=err,
    )
    (kwargs,) = calls
    assert kwargs["per_minute"] == 600
    assert kwargs["truth"] == {"item-1": ["painting"], "item-2": ["unicorn"]}
    crowd = kwargs["crowd"]
    assert isinstance(crowd, CrowdConfig) and (crowd.seed, crowd.n_volunteers) == (5, 3)
    live_status = seen["status"]
    assert isinstance(live_status, dict) and live_status["per_minute"] == 600
    assert live_status["retired"] == 1

    lines = out.getvalue().splitlines()
    assert lines[1:3] == ["PANOPTES_PROJECT_ID=1", "PANOPTES_WORKFLOW_ID=1"]
    assert lines[4].startswith(
        f"# live crowd: 600 classifications a minute by 3 volunteers (seed 5, truth from {truth}"
    )
    assert "unicorn" in err.getvalue()
    sandbox = seen["sandbox"]
    assert isinstance(sandbox, Sandbox) and sandbox.live_crowd_status()["running"] is False
    assert live_threads() == []


@pytest.mark.django_db
def test_the_command_says_the_live_crowd_is_off_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from annotate.management.commands import zooniverse_sandbox as command

    monkeypatch.setattr(command, "wait_until_interrupted", lambda server, thread: None)
    out = io.StringIO()
    call_command("zooniverse_sandbox", "--port=0", stdout=out)
    assert out.getvalue().splitlines()[4].startswith("# live crowd: off")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no such file"),
        ("{not json", "not valid JSON"),
        ('["item-1"]', "must hold a JSON object"),
        ('{"item-1": "painting"}', "the entry for 'item-1' must be a list"),
        ('{"item-1": [3]}', "the entry for 'item-1' must be a list"),
    ],
)
def test_the_command_refuses_a_bad_truth_file(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "truth.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CommandError, match="truth") as refused:
        call_command(
            "zooniverse_sandbox", "--port=0", "--volunteers-per-minute=5", f"--truth={path}"
        )
    assert str(path) in str(refused.value)
    assert problem in str(refused.value)


def test_the_command_refuses_a_negative_rate() -> None:
    with pytest.raises(CommandError, match="--volunteers-per-minute must be 0 or more"):
        call_command("zooniverse_sandbox", "--port=0", "--volunteers-per-minute=-2")
