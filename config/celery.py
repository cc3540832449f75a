"""The Celery app. JSON only on the wire; without REDIS_URL tasks run in-process."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("crowdloop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_cancel_long_running_tasks_on_connection_loss=True,
    broker_connection_retry_on_startup=True,
    task_default_queue="default",
    task_routes={
        # A round's push talks to Zooniverse: it must not wait behind a training.
        "training.tasks.round_request_push_task": {"queue": "default"},
        # A flag refresh is a few queries: it must not wait behind a training either.
        "training.tasks.item_model_conflicts_refresh_task": {"queue": "default"},
        "training.tasks.*": {"queue": "train"},
    },
)
app.autodiscover_tasks()
