"""Celery tasks of the model side: thin, keyword-only ids in, one service call, JSON out.

Every task here runs at least once per request, possibly more (``acks_late``; Redis redelivers
after the visibility timeout; a killed worker's message is requeued by
``reject_on_worker_lost``), so each one starts by checking the database: a training run is
claimed with a conditional UPDATE and counts its attempts (the poison guard that stops the requeue
loop of celery#8969), a scoring chunk likewise. Only transient errors retry automatically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from celery import Task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from config.task_kinds import at_least_once_task, backoff_max, visibility_timeout

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
QUEUE = "train"


def _transient_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OperationalError, InterfaceError]
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError

        errors.append(RedisConnectionError)
    except ImportError:  # pragma: no cover - redis is a pinned requirement
        pass
    return tuple(errors)


def train_task(
    *, soft_time_limit: int, time_limit: int
) -> Callable[[Callable[Concatenate[Task[..., Any], P], R]], Task[P, R]]:
    """The kind of the ``train`` queue's tasks: at least once, requeued on worker loss.

    The queue itself comes from ``task_routes`` (``training.tasks.*`` -> ``train`` in
    ``config/celery.py``; Celery 5.7 deprecates a per-task ``queue`` attribute), and every task
    here is named ``training.tasks.<function>`` so the route always applies.

    ``reject_on_worker_lost`` is safe here only because every task of this kind has a poison
    guard in the database (attempts counted at claim). Retries cover transient database and
    Redis errors only. The run and chunk rows are the results; storing them in Redis too would
    only make every send wait on the result backend when Redis is down (20 reconnects, ~30 s).
    """

    def decorate(func: Callable[Concatenate[Task[..., Any], P], R]) -> Task[P, R]:
        return at_least_once_task(
            name=f"training.tasks.{func.__name__}",
            redeliver_on_worker_loss=True,
            ignore_result=True,
            autoretry_for=_transient_errors(),
            retry_backoff=5,
            soft_time_limit=soft_time_limit,
            time_limit=time_limit,
            bind=True,
        )(func)

    return decorate


def _train_limits() -> tuple[int, int]:
    # The hard limit stays below the visibility timeout: Redis must never hand a live training
    # to a second worker (the lease would make that second one a no-op, but it wastes a slot).
    hard = int(settings.TRAINING_TIME_LIMIT_SECONDS or min(6 * 3600, visibility_timeout() - 300))
    hard = max(60, hard)
    return hard - 60, hard


_SOFT, _HARD = _train_limits()


@train_task(soft_time_limit=_SOFT, time_limit=_HARD)
def training_run_task(self, *, run_id: int) -> dict[str, Any]:
    """Serve a training run's message (its primary key); a duplicate does nothing."""
    from training.services.execute import training_run_execute
    from training.services.runs import worker_identity

    result = training_run_execute(run_id=run_id, worker_id=worker_identity(self.request.id))
    return result.as_json()


@train_task(soft_time_limit=1800, time_limit=1900)
def training_score_chunk(self, *, chunk_id: int) -> str:
    """Score one chunk of the pool with its model version, trained or zero-shot (``zero_shot
    --in-workers``); a re-run rewrites the same rows (a zero-shot one skips them). A permanent
    error marks the chunk failed and returns; a transient one retries."""
    from training.services.scoring import scoring_chunk_execute

    return scoring_chunk_execute(chunk_id=chunk_id)


@train_task(soft_time_limit=240, time_limit=300)
def training_reconcile(self, *, stale_after_s: float | None = None) -> str:
    """Beat, every few minutes: re-send stranded runs and chunks, fail the spent ones."""
    from training.services.round_requests import round_requests_reconcile
    from training.services.runs import training_runs_reconcile

    pushes = round_requests_reconcile()
    summary = training_runs_reconcile(stale_after_s=stale_after_s).summary()
    return summary + (f"; round pushes sent again: {pushes}" if pushes else "")


@train_task(soft_time_limit=240, time_limit=300)
def training_nightly(self) -> int | None:
    """Beat, nightly: request a retrain when labels changed since the last run."""
    from training.services.triggers import training_nightly as nightly

    run = nightly()
    return run.pk if run else None


@train_task(soft_time_limit=1800, time_limit=1900)
def round_select_task(self, *, request_id: int) -> dict[str, Any]:
    """Serve a round request (its primary key): choose the round; a duplicate does nothing.

    On the train queue: selection runs the model over a shortlist of the pool.
    """
    from training.services.round_requests import round_request_execute

    return round_request_execute(request_id=request_id).as_json()


PUSH_RETRIES = 5


@at_least_once_task(
    name="training.tasks.round_request_push_task",
    redeliver_on_worker_loss=True,
    ignore_result=True,
    bind=True,
    max_retries=PUSH_RETRIES,
    soft_time_limit=1900,
    time_limit=1960,
)
def round_request_push_task(self, *, request_id: int) -> dict[str, Any]:
    """Push a requested round (the request's primary key) to Zooniverse; a re-run pushes nothing
    new. Transient Zooniverse errors retry with backoff; the last failure, or any other error,
    marks the request failed with the reason ("push: ...")."""
    from annotate.zooniverse.client import TransientError
    from training.services.round_requests import round_request_push, round_request_push_failed

    try:
        return round_request_push(request_id=request_id).as_json()
    except TransientError as exc:
        final = self.request.retries >= PUSH_RETRIES
        round_request_push_failed(request_id=request_id, error=f"{exc}", final=final)
        if final:
            raise
        countdown = min(backoff_max(), 30 * 2**self.request.retries)
        raise self.retry(exc=exc, countdown=countdown) from None
    except Exception as exc:
        round_request_push_failed(
            request_id=request_id, error=f"{type(exc).__name__}: {exc}", final=True
        )
        raise


@at_least_once_task(
    name="training.tasks.item_model_conflicts_refresh_task",
    redeliver_on_worker_loss=True,
    ignore_result=True,
    soft_time_limit=1800,
    time_limit=1900,
)
def item_model_conflicts_refresh_task(*, item_ids: list[int] | None = None) -> int:
    """Recompute the model-vs-crowd conflict flag of these items (None: all); idempotent."""
    from training.services.conflicts import item_model_conflicts_refresh

    return item_model_conflicts_refresh(item_ids=item_ids)


@at_least_once_task(
    name="training.tasks.item_zero_shot_prior_refresh_task",
    redeliver_on_worker_loss=True,
    ignore_result=True,
    soft_time_limit=1800,
    time_limit=1900,
)
def item_zero_shot_prior_refresh_task(*, item_ids: list[int] | None = None) -> int:
    """Recompute the zero-shot-doubts-the-prior flag of these items (None: all); idempotent."""
    from training.services.conflicts import item_zero_shot_prior_refresh

    return item_zero_shot_prior_refresh(item_ids=item_ids)
