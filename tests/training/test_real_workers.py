"""Fault tests with a real Redis and real ``celery worker`` processes (reliability F1, F3-F6).

They need PostgreSQL (the workers connect to the test database, which SQLite's in-memory test
database cannot share) and a Redis server at CROWDLOOP_TEST_REDIS_URL; otherwise they skip.
Messages are sent the way the services send them (by task name to the ``train`` queue), and
beat is stood in for by sending ``training_reconcile`` every few seconds.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests.invariants import invariants_check
from tests.training.builders import TINY_PARAMS, write_mosaic_items
from tests.workers import CELERY, ROOT, sender, until, worker_env  # noqa: F401
from training.models import ModelVersion, TrainingRun
from training.selectors import model_version_active
from training.services.params import training_params_parse
from training.services.versions import model_version_load

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.postgres,
              pytest.mark.timeout(180)]

def send_run(client, run_id: int) -> None:
    client.send_task("training.tasks.training_run_task", kwargs={"run_id": run_id},
                     queue="train")


def reconcile_every(client, seconds: float) -> Callable[[], None]:
    last = [0.0]

    def tick() -> None:
        if time.monotonic() - last[0] >= seconds:
            last[0] = time.monotonic()
            client.send_task("training.tasks.training_reconcile",
                             kwargs={"stale_after_s": 0}, queue="train")

    return tick


def queued_run(**params) -> TrainingRun:
    clean = training_params_parse({**TINY_PARAMS, **params}).as_json()
    return TrainingRun.objects.create(trigger="api", params=clean)


def manage(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_concurrent_retrain_requests_give_one_run_and_one_message(pg, redis_url):
    import redis

    write_mosaic_items(12)
    env = worker_env(redis_url)
    procs = [manage("train", "--epochs", "1", env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=90) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert TrainingRun.objects.count() == 1
    run = TrainingRun.objects.get()
    assert run.status == "queued" and run.enqueue_error == ""
    # exactly one message went to the train queue
    assert redis.Redis.from_url(redis_url).llen("train") == 1
    assert sum("already queued" in err for _, err in outputs) == 1
    invariants_check()


def test_a_worker_killed_mid_training_leaves_the_active_model_and_the_retry_finishes_once(
    pg, redis_url, workers
):
    write_mosaic_items(30)
    # the version in production before the retrain: trained in-process, eagerly
    from training.services.runs import training_run_request

    first, _ = training_run_request(trigger="command", params=TINY_PARAMS)
    active = model_version_active()
    assert active is not None and active.training_run_id == first.pk
    client = sender(redis_url)

    doomed = workers(worker_env(redis_url, CROWDLOOP_TRAINING_FAULTS="sleep_per_epoch=1.5"),
                     "doomed")
    run = queued_run(epochs=6, lease_seconds=4)
    send_run(client, run.pk)

    def two_epochs_checkpointed() -> bool:
        run.refresh_from_db()
        return len(run.metrics) >= 2 and bool(run.state_sha256)

    until(two_epochs_checkpointed, 60, "two epochs")
    doomed.kill()  # SIGKILL, to the whole process group
    run.refresh_from_db()
    assert run.status == "running" and run.attempts == 1
    assert not ModelVersion.objects.filter(training_run=run).exists()
    assert model_version_active().pk == active.pk  # the crash replaced nothing
    model_version_load(active)  # and its checkpoint still verifies

    workers(worker_env(redis_url), "survivor")

    def finished() -> bool:
        run.refresh_from_db()
        return run.is_finished

    until(finished, 60, "the retry", tick=reconcile_every(client, 2.0))
    assert run.status == "succeeded", run.log + run.error
    assert run.attempts == 2 and "resuming after epoch" in run.log
    assert [row["epoch"] for row in run.metrics] == [1, 2, 3, 4, 5, 6]
    assert ModelVersion.objects.filter(training_run=run).count() == 1
    model_version_load(ModelVersion.objects.get(training_run=run))
    assert ModelVersion.objects.filter(status="active").count() == 1
    invariants_check()


def test_a_poison_run_that_kills_its_worker_fails_after_the_attempt_limit(
    pg, redis_url, workers
):
    import redis

    write_mosaic_items(16)
    client = sender(redis_url)
    worker = workers(worker_env(redis_url, CROWDLOOP_TRAINING_FAULTS="exit_at_epoch=1"),
                     "poisoned")
    run = queued_run(epochs=3, lease_seconds=2)
    TrainingRun.objects.filter(pk=run.pk).update(max_attempts=2)
    send_run(client, run.pk)

    def failed() -> bool:
        run.refresh_from_db()
        return run.is_finished

    until(failed, 90, "the poison guard", tick=reconcile_every(client, 1.5))
    assert run.status == "failed", run.log
    assert run.attempts == 2 and "gave up after 2 attempts" in run.error
    assert not ModelVersion.objects.exists()
    # the message is dropped, not requeued forever, and the worker lives on
    broker = redis.Redis.from_url(redis_url)
    until(lambda: broker.llen("train") == 0 and not broker.hlen("unacked"), 20, "empty queue",
          tick=None)
    assert worker.proc.poll() is None
    invariants_check()


def test_a_broker_outage_at_enqueue_is_reported_and_the_reconciler_sends_the_run_later(
    pg, redis_url, workers
):
    import socket

    write_mosaic_items(16)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    down = manage("train", "--epochs", "1",
                  env=worker_env(f"redis://127.0.0.1:{closed}/0"))
    out, err = down.communicate(timeout=90)
    assert down.returncode != 0
    assert "queue is unreachable" in err and "stays queued" in err
    run = TrainingRun.objects.get()
    assert run.status == "queued" and run.enqueue_error

    client = sender(redis_url)
    workers(worker_env(redis_url), "after-outage")

    def finished() -> bool:
        run.refresh_from_db()
        return run.is_finished

    until(finished, 90, "the stranded run", tick=reconcile_every(client, 2.0))
    assert run.status == "succeeded", run.log + run.error
    assert "reconciler: sending the run again" in run.log and run.enqueue_error == ""
    assert model_version_active().training_run_id == run.pk
    invariants_check()
