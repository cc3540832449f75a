"""Round requests: ``select_round`` asked for through the API and served by a Celery task.

The request is a row (:class:`training.models.RoundRequest`); the task only says "serve request
N". The task may run more than once for one request (``acks_late``, redelivery after a lost
worker), so :func:`round_request_execute` claims the row with a conditional UPDATE, counts its
attempts (the poison guard), and links the round it makes in the transaction that records the
picks: a second delivery finds the request finished and returns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, cast

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from annotate.models import Round, Workflow
from config.task_kinds import task_named
from ml import acquisition
from training.models import ModelVersion, RoundRequest

logger = logging.getLogger(__name__)

#: A request claimed this long ago and still running was lost with its worker: it may be taken
#: again (the task's hard time limit is shorter). Said on the model: ``RoundRequest.stale_after``.
STALE_AFTER = RoundRequest.stale_after


class RoundRequestError(ValueError):
    """Parameters a round cannot be chosen with; ``field`` names the one at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class RoundRequestOutcome:
    request_id: int
    status: str
    round_id: int | None = None
    summary: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "status": self.status,
            "round_id": self.round_id,
            "summary": self.summary,
        }


def round_request_create(
    *,
    user: AbstractBaseUser | AnonymousUser | None,
    size: int,
    strategy: str | None = None,
    random_share: float | None = None,
    relabel: bool | None = None,
    seed: int = 0,
    push: bool = False,
    model_version_id: int | None = None,
    trigger: str = "",
) -> RoundRequest:
    """Check the parameters, record a queued request, and send its task after commit.

    ``trigger`` names what asked for it when no person did (the loop: "after round 3"); the
    loop looks it up so that one trigger never makes two rounds.

    Raises:
        RoundRequestError: a parameter the selection could not use (its ``field`` names it).
    """
    if size < 1:
        raise RoundRequestError("size", "a round needs at least one item")
    if strategy is not None and strategy not in acquisition.STRATEGIES:
        raise RoundRequestError(
            "strategy",
            f"unknown strategy {strategy!r}; choose one of: "
            f"{', '.join(acquisition.list_strategies())}",
        )
    if random_share is not None and not 0.0 <= random_share <= 1.0:
        raise RoundRequestError("random_share", "random_share must be between 0 and 1")
    if (
        model_version_id is not None
        and not ModelVersion.objects.filter(pk=model_version_id).exists()
    ):
        raise RoundRequestError("model_version", f"no model version {model_version_id}")
    if push and not Workflow.objects.filter(active=True).exists():
        raise RoundRequestError("push", "there is no active workflow to push the round to")
    request = RoundRequest.objects.create(
        # AUTH_USER_MODEL is auth's User: an authenticated user is one.
        requested_by=cast(User, user) if user is not None and user.is_authenticated else None,
        params={
            "size": size,
            "strategy": strategy,
            "random_share": random_share,
            "relabel": relabel,
            "seed": seed,
            "push": push,
            "model_version": model_version_id,
            "trigger": trigger,
        },
    )
    transaction.on_commit(partial(round_request_enqueue, request_id=request.pk))
    return request


def round_request_enqueue(*, request_id: int) -> str:
    """Send the request's task; when the broker refuses, fail the request saying so (a new
    request is the retry: a queued row with no message behind it would wait forever)."""
    round_select_task = task_named("training.tasks.round_select_task")

    return task_send_or_fail(
        round_select_task,
        request_id=request_id,
        waiting=RoundRequest.Status.QUEUED,
        retry="ask again when it is back",
    )


def task_send_or_fail(
    task: Any, *, request_id: int, waiting: str, retry: str, prefix: str = ""
) -> str:
    """Send ``task`` for the round request; when the broker refuses, the request (still in
    ``waiting``) fails with a message that says so and how to retry. The error, or ""."""
    from kombu.exceptions import OperationalError

    try:
        task.apply_async(kwargs={"request_id": request_id})
    except OperationalError as exc:
        message = f"{prefix}the task queue is unreachable ({exc}); {retry}"
        logger.error("round request %s: %s not enqueued: %s", request_id, task.name, exc)
        RoundRequest.objects.filter(pk=request_id, status=waiting).finish(
            status=RoundRequest.Status.FAILED, error=message
        )
        return message
    return ""


def _claim(request_id: int) -> bool:
    """Queued, or running but lost (claimed longer ago than ``stale_after``), with attempts
    left: one conditional UPDATE (:meth:`annotate.jobs.JobQuerySet.claim`)."""
    return bool(RoundRequest.objects.filter(pk=request_id).claim())


def _finish(request_id: int, *, status: str, error: str | None = None, **fields: Any) -> None:
    RoundRequest.objects.filter(pk=request_id, status=RoundRequest.Status.RUNNING).finish(
        status=status, error=error, **fields
    )


def round_request_execute(*, request_id: int) -> RoundRequestOutcome:
    """Serve a round request once: choose the round, link it, and queue its push if asked.

    Safe to call more than once: only a queued request (or a running one whose worker was lost
    long ago) is claimed; any other call returns the request as it stands.
    """
    from training.services.selection import SelectionError, round_select

    if not _claim(request_id):
        current = RoundRequest.objects.filter(pk=request_id).first()
        if current is None:
            return RoundRequestOutcome(request_id, "unknown")
        lost = RoundRequest.lost(timezone.now())
        if current.status == RoundRequest.Status.RUNNING and current.attempts_spent and lost:
            # The poison guard: lost with its worker on its last attempt. A duplicate message
            # while the request is served, or waits for its push, leaves it alone.
            RoundRequest.objects.filter(pk=request_id, status=RoundRequest.Status.RUNNING).filter(
                lost
            ).finish(
                status=RoundRequest.Status.FAILED,
                error="given up: the selection was lost with its worker too often",
            )
            current.refresh_from_db()
        return RoundRequestOutcome(request_id, current.status, current.round_id, current.summary)

    request = RoundRequest.objects.get(pk=request_id)
    params = request.params
    version = (
        ModelVersion.objects.filter(pk=params["model_version"]).first()
        if params.get("model_version")
        else None
    )

    if request.round_id is not None:
        # Chosen by an earlier attempt whose push was lost with its worker: push, don't choose.
        transaction.on_commit(partial(_push, request_id=request_id))
        return RoundRequestOutcome(request_id, request.status, request.round_id, request.summary)

    def link(round_: Round) -> None:
        # Inside the transaction that records the picks: the round, the link and the push are
        # committed together, so no delivery after this one can make a second round. A request
        # with a push stays running until the push has answered (round_request_push).
        if params.get("push"):
            RoundRequest.objects.filter(pk=request_id).update(round=round_)
            transaction.on_commit(partial(_push, request_id=request_id))
        else:
            RoundRequest.objects.filter(pk=request_id).finish(
                status=RoundRequest.Status.SUCCEEDED, round=round_
            )

    try:
        result = round_select(
            size=int(params["size"]),
            strategy=params.get("strategy"),
            random_share=params.get("random_share"),
            model_version=version,
            relabel=params.get("relabel"),
            seed=int(params.get("seed", 0)),
            on_recorded=link,
        )
    except SelectionError as exc:
        _finish(request_id, status=RoundRequest.Status.FAILED, error=str(exc))
        return RoundRequestOutcome(request_id, RoundRequest.Status.FAILED, summary=str(exc))
    except (OperationalError, InterfaceError):
        # Transient: back in the queue for the task's retry (the attempt stays counted).
        RoundRequest.objects.filter(pk=request_id).requeue()
        raise
    except Exception as exc:  # a permanent error: record it where staff will look
        logger.exception("round request %s failed", request_id)
        _finish(request_id, status=RoundRequest.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
        return RoundRequestOutcome(request_id, RoundRequest.Status.FAILED, summary=str(exc))
    summary = result.summary()
    RoundRequest.objects.filter(pk=request_id).update(summary=summary)
    status = RoundRequest.objects.values_list("status", flat=True).get(pk=request_id)
    return RoundRequestOutcome(request_id, status, result.round.pk, summary)


def _push(*, request_id: int) -> None:
    # The push has its own task on the default queue (task_routes): it must not wait behind a
    # training on the train queue, and Zooniverse errors retry there with their own backoff.
    round_request_push_task = task_named("training.tasks.round_request_push_task")

    round_request_push_task.delay(request_id=request_id)


def round_request_push(*, request_id: int) -> RoundRequestOutcome:
    """Push the round a request chose; the request succeeds only once Zooniverse has it.

    Safe to call again: only a running request with a round is pushed, and a push finds what
    exists. Errors propagate (the task retries transient ones and then records the failure with
    :func:`round_request_push_failed`).
    """
    from annotate.services.rounds import round_publish

    request = RoundRequest.objects.select_related("round__workflow").filter(pk=request_id).first()
    if request is None:
        return RoundRequestOutcome(request_id, "unknown")
    if request.status != RoundRequest.Status.RUNNING or request.round is None:
        return RoundRequestOutcome(request_id, request.status, request.round_id, request.summary)
    pushed = round_publish(round=request.round)
    summary = f"{request.summary}; pushed: {pushed}".strip("; ")
    _finish(request_id, status=RoundRequest.Status.SUCCEEDED, error="", summary=summary)
    return RoundRequestOutcome(request_id, RoundRequest.Status.SUCCEEDED, request.round_id, summary)


def round_request_push_failed(*, request_id: int, error: str, final: bool) -> None:
    """Record a failed push: the reason while it retries, then the request as failed."""
    message = f"push: {error}"
    if final:
        _finish(request_id, status=RoundRequest.Status.FAILED, error=message)
    else:
        RoundRequest.objects.filter(pk=request_id).update(error=f"{message} (retrying)")


def round_requests_reconcile(*, now: datetime | None = None) -> list[int]:
    """Send again the pushes lost with their worker: requests still running, with their round
    chosen, claimed longer ago than the push task may run. Beat runs it with the training
    reconciler; a push sent twice finds what exists. The ids sent again."""
    now = now or timezone.now()
    stale = RoundRequest.objects.filter(
        RoundRequest.lost(now), status=RoundRequest.Status.RUNNING, round__isnull=False
    ).values_list("pk", flat=True)
    resent = list(stale)
    for request_id in resent:
        RoundRequest.objects.filter(pk=request_id).update(started_at=now)
        _push(request_id=request_id)
    return resent
