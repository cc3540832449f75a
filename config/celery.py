"""The Celery app. JSON only on the wire; without REDIS_URL tasks run in-process.

Stopping a worker: ``worker_soft_shutdown_timeout`` (CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT) is how
long a cold shutdown lets running tasks finish before it hands them back to the broker, unacked,
for the next worker. SIGTERM starts a cold shutdown only with ``REMAP_SIGTERM=SIGQUIT`` in the
worker's environment (billiard reads it before this module is imported, so it cannot be set
here); without it SIGTERM is a warm shutdown that waits for every running task however long it
takes, and an orchestrator's SIGKILL then strands the message until the visibility timeout.
docker-compose.yml sets it on the workers, with a stop_grace_period above the timeout.
"""

from __future__ import annotations

import logging
import os

from celery import Celery
from celery.signals import worker_init

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
        "training.tasks.item_zero_shot_prior_refresh_task": {"queue": "default"},
        "training.tasks.*": {"queue": "train"},
    },
)
app.autodiscover_tasks()


logger = logging.getLogger(__name__)


def sigterm_warning(*, soft_shutdown_timeout: float, remap_sigterm: str | None) -> str | None:
    """Why SIGTERM would not honour the soft-shutdown timeout on this worker, or None."""
    if soft_shutdown_timeout > 0 and remap_sigterm != "SIGQUIT":
        return (
            f"REMAP_SIGTERM is {remap_sigterm or 'unset'}, not SIGQUIT: SIGTERM waits for running "
            f"tasks without limit instead of {soft_shutdown_timeout:g} s "
            "(CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT) before handing them back to the broker."
        )
    return None


@worker_init.connect
def _warn_when_sigterm_waits_without_limit(**kwargs: object) -> None:
    warning = sigterm_warning(
        soft_shutdown_timeout=float(app.conf.worker_soft_shutdown_timeout or 0),
        remap_sigterm=os.environ.get("REMAP_SIGTERM"),
    )
    if warning:
        logger.warning(warning)
