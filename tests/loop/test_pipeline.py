"""The pipeline's mechanics: requests coalesce, a step runs once per trigger, failures show.

Each step's task is delivered by hand here (``.apply()`` runs it in this process, like a worker
would, with a task id), so a duplicate delivery, a retry and a lost worker can be staged exactly.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from annotate.zooniverse.client import TransientError
from loop.models import LoopEvent, LoopStep, StepName
from loop.services import pipeline, steps
from loop.services.pipeline import StepOutcome, step_claim, step_request, steps_reconcile
from loop.tasks import STEP_TASKS

pytestmark = pytest.mark.django_db


@pytest.fixture
def work(monkeypatch):
    """Replace the train step's work with a recorder whose outcome a test can set."""
    calls: list[str] = []
    box = {"outcome": StepOutcome("did it", detail={"n": 1}), "error": None}

    def fake(claim):
        calls.append(claim.reason)
        if box["error"] is not None:
            raise box["error"]
        return box["outcome"]

    monkeypatch.setitem(steps.STEPS, StepName.TRAIN, fake)
    box["calls"] = calls
    return box


def _sent(callbacks) -> int:
    return sum(1 for c in callbacks if getattr(c, "func", None) is pipeline._send)


def test_ten_requests_before_the_task_runs_send_one_message(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        sent = [step_request(name=StepName.TRAIN, reason=f"pull {i}") for i in range(10)]
    assert sent == [True] + [False] * 9
    assert _sent(callbacks) == 1
    step = LoopStep.objects.get(name=StepName.TRAIN)
    assert step.request_seq == 10 and step.served_seq == 0 and step.queued


def test_a_standing_full_pass_request_is_not_demoted_by_a_later_ordinary_one(
    work, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks():
        step_request(name=StepName.TRAIN, reason="full pass: 1 volunteer excluded")
        step_request(name=StepName.TRAIN, reason="new votes from a pull")
    STEP_TASKS[StepName.TRAIN].apply(task_id="message-1").get()
    assert work["calls"] == ["full pass: 1 volunteer excluded"]

    # Once served, an ordinary request is ordinary again.
    with django_capture_on_commit_callbacks():
        step_request(name=StepName.TRAIN, reason="new votes from a pull")
    STEP_TASKS[StepName.TRAIN].apply(task_id="message-2").get()
    assert work["calls"][-1] == "new votes from a pull"


def test_a_step_delivered_twice_does_its_work_once(work, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        step_request(name=StepName.TRAIN, reason="labels changed")
    first = STEP_TASKS[StepName.TRAIN].apply(task_id="message-1").get()
    second = STEP_TASKS[StepName.TRAIN].apply(task_id="message-1-again").get()
    assert first["status"] == "done" and "skipped" in second
    assert work["calls"] == ["labels changed"]
    assert LoopEvent.objects.filter(step=StepName.TRAIN).count() == 1
    step = LoopStep.objects.get(name=StepName.TRAIN)
    assert step.requested_at is None and not step.queued and step.running_since is None


def test_a_request_that_arrives_while_the_step_runs_sends_one_more_message(
    work, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks():
        step_request(name=StepName.TRAIN, reason="first")
    claim = step_claim(name=StepName.TRAIN, task_id="running")
    with django_capture_on_commit_callbacks() as during:
        step_request(name=StepName.TRAIN, reason="second")
        step_request(name=StepName.TRAIN, reason="third")
    # The message sent meanwhile finds the step busy and is spent.
    assert STEP_TASKS[StepName.TRAIN].apply(task_id="meanwhile").get()["step"] == "train"
    assert work["calls"] == []
    with django_capture_on_commit_callbacks() as after:
        pipeline.step_finish(claim, status="done", summary="first served")
    assert _sent(during) == 1 and _sent(after) == 1
    STEP_TASKS[StepName.TRAIN].apply(task_id="follow-up").get()
    assert work["calls"] == ["third"]
    step = LoopStep.objects.get(name=StepName.TRAIN)
    assert step.served_seq == step.request_seq == 3 and step.requested_at is None


def test_a_transient_error_retries_then_fails_with_its_reason_and_the_next_trigger_runs_again(
    work, django_capture_on_commit_callbacks, monkeypatch
):
    from celery.exceptions import Retry

    work["error"] = TransientError("Zooniverse answered 503 five times")
    with django_capture_on_commit_callbacks():
        step_request(name=StepName.TRAIN, reason="labels changed")
    task = STEP_TASKS[StepName.TRAIN]
    with pytest.raises(Retry):
        task.apply(task_id="try-1", throw=True, retries=0)
    retrying = LoopEvent.objects.get(step=StepName.TRAIN)
    assert retrying.status == LoopEvent.Status.RETRYING and "503" in retrying.error
    assert LoopStep.objects.get(name=StepName.TRAIN).request_seq == 1  # still asked for
    with pytest.raises(TransientError):
        task.apply(task_id="try-6", throw=True, retries=5)
    failed = LoopEvent.objects.filter(step=StepName.TRAIN).first()
    assert failed.status == LoopEvent.Status.FAILED
    assert failed.error == "TransientError: Zooniverse answered 503 five times"
    step = LoopStep.objects.get(name=StepName.TRAIN)
    assert step.last_status == "failed" and step.failures == 2 and step.requested_at is None

    work["error"] = None
    with django_capture_on_commit_callbacks():
        step_request(name=StepName.TRAIN, reason="more labels")
    assert task.apply(task_id="next").get()["status"] == "done"
    assert work["calls"][-1] == "more labels"


def test_any_other_error_fails_the_task_and_shows_as_failed(
    work, django_capture_on_commit_callbacks
):
    work["error"] = ValueError("the checkpoint does not verify")
    with django_capture_on_commit_callbacks():
        step_request(name=StepName.TRAIN, reason="labels changed")
    result = STEP_TASKS[StepName.TRAIN].apply(task_id="t", throw=False)
    assert result.failed()
    event = LoopEvent.objects.get(step=StepName.TRAIN)
    assert (event.status, event.error) == ("failed", "ValueError: the checkpoint does not verify")


def test_a_run_lost_with_its_worker_runs_again_on_redelivery_or_after_its_lease(
    work, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks():
        step_request(name=StepName.TRAIN, reason="labels changed")
    assert step_claim(name=StepName.TRAIN, task_id="killed") is not None  # then the worker died
    # Another message while the lease holds: busy, nothing done.
    assert "skipped" in STEP_TASKS[StepName.TRAIN].apply(task_id="other").get()
    # The dead run's own message, redelivered (acks_late): it runs.
    assert STEP_TASKS[StepName.TRAIN].apply(task_id="killed").get()["status"] == "done"
    assert work["calls"] == ["labels changed"]

    # A transport that does not redeliver: the reconciler sends it once the lease is over.
    with django_capture_on_commit_callbacks():
        step_request(name=StepName.TRAIN, reason="again")
    step_claim(name=StepName.TRAIN, task_id="killed-2")
    assert steps_reconcile() == []  # the lease still holds
    later = timezone.now() + pipeline.step_lease(StepName.TRAIN) + timedelta(seconds=1)
    with django_capture_on_commit_callbacks() as callbacks:
        assert steps_reconcile(now=later) == [StepName.TRAIN]
    assert _sent(callbacks) == 1


def test_a_request_whose_message_was_lost_is_sent_again_by_the_reconciler(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks():
        step_request(name=StepName.TRAIN, reason="labels changed")
    assert steps_reconcile() == []  # its message is young
    later = timezone.now() + pipeline.QUEUED_STALE_AFTER + timedelta(seconds=1)
    assert steps_reconcile(now=later) == [StepName.TRAIN]


def test_a_step_that_finds_nothing_to_do_says_why_and_asks_for_nothing_more(
    work, django_capture_on_commit_callbacks
):
    work["outcome"] = StepOutcome("retrain after 37 more labels", done=False)
    with django_capture_on_commit_callbacks():
        step_request(name=StepName.TRAIN, reason="a review")
    with django_capture_on_commit_callbacks() as callbacks:
        STEP_TASKS[StepName.TRAIN].apply(task_id="t").get()
    assert _sent(callbacks) == 0
    step = LoopStep.objects.get(name=StepName.TRAIN)
    assert (step.last_status, step.last_summary) == ("nothing", "retrain after 37 more labels")


def test_an_unknown_step_is_refused():
    with pytest.raises(ValueError, match="unknown loop step"):
        step_request(name="sing", reason="x")
