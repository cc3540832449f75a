"""F2: the broker goes away in the middle of a sync, with a real worker on a Redis of the test's
own (so that it can be killed and brought back with its data), against the Zooniverse sandbox.
The pages committed before the outage stay; the sync sent again once Redis is back (as the next
beat tick does) carries on from the cursor and ends with exactly the rows of an undisturbed run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from django.db import connection

from annotate.models import Classification, ImportReport
from tests.annotate.sync_env import (
    pushed_and_classified,
    sandbox_classifications,
    stored_classifications,
    sync_invariants,
)
from tests.invariants import invariants_check
from tests.workers import Worker, database_url, until


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateRedis:
    """A redis-server whose every write is in its append-only file, so a restart keeps the
    queue and the unacked messages as they were when it died."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder)],
            stdout=(self.folder / "redis.log").open("a"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.RedisError:
                return False

        until(up, 20, "redis to start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.timeout(240)
def test_f2_redis_lost_mid_sync_keeps_the_committed_pages_and_the_next_sync_adds_no_duplicate(
    transactional_db,
    env,  # noqa: F811
    tmp_path,
):
    if connection.vendor != "postgresql" or not os.path.exists("/usr/bin/redis-server"):
        pytest.skip("needs PostgreSQL (DATABASE_URL) and redis-server")
    from celery import Celery

    broker = PrivateRedis(tmp_path)
    broker.start()
    worker = None
    try:
        pushed_and_classified(env, n_items=30, n_classifications=250)  # the task pages by 100
        expected = sandbox_classifications(env)
        worker_env = {
            **os.environ,
            "REDIS_URL": broker.url,
            "DATABASE_URL": database_url(),
            "DATABASE_CONN_MAX_AGE": "0",
            "CELERY_VISIBILITY_TIMEOUT": "16",
            "PANOPTES_ENDPOINT": env.server.endpoint,
            "PANOPTES_USERNAME": "crowdloop-bot",
            "PANOPTES_PASSWORD": "a-test-password",
            "PANOPTES_CLIENT_SECRET": "",
            "PANOPTES_PROJECT_ID": str(env.sandbox.project_id),
            "PANOPTES_TIMEOUT": "3",
        }
        env.sandbox.faults.hang(r"/classifications/project", seconds=120, skip=2)
        worker = Worker(worker_env, "sync", tmp_path, queue="default")
        worker.wait_ready()
        app = Celery("producer", broker=broker.url, set_as_current=False)
        app.conf.update(task_serializer="json", accept_content=["json"])
        app.send_task("annotate.tasks.sync_workflow", kwargs={"workflow_id": 1}, queue="default")
        until(lambda: any(e.fault == "hang" for e in env.sandbox.request_log), 60, "page 3")
        assert Classification.objects.count() == 200  # two pages committed

        broker.kill()  # the broker dies while page 3 is in flight
        env.sandbox.faults.clear()
        time.sleep(2)
        assert Classification.objects.count() == 200  # committed pages stay
        broker.start()  # back, with the unacked message in its append-only file

        # The running pull was cancelled with the lost connection (its report says failed);
        # its message is unacked. The next beat tick sends the sync again, as in production.
        app.send_task("annotate.tasks.sync_workflow", kwargs={"workflow_id": 1}, queue="default")
        until(lambda: Classification.objects.count() == len(expected), 90,
              "the next sync", every=0.5)  # fmt: skip
        until(lambda: " succeeded in " in worker.log.read_text(), 30, "the task to finish")
        time.sleep(2)  # a stray second delivery would land now
        assert stored_classifications() == expected
        assert ImportReport.objects.filter(status="succeeded").count() >= 1
        sync_invariants(env)
        invariants_check()
    finally:
        if worker is not None:
            worker.kill()
        broker.kill()
