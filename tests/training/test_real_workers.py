"""Fault tests with a real Redis and real ``celery worker`` processes (reliability F1, F3-F6).

They need PostgreSQL (the workers connect to the test database, which SQLite's in-memory test
database cannot share) and a Redis server at CROWDLOOP_TEST_REDIS_URL; otherwise they skip.
Messages are sent the way the services send them (by task name to the ``train`` queue), and
beat is stood in for by sending ``training_reconcile`` every few seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from training.models import ModelVersion, TrainingRun
from training.services import model_version_active, model_version_load, training_params_parse

from .conftest import TINY_PARAMS, write_mosaic_items

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.postgres,
              pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(ROOT / ".venv" / "bin" / "celery")


@pytest.fixture
def redis_url() -> Iterator[str]:
    url = os.environ.get("CROWDLOOP_TEST_REDIS_URL", "")
    if not url:
        pytest.skip("CROWDLOOP_TEST_REDIS_URL is not set")
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        pytest.skip(f"no Redis at {url}: {exc}")
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture
def pg(transactional_db) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("real-worker tests share the test database: PostgreSQL only")


def database_url() -> str:
    db = connection.settings_dict
    return (f"postgres://{quote(db['USER'])}:{quote(db['PASSWORD'])}@{db['HOST'] or '127.0.0.1'}"
            f":{db['PORT'] or 5432}/{db['NAME']}")


def worker_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROWDLOOP_TRAINING")}
    env.update(
        REDIS_URL=redis_url, DATABASE_URL=database_url(), DATABASE_CONN_MAX_AGE="0",
        MEDIA_ROOT=str(settings.MEDIA_ROOT), ARTIFACT_ROOT=str(settings.ARTIFACT_ROOT),
        DJANGO_SETTINGS_MODULE="config.settings", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


class Worker:
    """A ``celery -A config worker -Q train`` in its own process group, killed in finally."""

    def __init__(self, env: dict[str, str], name: str, log_dir: Path) -> None:
        self.log = log_dir / f"{name}.log"
        self.proc = subprocess.Popen(
            [CELERY, "-A", "config", "worker", "-Q", "train", "--concurrency", "1",
             "--pool", "prefork", "-n", f"{name}@%h", "--loglevel", "INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        until(lambda: " ready." in self.log.read_text() or self.proc.poll() is not None,
              timeout, "worker start")
        assert self.proc.poll() is None, self.tail()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def tail(self) -> str:
        return self.log.read_text()[-4000:]


@pytest.fixture
def workers(tmp_path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(env: dict[str, str], name: str) -> Worker:
        worker = Worker(env, name, tmp_path)
        started.append(worker)
        worker.wait_ready()
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.kill()


def until(check: Callable[[], object], timeout: float, what: str, every: float = 0.3,
          tick: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if tick is not None:
            tick()
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def sender(redis_url: str):
    """A bare Celery client: sends by task name, as the services and beat do."""
    from celery import Celery

    client = Celery("test-client", broker=redis_url, set_as_current=False)
    client.conf.update(task_serializer="json", accept_content=["json"])
    return client


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


def test_a_worker_killed_mid_training_leaves_the_active_model_and_the_retry_finishes_once(
    pg, redis_url, workers
):
    write_mosaic_items(30)
    # the version in production before the retrain: trained in-process, eagerly
    from training.services import training_run_request

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
