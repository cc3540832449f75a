"""The Zooniverse client wrapper, with the real panoptes-client talking to the local sandbox.

Sleeps go to a fake clock, so backoff and ``Retry-After`` cost no wall time; hangs use short
read timeouts.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from annotate.zooniverse.client import (
    ExportIncomplete,
    ExportNotReady,
    ExportStale,
    ExportTooLarge,
    FatalError,
    NotFoundError,
    RetryPolicy,
    TransientError,
    ZooniverseClient,
    connect,
)
from annotate.zooniverse.sandbox import Sandbox, SandboxServer, serve
from tests.fake_clock import FakeClock

LABELS = ["painting", "drawing", "map", "photograph"]
PASSWORD = "a-secret-test-password"


@dataclass
class Env:
    sandbox: Sandbox
    server: SandboxServer
    clock: FakeClock

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def client(self, **policy: float) -> ZooniverseClient:
        defaults = {"connect_timeout_s": 1.0, "read_timeout_s": 1.0, "budget_s": 600.0}
        return connect(
            endpoint=self.endpoint,
            client_id="",
            client_secret="",
            username="crowdloop-bot",
            password=PASSWORD,
            policy=RetryPolicy(**{**defaults, **policy}),  # type: ignore[arg-type]
            sleep=self.clock.sleep,
            clock=self.clock,
            rng=random.Random(0),
        )

    def requests(self, path: str, method: str | None = None) -> list:
        return [
            e
            for e in self.sandbox.request_log
            if e.path == path and (method is None or e.method == method)
        ]


@pytest.fixture
def env():
    sandbox = Sandbox(LABELS, keys=LABELS, retirement_count=5)
    server, _ = serve("127.0.0.1", 0, sandbox=sandbox)
    try:
        yield Env(sandbox=sandbox, server=server, clock=FakeClock())
    finally:
        server.shutdown()
        server.server_close()


def _seed(env: Env, n_subjects: int = 6, n_classifications: int = 25) -> int:
    set_id = env.sandbox.create_subject_set("seed")
    for i in range(n_subjects):
        env.sandbox.create_subject(
            {"image/jpeg": f"https://example.org/{i}.jpg"},
            metadata={"external_id": f"item-{i}", "#truth": [LABELS[i % len(LABELS)]]},
            subject_set_id=set_id,
        )
    env.sandbox.link_subject_set(env.sandbox.workflow_id, set_id)
    env.sandbox.run_volunteers(env.sandbox.workflow_id, classifications=n_classifications)
    return set_id


def _all_ids(client: ZooniverseClient, env: Env, page_size: int = 5) -> list[int]:
    return [
        int(row["id"])
        for page in client.classifications_pages(
            project_id=env.sandbox.project_id,
            workflow_id=env.sandbox.workflow_id,
            last_id=0,
            page_size=page_size,
        )
        for row in page.rows
    ]


# -- connecting ------------------------------------------------------------------------------


def test_password_login_signs_in_and_gets_a_password_grant_token(env):
    client = env.client()
    client.workflow_get(env.sandbox.workflow_id)
    tokens = env.requests("/oauth/token", "POST")
    assert env.requests("/users/sign_in", "POST")
    assert [t.query["grant_type"] for t in tokens] == ["password"]
    assert client.panoptes.logged_in


def test_client_credentials_get_a_token_without_signing_in(env):
    client = connect(
        endpoint=env.endpoint,
        client_id="crowdloop-app",
        client_secret="a-client-secret",
        username="",
        password="",
        policy=RetryPolicy(read_timeout_s=1.0),
        sleep=env.clock.sleep,
        clock=env.clock,
    )
    page = client.classifications_page(project_id=1, workflow_id=1, last_id=0)
    assert page is None  # logged in (no 401), and nothing classified yet
    assert [t.query["grant_type"] for t in env.requests("/oauth/token")] == ["client_credentials"]
    assert not env.requests("/users/sign_in", "POST")


def test_an_anonymous_client_may_not_read_project_classifications(env):
    client = connect(endpoint=env.endpoint, client_id="", client_secret="", username="",
                     password="", sleep=env.clock.sleep, clock=env.clock)
    with pytest.raises(FatalError) as caught:
        client.classifications_page(project_id=1, workflow_id=1, last_id=0)
    assert caught.value.status == 401
    assert not env.requests("/oauth/token")


def test_tokens_and_passwords_never_reach_the_log(env, caplog):
    caplog.set_level(logging.DEBUG)
    env.sandbox.faults.fail(r"/api/workflows/1$", 503)
    client = env.client()
    client.workflow_get(1)
    token = client.panoptes.bearer_token
    assert token
    assert token not in caplog.text
    assert PASSWORD not in caplog.text
    assert "Bearer" not in caplog.text
    assert "retrying" in caplog.text  # the 503 was logged, by method and path only


# -- timeouts and retries --------------------------------------------------------------------


def test_a_5xx_is_retried_with_jittered_backoff_until_it_succeeds(env):
    env.sandbox.faults.fail(r"/api/workflows/1$", 500, 502, 503)
    client = env.client()
    assert client.workflow_get(1)["id"] == "1"
    assert len(env.requests("/api/workflows/1")) == 4
    assert len(env.clock.sleeps) == 3
    # Exponential ceilings 1, 2, 4 s with jitter: each wait is below its ceiling, not all equal.
    assert all(0 < s <= 2**i for i, s in enumerate(env.clock.sleeps))
    assert len(set(env.clock.sleeps)) == 3


def test_the_librarys_own_retry_never_repeats_a_request(env):
    # panoptes-client would retry this GET 5 times with 5 s sleeps; ours is the only loop.
    env.sandbox.faults.fail(r"/api/workflows/1$", *([500] * 10))
    client = env.client(max_attempts=2)
    with pytest.raises(TransientError):
        client.workflow_get(1)
    assert len(env.requests("/api/workflows/1")) == 2


def test_a_4xx_other_than_429_fails_at_once_without_a_retry(env):
    client = env.client()
    with pytest.raises(NotFoundError) as caught:
        client.get("/subjects/99999999")
    assert caught.value.status == 404
    assert len(env.requests("/api/subjects/99999999")) == 1
    assert env.clock.sleeps == []


def test_a_429_honours_retry_after(env):
    env.sandbox.faults.throttle(r"/api/workflows/1$", retry_after=7)
    client = env.client()
    assert client.workflow_get(1)["id"] == "1"
    assert env.clock.sleeps and env.clock.sleeps[0] >= 7


def test_a_retry_after_beyond_the_budget_gives_up_at_once_and_says_how_long(env):
    env.sandbox.faults.throttle(r"/api/workflows/1$", retry_after=900)
    client = env.client(budget_s=120)
    with pytest.raises(TransientError) as caught:
        client.workflow_get(1)
    assert caught.value.retry_after == 900
    assert env.clock.sleeps == []


def test_retries_stop_inside_the_wall_budget(env):
    env.sandbox.faults.fail(r"/api/workflows/1$", *([500] * 50))
    client = env.client(budget_s=20, max_attempts=50, backoff_base_s=1, backoff_max_s=8)
    with pytest.raises(TransientError):
        client.workflow_get(1)
    assert sum(env.clock.sleeps) <= 20
    assert client.time_left() >= 0


def test_a_dropped_connection_is_retried(env):
    env.sandbox.faults.reset(r"/api/workflows/1$", times=2)
    client = env.client()
    assert client.workflow_get(1)["id"] == "1"
    assert len(env.requests("/api/workflows/1")) == 3


def test_a_hanging_request_ends_at_the_read_timeout_and_is_retried(env):
    env.sandbox.faults.hang(r"/api/workflows/1$", seconds=5)
    client = env.client(read_timeout_s=0.3)
    started = time.monotonic()
    assert client.workflow_get(1)["id"] == "1"
    assert time.monotonic() - started < 3
    assert len(env.requests("/api/workflows/1")) == 2


# -- keyset paging ---------------------------------------------------------------------------


def test_classification_pages_follow_the_stored_last_id_not_the_library_iterator(env):
    _seed(env, n_classifications=23)
    client = env.client()
    ids = _all_ids(client, env, page_size=5)
    assert ids == [c.id for c in env.sandbox.classifications()]
    sent = [e.query for e in env.requests("/api/classifications/project")]
    assert [int(p["last_id"]) for p in sent] == [0, *ids[4::5], ids[-1]]
    assert all("page" not in p and p["workflow_id"] == "1" for p in sent)


def test_a_failing_page_in_the_middle_is_retried_not_lost(env):
    _seed(env, n_classifications=23)
    env.sandbox.faults.fail(r"/classifications/project", 500, 500, skip=2)
    client = env.client()
    assert _all_ids(client, env) == [c.id for c in env.sandbox.classifications()]


def test_a_page_repeating_an_id_yields_each_id_once(env):
    _seed(env, n_classifications=23)
    env.sandbox.faults.repeat_id(r"/classifications/project", skip=1)
    client = env.client()
    ids = _all_ids(client, env)
    assert ids == [c.id for c in env.sandbox.classifications()]


# -- creates ---------------------------------------------------------------------------------


def _create(client: ZooniverseClient, set_id: int, external_id: str = "item-1") -> dict:
    return client.subject_create(
        project_id=1,
        subject_set_id=set_id,
        external_id=external_id,
        locations=[{"image/jpeg": "https://example.org/1.jpg"}],
        metadata={"#priority": 1},
    )


def test_a_create_stored_before_its_answer_was_lost_is_found_not_sent_again(env):
    set_id = env.sandbox.create_subject_set("round-1")
    env.sandbox.faults.fail_after_commit(r"/api/subjects$", 502)
    client = env.client()
    subject = _create(client, set_id)
    assert len(env.sandbox.subjects()) == 1
    assert int(subject["id"]) == env.sandbox.subjects()[0].id
    assert len(env.requests("/api/subjects", "POST")) == 1


def test_a_create_that_failed_before_being_stored_is_sent_again(env):
    set_id = env.sandbox.create_subject_set("round-1")
    env.sandbox.faults.fail(r"/api/subjects$", 503, method="POST")
    client = env.client()
    _create(client, set_id)
    assert len(env.sandbox.subjects()) == 1
    assert len(env.requests("/api/subjects", "POST")) == 2
    assert env.sandbox.find_subjects(external_id="item-1")[0].metadata["#priority"] == 1


def test_a_created_subject_is_in_its_subject_set(env):
    set_id = env.sandbox.create_subject_set("round-1")
    subject = _create(env.client(), set_id)
    assert [m.subject_id for m in env.sandbox.set_members(set_id)] == [int(subject["id"])]


# -- exports ---------------------------------------------------------------------------------


def test_a_fresh_export_is_streamed_to_a_file(env, tmp_path: Path):
    _seed(env, n_classifications=10)
    client = env.client()
    path = client.export_fetch(resource="projects", resource_id=1, directory=tmp_path,
                               max_bytes=10**7)
    text = path.read_text()
    assert text.startswith("classification_id,")
    assert len(text.strip().splitlines()) == 11
    assert list(tmp_path.iterdir()) == [path]


def test_an_export_stuck_creating_is_refused_at_our_own_deadline(env, tmp_path: Path):
    env.sandbox.faults.export_stuck()
    client = env.client()
    with pytest.raises(ExportNotReady):
        client.export_fetch(resource="projects", resource_id=1, directory=tmp_path,
                            max_bytes=10**7, deadline_s=60, poll_s=10)
    assert 60 <= sum(env.clock.sleeps) <= 70
    assert list(tmp_path.iterdir()) == []


def test_an_export_older_than_the_request_is_refused(env, tmp_path: Path):
    _seed(env, n_classifications=5)
    env.sandbox.faults.export_stale()
    client = env.client()
    with pytest.raises(ExportStale):
        client.export_fetch(resource="projects", resource_id=1, directory=tmp_path,
                            max_bytes=10**7, deadline_s=30, poll_s=10)
    assert list(tmp_path.iterdir()) == []


def test_a_download_cut_mid_body_leaves_no_file(env, tmp_path: Path):
    _seed(env, n_classifications=10)
    env.sandbox.faults.cut_download(0.6)
    client = env.client()
    with pytest.raises(ExportIncomplete):
        client.export_fetch(resource="projects", resource_id=1, directory=tmp_path,
                            max_bytes=10**7)
    assert list(tmp_path.iterdir()) == []


def test_an_export_over_the_byte_cap_leaves_no_file(env, tmp_path: Path):
    _seed(env, n_classifications=10)
    client = env.client()
    with pytest.raises(ExportTooLarge):
        client.export_fetch(resource="projects", resource_id=1, directory=tmp_path,
                            max_bytes=200)
    assert list(tmp_path.iterdir()) == []


# -- retirement ------------------------------------------------------------------------------


def test_retire_and_unretire_go_out_in_batches_of_one_hundred(env):
    set_id = env.sandbox.create_subject_set("many")
    ids = [
        env.sandbox.create_subject({"image/jpeg": f"https://example.org/{i}.jpg"},
                                   metadata={"external_id": f"i{i}"}, subject_set_id=set_id)
        for i in range(150)
    ]
    env.sandbox.link_subject_set(1, set_id)
    client = env.client()
    assert len(client.subjects_in_set(set_id)) == 150  # two pages, both fetched by us
    client.subjects_retire(workflow_id=1, subject_ids=ids, reason="consensus")
    assert len(env.requests("/api/workflows/1/retired_subjects", "POST")) == 2
    assert all(env.sandbox.status(i).retirement_reason == "consensus" for i in ids)
    statuses = client.subject_workflow_statuses(workflow_id=1, subject_ids=ids)
    assert len(statuses) == 150 and all(s["retired_at"] for s in statuses)
    client.subjects_unretire(workflow_id=1, subject_ids=ids)
    assert len(env.requests("/api/workflows/1/unretire_subjects", "POST")) == 2
    assert all(env.sandbox.status(i).retired_at is None for i in ids)


def test_an_unknown_retirement_reason_is_refused_before_any_request(env):
    client = env.client()
    with pytest.raises(ValueError):
        client.subjects_retire(workflow_id=1, subject_ids=[1], reason="bored")
    assert not env.requests("/api/workflows/1/retired_subjects")
