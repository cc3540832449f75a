"""Choosing the next round through the API: who may ask, what the task makes, and bad input."""

from __future__ import annotations

import json

import pytest

from annotate.models import Round
from tests.clients import as_user
from tests.factories import WorkflowFactory
from tests.training.builders import write_mosaic_items
from training import tasks
from training.models import RoundRequest
from training.services.round_requests import round_request_execute

pytestmark = pytest.mark.usefixtures("fresh_throttles")

URL = "/api/v1/round-requests/"


@pytest.fixture
def pool(db):
    """Thirty unshown mosaics and no model yet: a round is a cold start (no training needed)."""
    return write_mosaic_items(30, curated=0)


@pytest.mark.parametrize("role", ["staff", "admin"])
def test_staff_and_admins_ask_for_a_round_and_the_task_builds_it(
    role, people, pool, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = as_user(people[role]).post(URL, {"size": 5, "seed": 2}, format="json")
    assert response.status_code == 202, response.content
    made = response.json()
    assert made["requested_by"] == role and made["params"]["size"] == 5
    body = as_user(people["viewer"]).get(f"{URL}{made['id']}/").json()
    assert body["status"] == "succeeded", body
    round_ = Round.objects.get()
    assert body["round"] == {
        "id": round_.pk, "number": 1, "name": "round-1", "strategy": "typical_diverse",
        "status": "draft",
    }
    assert round_.picks.count() == 5
    assert "5 of 30 candidates" in body["summary"]
    listing = as_user(people["viewer"]).get(URL)
    assert listing.status_code == 200 and listing.json()["results"][0]["id"] == made["id"]


@pytest.mark.parametrize("role", ["viewer", "curator", None])
def test_curators_viewers_and_anonymous_clients_cannot_ask_for_a_round(role, people, pool):
    response = as_user(people.get(role)).post(URL, {"size": 5}, format="json")
    assert response.status_code in ((401, 403) if role is None else (403,))
    assert not RoundRequest.objects.exists() and not Round.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "size"),
        ({"size": 0}, "size"),
        ({"size": "many"}, "size"),
        ({"size": 5, "strategy": "clairvoyant"}, "strategy"),
        ({"size": 5, "random_share": 1.5}, "random_share"),
        ({"size": 5, "seed": -1}, "seed"),
        ({"size": 5, "model_version": 999}, "model_version"),
        ({"size": 5, "push": True}, "push"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(body, field, people, pool):
    response = as_user(people["staff"]).post(URL, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not RoundRequest.objects.exists()


def test_the_task_builds_one_round_however_often_its_message_arrives(people, pool):
    request = RoundRequest.objects.create(params={"size": 4, "seed": 1})
    first = tasks.round_select_task.apply(kwargs={"request_id": request.pk}).get()
    second = tasks.round_select_task.apply(kwargs={"request_id": request.pk}).get()
    assert first["status"] == second["status"] == "succeeded"
    assert first["round_id"] == second["round_id"] == Round.objects.get().pk
    request.refresh_from_db()
    assert request.attempts == 1 and request.round.picks.count() == 4


def test_a_request_that_cannot_be_served_fails_with_the_reason(db):
    request = RoundRequest.objects.create(params={"size": 4})
    outcome = round_request_execute(request_id=request.pk)
    request.refresh_from_db()
    assert outcome.status == request.status == "failed"
    assert "no item is waiting" in request.error
    assert not Round.objects.exists()


@pytest.fixture
def sandbox_workflow(db, settings):
    """A sandbox serving a workflow of the digits, with crowdloop configured to reach it."""
    from annotate.zooniverse.sandbox import Sandbox, serve
    from ml.mosaics import DIGIT_KEYS

    sandbox = Sandbox(list(DIGIT_KEYS), keys=list(DIGIT_KEYS))
    server, _ = serve("127.0.0.1", 0, sandbox=sandbox)
    settings.PANOPTES_ENDPOINT = server.endpoint
    settings.PANOPTES_PROJECT_ID = str(sandbox.project_id)
    settings.PANOPTES_CLIENT_ID, settings.PANOPTES_CLIENT_SECRET = "crowdloop-test", "secret"
    settings.PUBLIC_MEDIA_BASE_URL = "http://127.0.0.1:9/media"
    workflow = WorkflowFactory(
        zooniverse_id=sandbox.workflow_id, project_id=sandbox.project_id, version=None
    )
    try:
        yield sandbox, server, workflow
    finally:
        server.shutdown()
        server.server_close()


def test_a_request_to_push_succeeds_only_once_zooniverse_has_the_round(
    people, pool, sandbox_workflow, django_capture_on_commit_callbacks
):
    sandbox, _, _ = sandbox_workflow
    with django_capture_on_commit_callbacks(execute=True):
        response = as_user(people["staff"]).post(URL, {"size": 3, "push": True}, format="json")
    assert response.status_code == 202, response.content
    body = as_user(people["viewer"]).get(f"{URL}{response.json()['id']}/").json()
    assert body["status"] == "succeeded", body
    assert "pushed: " in body["summary"] and body["error"] == ""
    assert len(sandbox.subjects()) == 3


def test_a_request_whose_push_fails_reads_failed_with_the_push_error(
    people, pool, sandbox_workflow, django_capture_on_commit_callbacks, settings
):
    from annotate.zooniverse.client import FatalError
    from annotate.zooniverse.sandbox import FaultAction, FaultRule

    sandbox, _, _ = sandbox_workflow
    settings.PANOPTES_MAX_ATTEMPTS = 1
    sandbox.faults.add(
        FaultRule(path=r"/subject_sets", method="POST",
                  actions=[FaultAction("status", status=403)] * 10)
    )
    with pytest.raises(FatalError), django_capture_on_commit_callbacks(execute=True):
        # Eager tasks raise here; a worker records the same failure and logs it.
        response = as_user(people["staff"]).post(URL, {"size": 3, "push": True}, format="json")
    body = as_user(people["viewer"]).get(f"{URL}{response.json()['id']}/").json()
    assert body["status"] == "failed", body
    assert body["error"].startswith("push: ") and "403" in body["error"]
    assert body["round"] is not None  # chosen, but not on Zooniverse


def test_a_push_that_keeps_meeting_a_transient_error_retries_then_fails_saying_so(
    people, pool, sandbox_workflow, django_capture_on_commit_callbacks, monkeypatch
):
    from celery.exceptions import Retry

    from annotate.zooniverse.client import TransientError

    def down(**kwargs):
        raise TransientError("Zooniverse answered 503")

    monkeypatch.setattr("annotate.services.rounds.round_publish", down)
    monkeypatch.setattr(tasks.round_request_push_task, "delay", lambda **kwargs: None)
    with django_capture_on_commit_callbacks(execute=True):
        response = as_user(people["staff"]).post(URL, {"size": 3, "push": True}, format="json")
    request = RoundRequest.objects.get(pk=response.json()["id"])
    push = tasks.round_request_push_task
    with pytest.raises(Retry):  # a worker sends it again 30 s, 60 s, ... later
        push.apply(kwargs={"request_id": request.pk}, retries=0, throw=True)
    request.refresh_from_db()
    assert request.status == "running"
    assert request.error == "push: Zooniverse answered 503 (retrying)"
    with pytest.raises(TransientError):
        push.apply(kwargs={"request_id": request.pk}, retries=tasks.PUSH_RETRIES, throw=True)
    request.refresh_from_db()
    assert (request.status, request.error) == ("failed", "push: Zooniverse answered 503")


def test_the_schema_says_only_staff_and_admins_may_ask_for_a_round(people):
    response = as_user(people["viewer"]).get("/api/v1/schema/?format=json")
    schema = json.loads(response.content)
    post = schema["paths"][URL]["post"]
    assert post["x-required-permission"]["permission"] == "annotate.add_round"
    assert post["x-required-permission"]["roles"] == ["staff", "admin"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "RoundRequestInput"
    )
    assert "202" in post["responses"]


@pytest.mark.parametrize(
    ("send", "waiting", "expected"),
    [
        ("round_request_enqueue", "queued", "the task queue is unreachable (down); ask again"),
        ("round_push_enqueue", "running", "push: the task queue is unreachable (down); push again"),
    ],
)
def test_a_request_whose_task_the_broker_refuses_fails_saying_so(
    db, monkeypatch, send, waiting, expected
):
    from kombu.exceptions import OperationalError

    from training.services import round_pushes, round_requests

    def refuse(*args, **kwargs):
        raise OperationalError("down")

    monkeypatch.setattr(tasks.round_select_task, "apply_async", refuse)
    monkeypatch.setattr(tasks.round_request_push_task, "apply_async", refuse)
    request = RoundRequest.objects.create(status=waiting, params={"size": 4})
    module = round_requests if send == "round_request_enqueue" else round_pushes

    error = getattr(module, send)(request_id=request.pk)

    request.refresh_from_db()
    assert error.startswith(expected) and request.status == "failed"
    assert request.error == error and request.finished_at is not None


def test_a_duplicate_message_while_the_request_waits_for_its_push_leaves_it_running(people, pool):
    request = RoundRequest.objects.create(params={"size": 4, "seed": 1})
    RoundRequest.objects.filter(pk=request.pk).claim()
    RoundRequest.objects.filter(pk=request.pk).update(attempts=request.max_attempts)
    outcome = round_request_execute(request_id=request.pk)
    request.refresh_from_db()
    assert outcome.status == "running" and request.status == RoundRequest.Status.RUNNING
    assert request.error == ""


def test_a_request_lost_with_its_worker_on_its_last_attempt_is_given_up(people, pool):
    from django.utils import timezone

    request = RoundRequest.objects.create(params={"size": 4, "seed": 1})
    long_ago = timezone.now() - RoundRequest.stale_after * 2
    RoundRequest.objects.filter(pk=request.pk).update(
        status=RoundRequest.Status.RUNNING, attempts=request.max_attempts, started_at=long_ago
    )
    outcome = round_request_execute(request_id=request.pk)
    request.refresh_from_db()
    assert outcome.status == request.status == RoundRequest.Status.FAILED
    assert "given up" in request.error and not Round.objects.exists()

