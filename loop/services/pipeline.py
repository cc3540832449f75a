"""The pipeline's mechanics: request a step, claim it, finish it, reconcile what was lost.

Each step is a :class:`loop.models.LoopStep` row and one Celery task (``loop.tasks``). Triggers
call :func:`step_request`; the task calls :func:`step_execute`, which claims the step, runs its
work (:mod:`loop.services.steps`) and records a :class:`loop.models.LoopEvent`. Guarantees: ten
requests before the task starts send one message and the work runs once; a request during a run
sends one more message when it finishes; a message delivered twice finds nothing to serve
(``request_seq`` <= ``served_seq``) or the step busy, and returns; a transient error releases
the claim for Celery's retry, a final failure is recorded with its reason and consumes the
request; a worker killed mid-step leaves the request standing for its redelivered message (same
task id) or, once the lease is over, the reconciler.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from config.task_kinds import task_named
from loop.models import LoopEvent, LoopStep, StepName
from loop.services import faults

logger = logging.getLogger(__name__)

#: A message sent this long ago whose step still waits was lost (a broker restart, a killed
#: worker on a transport that does not redeliver): the reconciler sends another.
QUEUED_STALE_AFTER = timedelta(minutes=5)


@dataclass(frozen=True)
class Claim:
    """What a task holds while it runs a step."""

    name: str
    seq: int
    reason: str
    requested_at: datetime | None
    started_at: datetime
    task_id: str
    state: dict[str, Any]


@dataclass
class StepOutcome:
    """What a step's work reports: ``done`` False means it found nothing to do."""

    summary: str
    done: bool = True
    detail: dict[str, Any] = field(default_factory=dict)
    #: Replaces the step's ``state`` when not None (written with the finish, atomically).
    state: dict[str, Any] | None = None
    #: Steps to request once this one has committed: (name, reason).
    then: list[tuple[str, str]] = field(default_factory=list)


class StepRetry(Exception):
    """Raised by :func:`step_execute` after a transient error: the task should retry."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


#: (soft, hard) time limits per step, in seconds. The retirement and round steps talk to
#: Zooniverse (the client's own budget stops it first); the round step's selection is a request
#: served on the train queue, so the step itself only checks and asks.
STEP_LIMITS: dict[str, tuple[int, int]] = {
    StepName.PULL: (1900, 1960),
    StepName.AGGREGATE: (1800, 1860),
    StepName.RETIRE: (1900, 1960),
    StepName.TRAIN: (120, 150),
    StepName.SCORE: (120, 150),
    StepName.ROUND: (1900, 1960),
}


_local = threading.local()


@contextmanager
def pulls_logged_by_step() -> Iterator[None]:
    """Inside the pull step, which logs its own event: pulls are not logged twice."""
    _local.in_pull_step = True
    try:
        yield
    finally:
        _local.in_pull_step = False


def in_pull_step() -> bool:
    """Whether this thread is inside the pull step (its votes' event is the step's own)."""
    return bool(getattr(_local, "in_pull_step", False))


def step_lease(name: str) -> timedelta:
    """How long a claim holds before the step counts as lost: its task's hard time limit."""
    return timedelta(seconds=STEP_LIMITS[name][1] + 30)


def _row(name: str) -> LoopStep:
    step, _ = LoopStep.objects.get_or_create(name=name)
    return step


def step_request(*, name: str, reason: str, countdown: float = 0.0) -> bool:
    """Ask for a step to run; True when this call sent the message (else one is on its way).

    Safe and cheap to call from any trigger, as often as it likes: requests coalesce.
    """
    if name not in StepName.values:
        raise ValueError(f"unknown loop step {name!r}")
    now = timezone.now()
    with transaction.atomic():
        _row(name)
        # A standing request for a full pass ("full ...") is not demoted by a later, ordinary
        # one coalescing into it: the step would otherwise run incrementally and the full pass
        # (an excluded volunteer, votes linked late) would wait for the periodic one.
        keep_full = Q(request_seq__gt=F("served_seq"), request_reason__startswith="full")
        LoopStep.objects.filter(name=name).update(
            request_seq=F("request_seq") + 1,
            requested_at=Coalesce(F("requested_at"), now),
            request_reason=(
                Value(reason[:300])
                if reason.startswith("full")
                else Case(When(keep_full, then=F("request_reason")), default=Value(reason[:300]))
            ),
        )
        sent = LoopStep.objects.filter(name=name, queued=False).update(queued=True, queued_at=now)
        if sent:
            transaction.on_commit(partial(_send, name=name, countdown=countdown))
    return bool(sent)


def _send(*, name: str, countdown: float = 0.0) -> None:
    from kombu.exceptions import OperationalError as BrokerError

    try:
        task_named(f"loop.tasks.step_{name}").apply_async(
            countdown=countdown or None,  # type: ignore[arg-type]  # None valid; stubs say float
        )
    except BrokerError as exc:
        # The request stands; the reconciler sends it once the broker is back.
        logger.error("loop step %s not sent: %s", name, exc)
        LoopStep.objects.filter(name=name).update(queued=False)


def step_claim(*, name: str, task_id: str, now: datetime | None = None) -> Claim | None:
    """Take the step for this task, or None when there is nothing to serve or it is busy."""
    now = now or timezone.now()
    with transaction.atomic():
        _row(name)
        step = LoopStep.objects.select_for_update().get(name=name)
        if step.request_seq <= step.served_seq:
            LoopStep.objects.filter(pk=step.pk).update(queued=False)
            return None
        busy = (
            step.running_since is not None
            and step.lease_until is not None
            and step.lease_until > now
            and step.running_task != task_id  # our own message again: that run died
        )
        if busy:
            # This message is spent; the running one sends another when it sees the request.
            LoopStep.objects.filter(pk=step.pk).update(queued=False)
            return None
        LoopStep.objects.filter(pk=step.pk).update(
            running_since=now,
            lease_until=now + step_lease(name),
            running_task=task_id,
            queued=False,
            last_started_at=now,
        )
    return Claim(
        name=name,
        seq=step.request_seq,
        reason=step.request_reason,
        requested_at=step.requested_at,
        started_at=now,
        task_id=task_id,
        state=dict(step.state or {}),
    )


def step_finish(
    claim: Claim, *, status: str, summary: str, detail: dict[str, Any] | None = None,
    error: str = "", state: dict[str, Any] | None = None, served: bool = True,
) -> LoopEvent:
    """Record the run, release the claim, and send one more message if requests arrived.

    ``served`` False (a transient failure that Celery retries) leaves the request standing.
    """
    now = timezone.now()
    with transaction.atomic():
        step = LoopStep.objects.select_for_update().get(name=claim.name)
        fields: dict[str, Any] = {
            "last_finished_at": now,
            "last_status": status,
            "last_summary": summary[:2000],
            "last_error": error[:4000],
        }
        if step.running_task == claim.task_id:
            fields.update(running_since=None, lease_until=None, running_task="")
        if state is not None:
            fields["state"] = state
        if status != LoopEvent.Status.RETRYING:
            fields["runs"] = F("runs") + 1
        if status in (LoopEvent.Status.FAILED, LoopEvent.Status.RETRYING):
            fields["failures"] = F("failures") + 1
        served_seq = max(step.served_seq, claim.seq) if served else step.served_seq
        fields["served_seq"] = served_seq
        pending = step.request_seq > served_seq
        if not pending:
            fields["requested_at"] = None
        resend = pending and served and not step.queued
        if resend:
            fields.update(queued=True, queued_at=now)
        elif not served:
            # Celery's retry is the message on its way.
            fields.update(queued=True, queued_at=now)
        LoopStep.objects.filter(pk=step.pk).update(**fields)
        event = LoopEvent.objects.create(
            step=claim.name,
            status=status,
            trigger=claim.reason[:300],
            summary=summary,
            error=error,
            detail=detail or {},
            started_at=claim.started_at,
            finished_at=now,
            task_id=claim.task_id,
        )
        if resend:
            transaction.on_commit(partial(_send, name=claim.name))
    return event


def step_execute(
    *,
    name: str,
    task_id: str,
    work: Callable[[Claim], StepOutcome],
    transient: tuple[type[BaseException], ...] = (),
    may_retry: bool = True,
) -> dict[str, Any]:
    """Claim the step, run ``work``, record the outcome; what the task returns.

    Raises:
        StepRetry: ``work`` raised one of ``transient`` and ``may_retry`` is set (the task
            retries with backoff; the request stands).
        Exception: whatever ``work`` raised otherwise, after recording it as failed.
    """
    claim = step_claim(name=name, task_id=task_id)
    if claim is None:
        return {"step": name, "skipped": "nothing requested, or running elsewhere"}
    try:
        faults.step_started(name)
        outcome = work(claim)
    except transient as exc:
        reason = f"{type(exc).__name__}: {exc}"
        if may_retry:
            step_finish(claim, status=LoopEvent.Status.RETRYING, summary="will retry",
                        error=reason, served=False)
            raise StepRetry(exc) from exc
        step_finish(claim, status=LoopEvent.Status.FAILED, summary="gave up after retries",
                    error=reason)
        raise
    except Exception as exc:
        logger.exception("loop step %s failed", name)
        step_finish(claim, status=LoopEvent.Status.FAILED, summary="failed",
                    error=f"{type(exc).__name__}: {exc}")
        raise
    status = LoopEvent.Status.DONE if outcome.done else LoopEvent.Status.NOTHING
    with transaction.atomic():
        event = step_finish(claim, status=status, summary=outcome.summary, detail=outcome.detail,
                            state=outcome.state)
        for next_name, reason in outcome.then:
            step_request(name=next_name, reason=reason)
    logger.info("loop %s: %s", name, outcome.summary)
    return {"step": name, "status": status, "summary": outcome.summary, "event": event.pk}


def steps_reconcile(*, now: datetime | None = None) -> list[str]:
    """Send again the steps whose request waits with no live message or run; their names.

    Beat runs this every minute: it covers a broker outage at request time, a message lost with
    its worker, and a run killed before it could finish.
    """
    now = now or timezone.now()
    resent: list[str] = []
    for step in LoopStep.objects.filter(request_seq__gt=F("served_seq")):
        running = step.running_since is not None and step.lease_until and step.lease_until > now
        fresh = step.queued and step.queued_at and step.queued_at > now - QUEUED_STALE_AFTER
        if running or fresh:
            continue
        with transaction.atomic():
            LoopStep.objects.filter(pk=step.pk).update(queued=True, queued_at=now)
            transaction.on_commit(partial(_send, name=step.name))
        resent.append(step.name)
    return resent


def event_record(
    *, step: str, status: str, summary: str, trigger: str = "",
    detail: dict[str, Any] | None = None, error: str = "",
    started_at: datetime | None = None,
) -> LoopEvent:
    """Log something a step did outside its own task (a pull from the command line, a
    promotion), so the dashboard shows every change, whoever made it."""
    now = timezone.now()
    _row(step)
    LoopStep.objects.filter(name=step).update(
        last_finished_at=now, last_status=status, last_summary=summary[:2000],
        last_error=error[:4000], last_started_at=started_at or now, runs=F("runs") + 1,
    )
    return LoopEvent.objects.create(
        step=step, status=status, trigger=trigger[:300], summary=summary, error=error,
        detail=detail or {}, started_at=started_at or now, finished_at=now,
    )
