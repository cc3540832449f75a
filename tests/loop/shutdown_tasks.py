"""A task for the worker-shutdown tests, loaded by a real worker with ``--include``.

It is declared as the Zooniverse sync tasks are (late acknowledgement, the default queue) and
records in Redis when it starts and when it ends, so a test sees which runs were in flight when
the worker was told to stop, and whether any ran twice.
"""

from __future__ import annotations

import time

import redis
from celery import shared_task
from django.conf import settings


@shared_task(name="tests.shutdown.record", acks_late=True, reject_on_worker_lost=False)
def record(*, key: str, n: int, sleep_s: float) -> int:
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.rpush(f"{key}:started", n)
    time.sleep(sleep_s)
    client.rpush(f"{key}:done", n)
    return n
