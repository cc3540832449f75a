"""Celery tasks of the pipeline: one per step, each a thin call of ``step_execute``.

A step's message carries no arguments: the :class:`loop.models.LoopStep` row says what is asked
and the task serves whatever is pending when it runs, so a duplicate or late message is a no-op
(``acks_late``; ``reject_on_worker_lost`` is safe because the row, not the message, counts the
work). Transient errors (Zooniverse down or throttling, the database or broker unreachable) retry
with exponential backoff, at most five times; then, as any other error, the step is recorded as
failed with its reason and the next trigger tries again.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError

from annotate.zooniverse.client import TransientError
from config.task_kinds import at_least_once_task, backoff_max
from loop.models import StepName
from loop.services.pipeline import STEP_LIMITS

MAX_RETRIES = 5


def _transient() -> tuple[type[BaseException], ...]:
    from kombu.exceptions import OperationalError as BrokerError

    return (TransientError, OperationalError, InterfaceError, BrokerError)


def _backoff(retries: int) -> int:
    """30 s, 60 s, 120 s, ... capped below the visibility timeout's quarter and 10 minutes."""
    return min(backoff_max(), 30 * 2**retries)


def _step_task(name: str):
    soft, hard = STEP_LIMITS[name]

    @at_least_once_task(
        name=f"loop.tasks.step_{name}",
        redeliver_on_worker_loss=True,
        ignore_result=True,
        bind=True,
        max_retries=MAX_RETRIES,
        soft_time_limit=soft,
        time_limit=hard,
    )
    def run_step(self) -> dict[str, Any]:
        from loop.services.pipeline import StepRetry, step_execute
        from loop.services.steps import STEPS

        try:
            return step_execute(
                name=name,
                task_id=self.request.id or "",
                work=STEPS[name],
                transient=_transient(),
                may_retry=self.request.retries < MAX_RETRIES,
            )
        except StepRetry as exc:
            raise self.retry(exc=exc.error, countdown=_backoff(self.request.retries)) from None

    return run_step


step_pull = _step_task(StepName.PULL)
step_aggregate = _step_task(StepName.AGGREGATE)
step_retire = _step_task(StepName.RETIRE)
step_train = _step_task(StepName.TRAIN)
step_round = _step_task(StepName.ROUND)

STEP_TASKS = {
    StepName.PULL: step_pull,
    StepName.AGGREGATE: step_aggregate,
    StepName.RETIRE: step_retire,
    StepName.TRAIN: step_train,
    StepName.ROUND: step_round,
}


@at_least_once_task(name="loop.tasks.loop_pull", redeliver_on_worker_loss=True, ignore_result=True)
def loop_pull() -> bool:
    """Beat, every ZOONIVERSE_SYNC_INTERVAL: ask for a pull (coalesced with any in flight)."""
    from loop.services.pipeline import step_request

    return step_request(name=StepName.PULL, reason="scheduled pull")


@at_least_once_task(
    name="loop.tasks.loop_reconcile", redeliver_on_worker_loss=True, ignore_result=True
)
def loop_reconcile() -> list[str]:
    """Beat, every minute: send again the steps whose request waits with nothing serving it,
    and ask for the checks that depend on time (the round's progress upstream)."""
    from loop.services.pipeline import step_request, steps_reconcile

    resent = steps_reconcile()
    if settings.AUTO_ROUNDS:
        step_request(name=StepName.ROUND, reason="periodic check")
    return resent
