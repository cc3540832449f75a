"""Real ``celery worker`` processes for the fault tests: Redis and PostgreSQL fixtures, a worker
in its own process group, and a bare client that sends tasks by name as beat does.

The tests that use them need PostgreSQL (workers share the test database, which SQLite's test
database cannot) and a Redis server at CROWDLOOP_TEST_REDIS_URL; otherwise they skip.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]
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
    """A ``celery -A config worker -Q train`` in its own process group, killed in finally.

    ``concurrency`` and ``extra`` arguments (e.g. ``--include`` of a test task module) make the
    other shapes of worker the tests need.
    """

    def __init__(self, env: dict[str, str], name: str, log_dir: Path, queue: str = "train",
                 *, concurrency: int = 1, extra: tuple[str, ...] = ()) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        self.proc = subprocess.Popen(
            [CELERY, "-A", "config", "worker", "-Q", queue, "--concurrency", str(concurrency),
             "--pool", "prefork", "-n", f"{name}@%h", "--loglevel", "INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat", *extra],
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

    def start(env: dict[str, str], name: str, queue: str = "train") -> Worker:
        worker = Worker(env, name, tmp_path, queue)
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
