"""Reliability F7, F17: a real ``celery worker`` on Redis told to stop with SIGTERM, as an
orchestrator stops a container.

The worker runs with the environment docker-compose.yml gives the workers (SIGTERM remapped to a
cold shutdown) and a short CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT: running tasks get that long to
finish; a task still running then is handed back to Redis and runs again on the next worker;
queued tasks stay queued; nothing runs twice and nothing is lost.

They need Redis at CROWDLOOP_TEST_REDIS_URL; otherwise they skip. The workers never touch the
database (the task records in Redis), so SQLite and PostgreSQL runs both exercise them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import yaml

from tests import workers as workers_module
from tests.workers import ROOT, sender, until

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(120)]

TASK = "tests.shutdown.record"
QUEUE = "default"


def compose_worker_environment() -> dict[str, str]:
    """The environment docker-compose.yml sets on its default-queue worker, beyond the image's."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    environment = compose["services"]["worker"].get("environment") or {}
    return {name: str(value) for name, value in environment.items() if name == "REMAP_SIGTERM"}


def shutdown_env(redis_url: str, var_dir: Path, soft_timeout: float) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CROWDLOOP_TRAINING", "CELERY_", "REMAP_SIGTERM", "DATABASE_URL"))
    }
    env.update(
        REDIS_URL=redis_url,
        CROWDLOOP_VAR_DIR=str(var_dir),
        CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT=str(soft_timeout),
        DJANGO_SETTINGS_MODULE="config.settings",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        **compose_worker_environment(),
    )
    return env


class Worker(workers_module.Worker):
    """``celery -A config worker -Q default --concurrency 2`` as compose runs it, plus the test
    task module; SIGTERM goes to the main process only, as Docker sends it to PID 1."""

    def __init__(self, env: dict[str, str], name: str, log_dir: Path) -> None:
        super().__init__(env, name, log_dir, QUEUE, concurrency=2,
                         extra=("--include", "tests.loop.shutdown_tasks"))  # fmt: skip
        self.wait_ready()

    def terminate(self) -> float:
        """SIGTERM, then the seconds until the worker has exited."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker {self.name} ignored SIGTERM:\n{self.tail()}") from None
        return time.monotonic() - started


@pytest.fixture
def start_worker(tmp_path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(env: dict[str, str], name: str) -> Worker:
        started.append(Worker(env, name, tmp_path))
        return started[-1]

    try:
        yield start
    finally:
        for worker in started:
            worker.kill()


def runs(client: redis.Redis, key: str, what: str) -> list[int]:
    return [int(n) for n in client.lrange(f"{key}:{what}", 0, -1)]


def queued(client: redis.Redis) -> int:
    """Messages waiting in the default queue (kombu keeps one list per priority step)."""
    return sum(
        client.llen(name)
        for name in client.scan_iter(match=f"{QUEUE}*")
        if client.type(name) == b"list"
    )


def enqueue(redis_url: str, key: str, count: int, sleep_s: float) -> None:
    app = sender(redis_url)
    for n in range(count):
        app.send_task(TASK, kwargs={"key": key, "n": n, "sleep_s": sleep_s}, queue=QUEUE)


def worker_conf(redis_url: str, worker: Worker) -> dict:
    replies = (
        sender(redis_url)
        .control.inspect(destination=[f"{worker.name}@{os.uname().nodename}"], timeout=5)
        .conf(with_defaults=True)
    )
    assert replies, f"worker {worker.name} did not answer inspect conf"
    return next(iter(replies.values()))


def test_sigterm_with_100_queued_tasks_finishes_those_in_flight_and_leaves_the_rest_queued(
    redis_url, start_worker, tmp_path
):
    """Reliability F7."""
    client = redis.Redis.from_url(redis_url)
    env = shutdown_env(redis_url, tmp_path / "var", soft_timeout=3)
    enqueue(redis_url, "f7", 100, sleep_s=0.2)
    first = start_worker(env, "first")
    assert worker_conf(redis_url, first)["worker_soft_shutdown_timeout"] == 3.0
    until(lambda: len(runs(client, "f7", "started")) >= 6, 30, "a few tasks to run", every=0.05)

    took = first.terminate()

    started, done = runs(client, "f7", "started"), runs(client, "f7", "done")
    assert took < 3 + 10, first.tail()
    assert sorted(done) == sorted(started), "a task in flight at SIGTERM did not finish"
    assert len(set(started)) == len(started) < 100
    assert queued(client) == 100 - len(started)
    assert client.hlen("unacked") == 0

    start_worker(env, "second")
    until(lambda: len(runs(client, "f7", "done")) >= 100, 60, "the rest to run", every=0.2)
    time.sleep(1)  # a duplicate would show up now
    assert sorted(runs(client, "f7", "started")) == list(range(100))
    assert sorted(runs(client, "f7", "done")) == list(range(100))
    assert queued(client) == 0


def test_sigterm_mid_task_stops_within_the_soft_shutdown_timeout_and_the_task_is_redelivered(
    redis_url, start_worker, tmp_path
):
    """Reliability F17."""
    client = redis.Redis.from_url(redis_url)
    env = shutdown_env(redis_url, tmp_path / "var", soft_timeout=2)
    enqueue(redis_url, "f17", 1, sleep_s=8)
    doomed = start_worker(env, "doomed")
    assert worker_conf(redis_url, doomed)["worker_soft_shutdown_timeout"] == 2.0
    until(lambda: runs(client, "f17", "started") == [0], 30, "the task to start", every=0.05)

    took = doomed.terminate()

    assert 2 <= took < 2 + 8, doomed.tail()
    assert runs(client, "f17", "done") == []
    assert queued(client) + client.hlen("unacked") == 1, "the message was lost"

    start_worker(env, "survivor")
    until(lambda: runs(client, "f17", "done") == [0], 40, "the redelivered task to finish")
    assert runs(client, "f17", "started") == [0, 0]
