"""training_run_request: one run in flight, coalesced follow-ups, clear broker outages."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from kombu.exceptions import OperationalError as KombuOperationalError

from training.models import TrainingRun
from training.services.params import TrainingParamsError
from training.services.runs import training_run_request, training_runs_reconcile


@pytest.fixture
def no_send(monkeypatch):
    """Record sends instead of running the task (eager mode would train right away)."""
    sent: list[int] = []
    monkeypatch.setattr(
        "training.tasks.training_run_task.apply_async",
        lambda kwargs, **_: sent.append(kwargs["run_id"]),
    )
    return sent


def test_a_request_creates_a_queued_run_and_sends_it_after_commit(
    db, no_send, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        run, created = training_run_request(trigger="button", params={"epochs": 4})
        assert no_send == []  # nothing leaves before the row is committed
    assert created and len(callbacks) == 1
    assert no_send == [run.pk]
    run.refresh_from_db()
    assert run.status == "queued" and run.params["epochs"] == 4 and run.enqueued_at is not None
    assert run.enqueue_error == ""


def test_a_second_request_gets_the_run_in_flight_back(db, no_send):
    first, created = training_run_request(trigger="api", params={})
    second, created_again = training_run_request(trigger="command", params={"epochs": 2})
    assert created and not created_again
    assert second.pk == first.pk
    assert TrainingRun.objects.count() == 1


def test_new_labels_while_training_give_exactly_one_follow_up(
    db, no_send, django_capture_on_commit_callbacks
):
    from training.services.runs import training_run_claim, training_run_fail

    run, _ = training_run_request(trigger="button", params={})
    claim = training_run_claim(run_id=run.pk, worker_id="w1")
    for _ in range(3):
        again, created = training_run_request(trigger="auto", params={})
        assert again.pk == run.pk and not created
    run.refresh_from_db()
    assert run.followup_requested
    with django_capture_on_commit_callbacks(execute=True):
        training_run_fail(run_id=run.pk, attempt=claim.attempt, error="boom")
    followups = TrainingRun.objects.exclude(pk=run.pk)
    assert followups.count() == 1
    assert followups.get().trigger == "auto" and followups.get().status == "queued"


def test_a_button_press_while_training_does_not_ask_for_a_follow_up(db, no_send):
    from training.services.runs import training_run_claim

    run, _ = training_run_request(trigger="button", params={})
    training_run_claim(run_id=run.pk, worker_id="w1")
    training_run_request(trigger="button", params={})
    run.refresh_from_db()
    assert not run.followup_requested


@pytest.mark.parametrize(
    "params",
    [{"backbone": "vgg99"}, {"epochs": 0}, {"epochs": "many"}, {"colour": "red"},
     {"model_kwargs": {"widths": [1, 2], "evil": 1}}, {"mode": "magic"}],
)
def test_bad_parameters_are_refused_before_any_run_exists(db, no_send, params):
    with pytest.raises(TrainingParamsError):
        training_run_request(trigger="api", params=params)
    assert not TrainingRun.objects.exists()


def test_the_database_refuses_a_second_run_in_flight(db):
    from django.db import IntegrityError, transaction

    TrainingRun.objects.create(trigger="api", status="running")
    with pytest.raises(IntegrityError), transaction.atomic():
        TrainingRun.objects.create(trigger="api", status="queued")


def test_a_broker_outage_at_enqueue_is_reported_and_the_reconciler_sends_the_run_later(
    db, monkeypatch, django_capture_on_commit_callbacks
):
    def down(**_):
        raise KombuOperationalError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    monkeypatch.setattr("training.tasks.training_run_task.apply_async", down)
    with django_capture_on_commit_callbacks(execute=True):
        run, created = training_run_request(trigger="api", params={})
    run.refresh_from_db()  # outside a test the callback has run before the service returns
    assert created
    assert run.status == "queued"
    assert "unreachable" in run.enqueue_error and "sent again automatically" in run.enqueue_error

    sent: list[int] = []
    monkeypatch.setattr(
        "training.tasks.training_run_task.apply_async",
        lambda kwargs, **_: sent.append(kwargs["run_id"]),
    )
    summary = training_runs_reconcile()
    assert summary.resent == [run.pk] and sent == [run.pk]
    run.refresh_from_db()
    assert run.enqueue_error == "" and "reconciler" in run.log


def test_the_reconciler_leaves_a_fresh_queued_run_alone(db, no_send):
    run, _ = training_run_request(trigger="api", params={})
    run.refresh_from_db()
    from django.utils import timezone

    TrainingRun.objects.filter(pk=run.pk).update(enqueued_at=timezone.now())
    assert training_runs_reconcile(stale_after_s=300).resent == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_from_two_threads_give_one_run(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite serialises writers, there is no race to lose")
    monkeypatch.setattr("training.tasks.training_run_task.apply_async", lambda **_: None)
    barrier = threading.Barrier(4)
    results: list[tuple[int, bool]] = []
    errors: list[BaseException] = []

    def request() -> None:
        from django.db import connections

        try:
            barrier.wait()
            run, created = training_run_request(trigger="api", params={})
            results.append((run.pk, created))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=request) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert TrainingRun.objects.count() == 1
    assert len({pk for pk, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_train_wait_says_when_no_worker_seems_to_serve_the_queue(
    db, no_send, monkeypatch, capsys
):
    from django.core.management import CommandError, call_command

    from training.management.commands import train

    monkeypatch.setattr(train, "QUEUED_HINT_AFTER_S", 0.0)
    with pytest.raises(CommandError, match="still queued after 1.5 s"):
        call_command("train", "--epochs", "1", "--wait", "--timeout", "1.5")
    assert "is a worker serving the 'train' queue? (make worker, or make serve)" in (
        capsys.readouterr().err
    )
