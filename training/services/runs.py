"""Training runs: one request service for every trigger, the claim, the lease, the reconciler.

Delivery is at least once (``acks_late``, ``reject_on_worker_lost``, Redis redelivery after the
visibility timeout), so a message is only a hint: the run row decides. A worker claims the row with
a conditional UPDATE (queued, or running with an expired lease), which increments ``attempts``;
every later write of that worker is fenced by ``attempts = mine``, so a worker whose lease was taken
over finds out at its next heartbeat and stops without publishing anything.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Any, cast

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from config.task_kinds import broker_errors, task_named
from training.models import DEFAULT_FAMILY, TrainingRun
from training.services.params import training_params_parse, training_weights_check

logger = logging.getLogger(__name__)

Status = TrainingRun.Status
Trigger = TrainingRun.Trigger


class LeaseLost(Exception):
    """This worker's claim on the run was taken over (or the run was finished by someone else)."""


def worker_identity(task_id: str | None = None) -> str:
    """host:pid[:task id] — enough to tell in the log which process held the run."""
    base = f"{socket.gethostname()}:{os.getpid()}"
    return f"{base}:{task_id}" if task_id else base


def run_log_line(text: str, *, now: datetime | None = None) -> str:
    """One line of a run's log: ``text`` stamped with ``now`` (default: the current time)."""
    return f"{(now or timezone.now()).strftime('%Y-%m-%d %H:%M:%S')} {text}\n"


def training_run_log(*, run_id: int, text: str) -> None:
    """Append a line to the run's log (unfenced: a late worker's note does no harm)."""
    TrainingRun.objects.filter(pk=run_id).update(log=Concat(F("log"), Value(run_log_line(text))))


# ---------------------------------------------------------------------------- request / enqueue


def training_run_enqueue(*, run_id: int) -> str:
    """Send the run's message now; return "" or a message saying why the broker refused it.

    A refusal leaves the run ``queued`` with ``enqueue_error`` set, so the API can answer 503 and
    :func:`training_runs_reconcile` sends it again once the broker is back (reliability F1).
    """
    training_run_task = task_named("training.tasks.training_run_task")

    TrainingRun.objects.filter(pk=run_id).update(enqueued_at=timezone.now())
    try:
        training_run_task.apply_async(kwargs={"run_id": run_id})
    except broker_errors() as exc:
        message = (
            f"The task queue is unreachable ({type(exc).__name__}: {exc}); training run {run_id} "
            "stays queued and will be sent again automatically when the queue is back."
        )
        logger.error("training run %s not enqueued: %s", run_id, exc)
        TrainingRun.objects.filter(pk=run_id).update(enqueue_error=message)
        return message
    TrainingRun.objects.filter(pk=run_id, enqueue_error__gt="").update(enqueue_error="")
    return ""


def _in_flight(family: str) -> TrainingRun | None:
    return (
        TrainingRun.objects.select_for_update()
        .filter(family=family)
        .active()
        .first()
    )


def training_run_request(
    *,
    requested_by: Any = None,
    trigger: str,
    params: dict[str, Any] | None = None,
    family: str = DEFAULT_FAMILY,
    fetch_weights: bool = False,
) -> tuple[TrainingRun, bool]:
    """Ask for a retrain; every trigger (button, API, command, beat, new labels) comes here.

    At most one run per family is queued or running (a partial unique constraint): a request that
    finds one gets it back with ``created=False``. A request from new labels (``trigger="auto"``)
    that finds a run already *running* marks it for one follow-up run, so labels that arrive
    during training are trained on exactly once more, however many requests come in meanwhile.

    The message is sent after commit. When the broker refuses it the run stays queued and its
    ``enqueue_error`` says so (the reconciler sends it later): check ``run.enqueue_error``.

    The pretrained weights are checked here (a missing, truncated or tampered file is refused
    now); with ``fetch_weights`` a torchvision name or URL not cached yet is downloaded now too.

    Raises:
        TrainingParamsError: bad parameters or unusable weights; nothing was created.
    """
    if trigger not in Trigger.values:
        raise ValueError(f"unknown trigger {trigger!r}")
    parsed = training_params_parse(params)
    training_weights_check(parsed, fetch=fetch_weights)
    clean = parsed.as_json()
    max_attempts = int(settings.TRAINING_MAX_ATTEMPTS)
    for _ in range(3):
        try:
            with transaction.atomic():
                existing = _in_flight(family)
                if existing is not None:
                    if trigger == Trigger.AUTO and existing.status == Status.RUNNING:
                        TrainingRun.objects.filter(pk=existing.pk).update(followup_requested=True)
                        existing.followup_requested = True
                    return existing, False
                run = TrainingRun.objects.create(
                    family=family,
                    requested_by=requested_by if getattr(requested_by, "pk", None) else None,
                    trigger=trigger,
                    params=clean,
                    max_attempts=max_attempts,
                    log=run_log_line(f"requested ({trigger})"),
                )
                # Sent only once the row is committed, so the worker always finds it.
                transaction.on_commit(partial(training_run_enqueue, run_id=run.pk))
        except IntegrityError:
            # Another request inserted between our read and our insert: theirs stands.
            continue
        run.refresh_from_db()
        return run, True
    with transaction.atomic():
        existing = _in_flight(family)
    if existing is None:  # pragma: no cover - three lost races and nothing in flight
        raise RuntimeError("could not create or find a training run")
    return existing, False


# ---------------------------------------------------------------------------- claim / lease


class ClaimOutcome(StrEnum):
    CLAIMED = "claimed"
    BUSY = "busy"  # another worker holds a live lease: this message is a duplicate
    LOCKED = "locked"  # the row is locked by another transaction right now
    FINISHED = "finished"  # succeeded or failed already: a late duplicate
    MISSING = "missing"
    GAVE_UP = "gave_up"  # the attempt limit was reached: failed now, message dropped


@dataclass
class Claim:
    outcome: ClaimOutcome
    run: TrainingRun | None = None
    attempt: int = 0


def lease_seconds(run: TrainingRun) -> int:
    return int(run.params.get("lease_seconds") or settings.TRAINING_LEASE_SECONDS)


def training_run_claim(*, run_id: int, worker_id: str, now: datetime | None = None) -> Claim:
    """Take the run: queued, or running with an expired lease (takeover). Returns at once.

    The row is read with ``select_for_update(skip_locked=True)``, so a claimer never waits on a
    lock (reliability F14), then written with an UPDATE conditioned on the state it read.
    """
    now = now or timezone.now()
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update(skip_locked=True).filter(pk=run_id).first()
        if run is None:
            exists = TrainingRun.objects.filter(pk=run_id).exists()
            return Claim(ClaimOutcome.LOCKED if exists else ClaimOutcome.MISSING)
        if run.is_finished:
            return Claim(ClaimOutcome.FINISHED, run)
        if run.lease_live(now):
            return Claim(ClaimOutcome.BUSY, run)
        if run.attempts_spent:
            _give_up(run, now=now)
            run.refresh_from_db()
            return Claim(ClaimOutcome.GAVE_UP, run)
        attempt = run.attempts + 1
        takeover = run.status == Status.RUNNING
        note = (
            f"attempt {attempt} claimed by {worker_id}"
            + (f" (lease of {run.worker_id} expired)" if takeover else "")
        )
        updated = TrainingRun.objects.filter(
            pk=run.pk, status=run.status, attempts=run.attempts
        ).claim(
            now=now,
            lease_s=lease_seconds(run),
            worker_id=worker_id[:255],
            started_at=run.started_at or now,
            enqueue_error="",
            log=Concat(F("log"), Value(run_log_line(note, now=now))),
        )
        if updated != 1:  # pragma: no cover - the row lock makes this a can't-happen
            return Claim(ClaimOutcome.BUSY, run)
    run.refresh_from_db()
    logger.info("training run %s: %s", run.pk, note)
    return Claim(ClaimOutcome.CLAIMED, run, attempt)


def _fenced(run_id: int, attempt: int):
    return TrainingRun.objects.filter(pk=run_id).held_by(attempt)


def training_run_heartbeat(
    *,
    run_id: int,
    attempt: int,
    lease_s: int,
    progress: float | None = None,
    metrics: list[dict[str, Any]] | None = None,
    state_sha256: str | None = None,
    note: str | None = None,
) -> None:
    """Renew the lease and record progress, only while this attempt still holds the run.

    Raises:
        LeaseLost: the run was taken over or finished by someone else; stop working on it.
    """
    now = timezone.now()
    fields: dict[str, Any] = {}
    if progress is not None:
        fields["progress"] = max(0.0, min(1.0, progress))
    if metrics is not None:
        fields["metrics"] = metrics
    if state_sha256 is not None:
        fields["state_sha256"] = state_sha256
    if note:
        fields["log"] = Concat(F("log"), Value(run_log_line(note, now=now)))
    if _fenced(run_id, attempt).renew(lease_s=lease_s, now=now, **fields) != 1:
        raise LeaseLost(f"training run {run_id}: attempt {attempt} no longer holds the lease")


def training_run_record(*, run_id: int, attempt: int, **fields: Any) -> None:
    """Store fields of this attempt (snapshot path and hash...), fenced like a heartbeat.

    Raises:
        LeaseLost: as :func:`training_run_heartbeat`.
    """
    if _fenced(run_id, attempt).update(**fields) != 1:
        raise LeaseLost(f"training run {run_id}: attempt {attempt} no longer holds the lease")


def training_run_followup_create(run: TrainingRun) -> TrainingRun | None:
    """Create the coalesced follow-up of a run that has just finished (inside its transaction)."""
    if not run.followup_requested:
        return None
    from training.services.params import TrainingParamsError

    params = {
        k: v for k, v in run.params.items() if k in ("backbone", "weights", "mode", "epochs")
    }
    try:
        clean = training_params_parse(params).as_json()
    except TrainingParamsError:  # settings changed since: never let this block the finish
        clean = training_params_parse({}).as_json()
    followup = TrainingRun.objects.create(
        family=run.family,
        trigger=Trigger.AUTO,
        params=clean,
        max_attempts=run.max_attempts,
        log=run_log_line(f"follow-up of run {run.pk}: labels arrived while it was training"),
    )
    transaction.on_commit(partial(training_run_enqueue, run_id=followup.pk))
    return followup


def _finish(queryset, run_id: int, *, status: str, error: str = "", note: str) -> bool:
    """Move a run out of flight with a conditional UPDATE, then start its follow-up if any."""
    now = timezone.now()
    with transaction.atomic():
        updated = queryset.finish(
            status=status,
            error=error,
            now=now,
            log=Concat(F("log"), Value(run_log_line(note, now=now))),
        )
        if updated != 1:
            return False
        training_run_followup_create(TrainingRun.objects.get(pk=run_id))
    return True


def training_run_fail(*, run_id: int, attempt: int, error: str) -> bool:
    """Mark this attempt's run failed; False when the attempt no longer holds it."""
    logger.error("training run %s failed: %s", run_id, error)
    return _finish(
        _fenced(run_id, attempt), run_id, status=Status.FAILED, error=error,
        note=f"attempt {attempt} failed: {error.splitlines()[0] if error else ''}",
    )


def training_run_release(*, run_id: int, attempt: int, reason: str) -> bool:
    """Hand the run back to the queue after a transient error, so the retry can claim it."""
    return (
        _fenced(run_id, attempt).requeue(
            log=Concat(F("log"), Value(run_log_line(f"attempt {attempt} released: {reason}"))),
        )
        == 1
    )


def _give_up(run: TrainingRun, *, now: datetime) -> bool:
    """The poison guard: fail a run whose attempts are spent instead of running it again."""
    queryset = TrainingRun.objects.filter(
        pk=run.pk, status=run.status, attempts=run.attempts
    )
    error = (
        f"gave up after {run.attempts} attempts: each one stopped without finishing "
        "(the worker was killed or lost its lease), so the message was dropped"
    )
    return _finish(queryset, run.pk, status=Status.FAILED, error=error, note=error)


# ---------------------------------------------------------------------------- reconciler


@dataclass
class ReconcileSummary:
    resent: list[int] = field(default_factory=list)
    gave_up: list[int] = field(default_factory=list)
    send_errors: list[int] = field(default_factory=list)
    scoring_resent: int = 0

    def summary(self) -> str:
        return (
            f"re-sent {len(self.resent)} run(s), gave up on {len(self.gave_up)}, "
            f"{len(self.send_errors)} not sent (broker down), "
            f"{self.scoring_resent} scoring chunk(s) re-sent"
        )


def training_runs_reconcile(
    *, now: datetime | None = None, stale_after_s: float | None = None
) -> ReconcileSummary:
    """Repair what lost messages leave behind; run it every few minutes (beat).

    - a run ``queued`` whose message never went out (broker down at enqueue) or went out longer
      than ``stale_after_s`` ago is sent again;
    - a run ``running`` whose lease expired (its worker died) is sent again so that a worker
      takes it over and resumes from the last checkpoint;
    - either is failed instead once its attempts are spent (poison guard);
    - scoring chunks left undone are sent again.

    Sending twice is harmless: a message that finds a live lease or a finished run does nothing.
    """
    from training.services.scoring import scoring_reconcile

    now = now or timezone.now()
    if stale_after_s is None:
        stale_after_s = float(settings.TRAINING_REQUEUE_AFTER_SECONDS)
    stale = now - timedelta(seconds=stale_after_s)
    summary = ReconcileSummary()
    candidates = TrainingRun.objects.active().order_by("pk")
    for run in candidates:
        if run.lease_live(now):
            continue
        never_sent = run.enqueued_at is None or bool(run.enqueue_error)
        # not never_sent: enqueued_at is set
        if not never_sent and cast(datetime, run.enqueued_at) > stale:
            continue
        if run.attempts_spent:
            if _give_up(run, now=now):
                summary.gave_up.append(run.pk)
            continue
        training_run_log(run_id=run.pk, text="reconciler: sending the run again")
        if training_run_enqueue(run_id=run.pk):
            summary.send_errors.append(run.pk)
        else:
            summary.resent.append(run.pk)
    summary.scoring_resent = scoring_reconcile(now=now, stale_after_s=stale_after_s)
    if summary.resent or summary.gave_up or summary.send_errors or summary.scoring_resent:
        logger.info("training reconcile: %s", summary.summary())
    return summary
