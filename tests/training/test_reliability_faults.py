"""Faults of the matrix not staged elsewhere (reliability F15, F16, F18, F19, S14): a database
connection killed inside a batch, a checkpoint folder that stops taking writes mid-training, a
step delivered twice or asked for from many threads at once, failures shown as failures, and a
pickle message that a real worker must refuse. Each ends with the invariant check."""

from __future__ import annotations

import os
import pickle  # noqa: TID251 - the test crafts the message an attacker would
import shutil
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.urls import reverse

from annotate.models import AggregatedLabel, Classification, SyncCursor
from loop.models import LoopEvent, LoopStep, StepName
from loop.services import pipeline
from loop.services.pipeline import step_request
from loop.tasks import STEP_TASKS
from tests.clients import as_user
from tests.factories import Crowd, WorkflowFactory, answers_for
from tests.invariants import invariants_check
from tests.training.builders import TINY_PARAMS
from tests.workers import database_url, until, worker_env
from training.models import ModelVersion, TrainingRun
from training.selectors import model_version_active
from training.services.dataset import run_dir
from training.services.runs import training_run_request
from training.services.versions import model_version_load

T0 = datetime(2024, 2, 23, 16, 0, tzinfo=UTC)


@pytest.fixture
def superuser_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.org"))
    return client


def retrain(capture) -> TrainingRun:
    with capture(execute=True):
        run, created = training_run_request(trigger="command", params=TINY_PARAMS)
    assert created
    run.refresh_from_db()
    return run


# --- F15: the database connection dies inside a batch -------------------------------------------


def _records(ids):
    from annotate.services.classifications import ClassificationRecord

    return [
        ClassificationRecord(
            zooniverse_id=cid, workflow_id=7, workflow_version="3.1",
            subject_ids=[500 + cid % 5], user_id=40 + cid % 3,
            user_name=f"volunteer{40 + cid % 3}", created_at=T0 + timedelta(minutes=cid),
            answers=["Painting"], source="api",
        )
        for cid in ids
    ]  # fmt: skip


def _ingest(workflow, ids, batch_size):
    from annotate.models import ImportReport
    from annotate.services.classifications import classifications_ingest

    report = ImportReport.objects.create(kind=ImportReport.Kind.CLASSIFICATIONS, source="test")
    return classifications_ingest(
        records=_records(ids), workflow=workflow, report=report, batch_size=batch_size,
        cursor=True,
    )  # fmt: skip


@pytest.mark.postgres
def test_f15_a_connection_killed_during_the_insert_rolls_the_batch_back_and_a_retry_succeeds(
    pg, concepts, monkeypatch
):
    """The second batch's insert runs on a connection another session has just terminated
    (pg_terminate_backend): that batch rolls back, the cursor stays at the first batch, and the
    retry on a fresh connection stores exactly the rows of an undisturbed ingest."""
    import psycopg
    from django.db import InterfaceError, OperationalError

    from annotate.services.classifications import store

    workflow = WorkflowFactory(zooniverse_id=7, answers=answers_for(["painting"]))
    real_insert = store.rows_insert
    inserts = []

    def insert_on_a_killed_connection(*args, **kwargs):
        if args[0] is Classification:
            inserts.append(len(args[2]))
        if args[0] is Classification and len(inserts) == 2:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                (pid,) = cursor.fetchone()
            with psycopg.connect(database_url(), autocommit=True) as killer:
                killer.execute("SELECT pg_terminate_backend(%s)", [pid])
        return real_insert(*args, **kwargs)

    monkeypatch.setattr(store, "rows_insert", insert_on_a_killed_connection)
    with pytest.raises((OperationalError, InterfaceError)):
        _ingest(workflow, range(1, 31), batch_size=10)
    connection.close()  # the worker's next task starts on a fresh connection
    assert inserts == [10, 10]

    assert sorted(Classification.objects.values_list("zooniverse_id", flat=True)) == list(
        range(1, 11)
    )
    assert SyncCursor.objects.get(workflow=workflow).last_id == 10
    invariants_check()

    monkeypatch.setattr(store, "rows_insert", real_insert)
    counts = _ingest(workflow, range(1, 31), batch_size=10)
    assert (counts.created, counts.unchanged) == (20, 10)
    assert sorted(Classification.objects.values_list("zooniverse_id", flat=True)) == list(
        range(1, 31)
    )
    assert SyncCursor.objects.get(workflow=workflow).last_id == 30
    invariants_check()


# --- F16: the checkpoint folder stops taking writes mid-training --------------------------------


def test_f16_a_checkpoint_folder_that_stops_taking_writes_mid_training_fails_the_run_cleanly(
    mosaic_items, django_capture_on_commit_callbacks, monkeypatch
):
    """After epoch 1's resume state is written, the run's folder is made read-only (and, since
    root ignores permission bits, also swapped for a plain file): epoch 2's checkpoint cannot be
    written. The run fails with the reason; the active model stays and still verifies."""
    first = retrain(django_capture_on_commit_callbacks)
    assert first.status == "succeeded", first.error
    active = model_version_active()
    epochs_seen: list[int] = []

    class FreezeAfterFirstEpoch:
        def epoch_done(self, epoch: int) -> None:
            epochs_seen.append(epoch)
            if epoch != 1:
                return
            folder = run_dir(TrainingRun.objects.latest("pk").pk)
            folder.chmod(0o500)
            if os.geteuid() == 0:
                aside = folder.with_name(folder.name + "-moved")
                folder.chmod(0o700)
                shutil.move(folder, aside)
                folder.write_text("not a folder")

    monkeypatch.setattr(
        "training.services.execute.faults_from_env", lambda: FreezeAfterFirstEpoch()
    )
    try:
        run = retrain(django_capture_on_commit_callbacks)
    finally:
        folder = run_dir(TrainingRun.objects.latest("pk").pk)
        if folder.is_dir():
            folder.chmod(0o700)

    assert epochs_seen == [1]  # epoch 2 never finished its checkpoint
    assert run.status == "failed"
    assert run.error.split(":")[0] in {"PermissionError", "FileExistsError", "NotADirectoryError"}
    assert not ModelVersion.objects.filter(training_run=run).exists()
    assert model_version_active().pk == active.pk
    model_version_load(active)
    invariants_check()


# --- F18: one effect per step, however often it is delivered or asked for -----------------------


def test_f18_the_aggregation_step_delivered_twice_aggregates_once(
    concepts, django_capture_on_commit_callbacks, monkeypatch
):
    from annotate.services import aggregation

    crowd = Crowd(concepts)
    for n in range(3):
        item = crowd.item(f"item-{n}")
        for volunteer in ("u1", "u2", "u3"):
            crowd.vote(item, volunteer, ["painting"])
    real = aggregation.labels_aggregate
    passes: list[object] = []

    def counted(**kwargs):
        passes.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(aggregation, "labels_aggregate", counted)
    with django_capture_on_commit_callbacks():
        step_request(name=StepName.AGGREGATE, reason="9 new votes pulled")
    task = STEP_TASKS[StepName.AGGREGATE]
    first = task.apply(task_id="message").get()
    labels = list(AggregatedLabel.objects.order_by("pk").values())
    again = task.apply(task_id="message-redelivered").get()

    assert first["status"] == "done" and "skipped" in again
    assert len(passes) == 1
    assert len(labels) == 3 * len(concepts)
    assert list(AggregatedLabel.objects.order_by("pk").values()) == labels
    assert LoopEvent.objects.filter(step=StepName.AGGREGATE).count() == 1
    invariants_check()


@pytest.mark.postgres
def test_f18_many_triggers_at_once_from_threads_send_one_message(pg, monkeypatch):
    sent: list[str] = []
    lock = threading.Lock()

    def record(*, name, countdown=0.0):
        with lock:
            sent.append(name)

    monkeypatch.setattr(pipeline, "_send", record)
    step_request(name=StepName.AGGREGATE, reason="create the row")
    LoopStep.objects.filter(name=StepName.AGGREGATE).update(queued=False)
    sent.clear()
    start = threading.Barrier(8)
    answers: list[bool] = []

    def trigger(n: int) -> None:
        from django.db import connections

        try:
            start.wait(10)
            answer = step_request(name=StepName.AGGREGATE, reason=f"pull {n}")
            with lock:
                answers.append(answer)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=trigger, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(answers) == [False] * 7 + [True]
    assert sent == [StepName.AGGREGATE]
    step = LoopStep.objects.get(name=StepName.AGGREGATE)
    assert step.queued and step.request_seq == 9
    invariants_check()


# --- F19: a failing task reads failed, with its reason, in the admin and the API ----------------


def test_f19_a_failing_step_reads_failed_with_its_reason_in_the_admin_and_the_api(
    concepts, people, superuser_client, django_capture_on_commit_callbacks, monkeypatch
):
    from annotate.services import aggregation

    crowd = Crowd(concepts)
    crowd.vote(crowd.item("item"), "u1", ["painting"])

    def broken(**kwargs):
        raise ValueError("the vote matrix is inconsistent")

    monkeypatch.setattr(aggregation, "labels_aggregate", broken)
    with django_capture_on_commit_callbacks():
        step_request(name=StepName.AGGREGATE, reason="1 new vote pulled")
    result = STEP_TASKS[StepName.AGGREGATE].apply(task_id="t", throw=False)
    assert result.failed()

    reason = "ValueError: the vote matrix is inconsistent"
    status = as_user(people["viewer"]).get("/api/v1/loop/").json()
    by_name = {s["name"]: s for s in status["steps"]}
    assert by_name["aggregate"]["last_status"] == "failed"
    assert [(f["step"], f["error"]) for f in status["failures"]] == [("aggregate", reason)]
    assert [e["status"] for e in status["events"] if e["step"] == "aggregate"] == ["failed"]

    page = superuser_client.get(
        reverse("admin:loop_loopevent_changelist"), {"step__exact": "aggregate"}
    ).content.decode()
    assert reason in page and "failed" in page
    assert not LoopEvent.objects.filter(step=StepName.AGGREGATE, status="done").exists()
    invariants_check()


def test_f19_a_failed_training_run_reads_failed_with_its_reason_in_the_admin_and_the_api(
    mosaic_items, people, superuser_client, django_capture_on_commit_callbacks, monkeypatch
):
    def broken_fit(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr("training.services.execute.fit", broken_fit)
    run = retrain(django_capture_on_commit_callbacks)
    assert run.status == "failed"

    body = as_user(people["viewer"]).get(f"/api/v1/training-runs/{run.pk}/").json()
    assert body["status"] == "failed" and "CUDA out of memory" in body["error"]
    listed = as_user(people["viewer"]).get("/api/v1/training-runs/").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert [r["status"] for r in rows if r["id"] == run.pk] == ["failed"]

    page = superuser_client.get(reverse("admin:training_trainingrun_change", args=[run.pk]))
    html = page.content.decode()
    assert page.status_code == 200 and "CUDA out of memory" in html
    changelist = reverse("admin:training_trainingrun_changelist")
    link = reverse("admin:training_trainingrun_change", args=[run.pk])
    listed_as = {
        status: link in superuser_client.get(changelist, {"status__exact": status}).content.decode()
        for status in ("failed", "succeeded", "running", "queued")
    }
    assert listed_as == {"failed": True, "succeeded": False, "running": False, "queued": False}
    assert not ModelVersion.objects.exists()
    invariants_check()


# --- S14: a pickle message on the broker runs nothing ---------------------------------------------


class _Marker:
    """Unpickling this writes a file: proof that the payload ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "code ran"))


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_s14_a_pickle_message_injected_into_redis_is_refused_and_nothing_runs(
    pg, redis_url, workers, tmp_path
):
    from kombu import Connection

    marker = tmp_path / "marker"
    body = pickle.dumps(((), {"stale_after_s": _Marker(marker)}, {}))
    assert b"write_text" in body
    task_id = str(uuid.uuid4())
    with Connection(redis_url) as conn:
        producer = conn.Producer()
        producer.publish(
            body, routing_key="train", exchange="", content_type="application/x-python-serialize",
            content_encoding="binary", serializer=None,
            headers={"lang": "py", "task": "training.tasks.training_reconcile", "id": task_id,
                     "root_id": task_id, "parent_id": None, "group": None, "argsrepr": "()",
                     "kwargsrepr": "{}", "retries": 0, "eta": None, "expires": None},
            properties={"correlation_id": task_id, "reply_to": ""},
        )  # fmt: skip
        # A JSON message after it: once it has run, the pickle one was seen and dealt with.
        from tests.workers import sender

        follow = sender(redis_url).send_task(
            "training.tasks.training_reconcile", kwargs={"stale_after_s": 0}, queue="train"
        )

    worker = workers(worker_env(redis_url), "json-only")
    until(lambda: f"training_reconcile[{follow.id}] succeeded" in worker.log.read_text(), 60,
          "the JSON message")  # fmt: skip
    log = worker.log.read_text()
    assert "untrusted content" in log or "ContentDisallowed" in log, worker.tail()
    assert f"[{task_id}] received" not in log.lower() and f"[{task_id}] succeeded" not in log
    assert not marker.exists()
    assert worker.proc.poll() is None
    invariants_check()


# --- F5: Redis hands a running task to a second worker -------------------------------------------


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_f5_a_redelivery_while_the_first_worker_trains_finds_the_live_lease_and_exits(
    pg, redis_url, workers
):
    """Visibility timeout 5 s, training about 30 s: Redis gives the unacked message to a second
    worker while the first still trains. The second finds the lease alive and does nothing; the
    run trains once and publishes one model."""
    from tests.training.builders import write_mosaic_items
    from tests.workers import sender

    write_mosaic_items(16)
    env = worker_env(
        redis_url, CELERY_VISIBILITY_TIMEOUT="5", TRAINING_TIME_LIMIT_SECONDS="120",
        CROWDLOOP_TRAINING_FAULTS="sleep_per_epoch=5",
    )  # fmt: skip
    from training.services.params import training_params_parse

    params = training_params_parse({**TINY_PARAMS, "epochs": 6, "lease_seconds": 30}).as_json()
    run = TrainingRun.objects.create(trigger="api", params=params)
    first = workers(env, "first")
    message = sender(redis_url).send_task(
        "training.tasks.training_run_task", kwargs={"run_id": run.pk}, queue="train"
    )

    def training() -> bool:
        run.refresh_from_db()
        return run.status == "running" and len(run.metrics) >= 1

    until(training, 60, "the first epoch")
    # A worker starting after the visibility timeout restores the unacked message at once.
    import time

    time.sleep(5.5)
    second = workers(env, "second")
    until(lambda: f"[{message.id}] received" in second.log.read_text().lower(), 30,
          "the redelivery")  # fmt: skip

    def finished() -> bool:
        run.refresh_from_db()
        return run.is_finished

    until(finished, 90, "the run")
    until(lambda: f"[{message.id}] succeeded" in second.log.read_text(), 30, "the duplicate")
    assert run.status == "succeeded", run.log + run.error
    assert run.attempts == 1
    assert "'outcome': 'busy'" in second.log.read_text(), second.tail()
    assert "resuming" not in run.log
    assert ModelVersion.objects.filter(training_run=run).count() == 1
    assert first.proc.poll() is None
    invariants_check()
