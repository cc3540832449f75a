"""The claim, the lease, the poison guard and the fence: units without a broker."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from training.models import ModelVersion, TrainingRun
from training.services.runs import (
    ClaimOutcome,
    LeaseLost,
    training_run_claim,
    training_run_heartbeat,
    training_run_release,
    training_runs_reconcile,
)
from training.services.versions import model_version_publish


def make_run(**fields) -> TrainingRun:
    defaults = {"trigger": "api", "params": {"lease_seconds": 60}, "max_attempts": 3}
    return TrainingRun.objects.create(**{**defaults, **fields})


def expire(run: TrainingRun) -> None:
    TrainingRun.objects.filter(pk=run.pk).update(
        lease_until=timezone.now() - timedelta(seconds=1))


def test_a_queued_run_is_claimed_with_a_lease_and_one_attempt(db):
    run = make_run()
    claim = training_run_claim(run_id=run.pk, worker_id="host:1:task")
    assert claim.outcome == ClaimOutcome.CLAIMED and claim.attempt == 1
    run.refresh_from_db()
    assert run.status == "running" and run.attempts == 1 and run.worker_id == "host:1:task"
    assert run.lease_until > timezone.now() + timedelta(seconds=50)
    assert run.started_at is not None and "attempt 1 claimed" in run.log


def test_a_redelivered_message_that_finds_a_live_lease_does_nothing(db):
    run = make_run()
    training_run_claim(run_id=run.pk, worker_id="first")
    claim = training_run_claim(run_id=run.pk, worker_id="duplicate")
    assert claim.outcome == ClaimOutcome.BUSY
    run.refresh_from_db()
    assert run.attempts == 1 and run.worker_id == "first"


def test_an_expired_lease_is_taken_over_as_the_next_attempt(db):
    run = make_run()
    training_run_claim(run_id=run.pk, worker_id="dead")
    expire(run)
    claim = training_run_claim(run_id=run.pk, worker_id="alive")
    assert claim.outcome == ClaimOutcome.CLAIMED and claim.attempt == 2
    run.refresh_from_db()
    assert run.worker_id == "alive" and "lease of dead expired" in run.log


def test_a_finished_run_is_never_claimed_again(db):
    run = make_run(status="succeeded")
    assert training_run_claim(run_id=run.pk, worker_id="w").outcome == ClaimOutcome.FINISHED
    assert training_run_claim(run_id=987654, worker_id="w").outcome == ClaimOutcome.MISSING


def test_the_poison_guard_fails_the_run_once_its_attempts_are_spent(db):
    run = make_run(max_attempts=2)
    for _ in range(2):
        assert training_run_claim(run_id=run.pk, worker_id="w").outcome == ClaimOutcome.CLAIMED
        expire(run)  # the worker died mid-training
    claim = training_run_claim(run_id=run.pk, worker_id="w")
    assert claim.outcome == ClaimOutcome.GAVE_UP
    run.refresh_from_db()
    assert run.status == "failed" and run.attempts == 2
    assert "gave up after 2 attempts" in run.error
    # and the message after that is a plain no-op
    assert training_run_claim(run_id=run.pk, worker_id="w").outcome == ClaimOutcome.FINISHED


def test_the_reconciler_fails_a_spent_run_with_an_expired_lease(db, monkeypatch):
    monkeypatch.setattr("training.tasks.training_run_task.apply_async", lambda **_: None)
    run = make_run(max_attempts=1)
    training_run_claim(run_id=run.pk, worker_id="w")
    expire(run)
    summary = training_runs_reconcile()
    assert summary.gave_up == [run.pk]
    run.refresh_from_db()
    assert run.status == "failed"


def test_the_reconciler_sends_again_a_run_whose_worker_died(db, monkeypatch):
    sent: list[int] = []
    monkeypatch.setattr("training.tasks.training_run_task.apply_async",
                        lambda kwargs, **_: sent.append(kwargs["run_id"]))
    run = make_run(enqueued_at=timezone.now() - timedelta(hours=1))
    training_run_claim(run_id=run.pk, worker_id="w")
    assert training_runs_reconcile().resent == []  # lease still live
    expire(run)
    assert training_runs_reconcile().resent == [run.pk] and sent == [run.pk]


def test_a_heartbeat_from_an_attempt_that_lost_the_lease_raises_lease_lost(db):
    run = make_run()
    training_run_claim(run_id=run.pk, worker_id="slow")
    expire(run)
    training_run_claim(run_id=run.pk, worker_id="fast")
    with pytest.raises(LeaseLost):
        training_run_heartbeat(run_id=run.pk, attempt=1, lease_s=60, progress=0.5)
    training_run_heartbeat(run_id=run.pk, attempt=2, lease_s=60, progress=0.5)
    run.refresh_from_db()
    assert run.progress == 0.5


def test_publishing_is_fenced_by_the_attempt_number(db):
    run = make_run()
    training_run_claim(run_id=run.pk, worker_id="slow")
    expire(run)
    training_run_claim(run_id=run.pk, worker_id="fast")
    fields = {"backbone": "small_cnn", "concepts": ["a"], "checkpoint_path": "x.json",
              "checkpoint_sha256": "0" * 64, "val_map": 0.9}
    with pytest.raises(LeaseLost):
        model_version_publish(run_id=run.pk, attempt=1, fields=fields, note="late")
    assert not ModelVersion.objects.exists()
    published = model_version_publish(run_id=run.pk, attempt=2, fields=fields, note="ok")
    assert published.promoted and published.version.status == "active"
    run.refresh_from_db()
    assert run.status == "succeeded" and run.progress == 1.0
    with pytest.raises(LeaseLost):  # published once: a second publish finds the run finished
        model_version_publish(run_id=run.pk, attempt=2, fields=fields, note="again")
    assert ModelVersion.objects.count() == 1


def test_a_worse_version_stays_a_candidate_and_the_active_one_stays(db):
    fields = {"backbone": "small_cnn", "concepts": ["a"], "checkpoint_path": "x.json",
              "checkpoint_sha256": "0" * 64}
    first = make_run()
    training_run_claim(run_id=first.pk, worker_id="w")
    good = model_version_publish(run_id=first.pk, attempt=1,
                                 fields={**fields, "val_map": 0.8}, note="")
    second = make_run()
    training_run_claim(run_id=second.pk, worker_id="w")
    worse = model_version_publish(run_id=second.pk, attempt=1,
                                  fields={**fields, "val_map": 0.7}, note="")
    assert not worse.promoted and worse.version.status == "candidate"
    good.version.refresh_from_db()
    assert good.version.status == "active"


def test_a_transient_error_hands_the_run_back_to_the_queue(db):
    run = make_run()
    training_run_claim(run_id=run.pk, worker_id="w")
    assert training_run_release(run_id=run.pk, attempt=1, reason="OperationalError")
    run.refresh_from_db()
    assert run.status == "queued" and run.attempts == 1 and run.lease_until is None
    assert training_run_claim(run_id=run.pk, worker_id="w").attempt == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_claimer_does_not_wait_on_a_locked_run_row():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locks")
    run = make_run()
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        from django.db import connections

        with transaction.atomic():
            TrainingRun.objects.select_for_update().get(pk=run.pk)
            locked.set()
            release.wait(10)
        connections.close_all()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10)
        started = timezone.now()
        claim = training_run_claim(run_id=run.pk, worker_id="w")
        assert claim.outcome == ClaimOutcome.LOCKED
        assert (timezone.now() - started).total_seconds() < 2
    finally:
        release.set()
        holder.join()
