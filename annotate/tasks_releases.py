"""The release build as a Celery task: a thin wrapper that takes an id and calls one service.

The task may run more than once for one request (``acks_late``; Redis redelivers after the
visibility timeout): :func:`annotate.services.releases.release_build` claims the row with a
conditional update and returns at once when it is already running or written. No automatic
retry: a failed build is marked ``failed`` and a new release is the way to try again.
"""

from __future__ import annotations

from celery import shared_task


@shared_task(
    name="annotate.tasks_releases.release_build",
    acks_late=True,
    reject_on_worker_lost=False,
    max_retries=0,
    soft_time_limit=3 * 3600,
    time_limit=3 * 3600 + 300,
)
def release_build_task(*, release_id: int) -> str:
    from annotate.services.releases import release_build

    return release_build(release_id=release_id).status
