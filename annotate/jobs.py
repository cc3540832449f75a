"""Jobs: rows that a Celery task serves, and the rules of their queued → running → finished life.

The row, not the message, is the source of truth: delivery is at least once, so a task claims
its row with a conditional UPDATE and a redelivered message that finds it claimed or finished does
nothing. The rules are said here once and used by training runs, round requests and dataset
releases (:class:`Job`), the attempt counting (the poison guard) by those and by scoring chunks
(:class:`Attempts`), and the lease by training runs (:class:`LeasedJob`).

Here, in the lowest Django layer, so that every app may use it (``annotate`` < ``training``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar, Self, cast

from django.db import models
from django.db.models import F, Q
from django.utils import timezone


class JobStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"


#: A job in flight: waiting for a worker, or held by one.
ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)
#: A finished job never changes state again.
FINISHED_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED)


class JobQuerySet(models.QuerySet):
    """The writes of a job's life, each one conditional UPDATE returning the rows it changed.

    Select the job first (``filter(pk=...)``, plus a fence such as :meth:`held_by`); a method
    that changes 0 rows means another caller won or the job was not in the state it needs.
    """

    # ------------------------------------------------------------------ attempts (poison guard)

    def with_attempts_left(self) -> Self:
        return self.filter(attempts__lt=F("max_attempts"))

    def count_attempt(self, **fields: Any) -> int:
        """Count one more attempt on the rows that have attempts left (and write ``fields``)."""
        return self.with_attempts_left().update(attempts=F("attempts") + 1, **fields)

    # ------------------------------------------------------------------ status

    def active(self) -> Self:
        return self.filter(status__in=ACTIVE_STATUSES)

    def claimable(self, *, now: datetime | None = None) -> Self:
        """Jobs a worker may take now: queued, or running but lost (see :meth:`Job.lost`)."""
        return self.filter(cast("type[Job]", self.model).claimable_q(now or timezone.now()))

    def claim(self, *, now: datetime | None = None, lease_s: float | None = None,
              **fields: Any) -> int:
        """queued (or running but lost) → running, in one conditional UPDATE; 1 if this caller won.

        ``started_at`` becomes ``now`` unless ``fields`` says otherwise; a job that counts
        attempts counts one, and is claimed only while it has attempts left (the poison guard:
        a caller that loses on spent attempts fails the job, see :meth:`finish`); a leased job
        takes a lease of ``lease_s`` seconds from ``now``.
        """
        model = self.model
        now = now or timezone.now()
        queryset = self.claimable(now=now)
        changes: dict[str, Any] = {"status": JobStatus.RUNNING, "started_at": now}
        if issubclass(model, Attempts):
            queryset = queryset.with_attempts_left()
            changes["attempts"] = F("attempts") + 1
        if issubclass(model, LeasedJob):
            if lease_s is None:
                raise TypeError(f"claiming a {model.__name__} needs lease_s")
            changes.update(lease_until=now + timedelta(seconds=lease_s), heartbeat_at=now)
        changes.update(fields)
        return queryset.update(**changes)

    def held_by(self, attempt: int) -> Self:
        """The fence of a worker's writes: running, and still under the attempt it claimed."""
        return self.filter(status=JobStatus.RUNNING, attempts=attempt)

    def renew(self, *, lease_s: float, now: datetime | None = None, **fields: Any) -> int:
        """Renew the lease of running jobs (the heartbeat), writing ``fields`` with it."""
        now = now or timezone.now()
        return self.filter(status=JobStatus.RUNNING).update(
            heartbeat_at=now, lease_until=now + timedelta(seconds=lease_s), **fields
        )

    def requeue(self, **fields: Any) -> int:
        """running → queued: hand the job back after a transient error, so a retry can claim it
        (the attempt stays counted)."""
        changes: dict[str, Any] = {"status": JobStatus.QUEUED}
        if issubclass(self.model, LeasedJob):
            changes["lease_until"] = None
        changes.update(fields)
        return self.filter(status=JobStatus.RUNNING).update(**changes)

    def finish(self, *, status: str, error: str | None = None, now: datetime | None = None,
               **fields: Any) -> int:
        """In flight → ``status`` (succeeded or failed), stamped ``finished_at``; a finished job is
        never finished again. ``error`` (cut to the model's ``error_max_length``) replaces the
        stored one when given; a leased job's lease is dropped."""
        if status not in FINISHED_STATUSES:
            raise ValueError(f"a job finishes succeeded or failed, not {status!r}")
        changes: dict[str, Any] = {"status": status, "finished_at": now or timezone.now()}
        if error is not None:
            changes["error"] = error[: cast("type[Job]", self.model).error_max_length]
        if issubclass(self.model, LeasedJob):
            changes["lease_until"] = None
        changes.update(fields)
        return self.active().update(**changes)


class Attempts(models.Model):
    """The attempt counter of a job served at least once: given up after ``max_attempts``."""

    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)

    objects = JobQuerySet.as_manager()

    class Meta:
        abstract = True

    @property
    def attempts_spent(self) -> bool:
        """Every attempt was used (each one died with its worker): give up instead of running."""
        return self.attempts >= self.max_attempts


class Job(models.Model):
    """A row a task serves: ``queued`` → ``running`` → ``succeeded`` or ``failed``."""

    Status = JobStatus
    ACTIVE_STATUSES = ACTIVE_STATUSES

    #: How long ``error`` may be (None: as long as it comes).
    error_max_length: ClassVar[int | None] = None
    #: A running job claimed longer ago than this was lost with its worker and may be claimed
    #: again (None: never; a leased job says it with its lease instead).
    stale_after: ClassVar[timedelta | None] = None

    status = models.CharField(
        max_length=12, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True
    )
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        abstract = True

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @classmethod
    def lost(cls, now: datetime) -> Q | None:
        """Which running jobs were lost with their worker at ``now`` (None: none ever is)."""
        if cls.stale_after is None:
            return None
        return Q(started_at__lt=now - cls.stale_after)

    @classmethod
    def claimable_q(cls, now: datetime) -> Q:
        queued = Q(status=JobStatus.QUEUED)
        lost = cls.lost(now)
        return queued if lost is None else queued | (Q(status=JobStatus.RUNNING) & lost)


class AttemptedJob(Attempts, Job):
    """A job whose claims are counted: the poison guard fails it after ``max_attempts``."""

    objects = JobQuerySet.as_manager()  # type: ignore[misc]  # the stubs make each as_manager() a new class

    class Meta:
        abstract = True


class LeasedJob(AttemptedJob):
    """A long job held under a lease its worker renews; an expired lease may be taken over."""

    lease_until = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker_id = models.CharField(max_length=255, blank=True)

    objects = JobQuerySet.as_manager()  # type: ignore[misc]  # the stubs make each as_manager() a new class

    class Meta:
        abstract = True

    @classmethod
    def lost(cls, now: datetime) -> Q | None:
        return Q(lease_until__isnull=True) | Q(lease_until__lte=now)

    def lease_live(self, now: datetime | None = None) -> bool:
        """A worker holds this job under a lease that has not expired."""
        now = now or timezone.now()
        return (
            self.status == JobStatus.RUNNING
            and self.lease_until is not None
            and self.lease_until > now
        )

    def lease_expired(self, now: datetime | None = None) -> bool:
        """Running, but its worker stopped renewing the lease: it may be taken over."""
        return self.status == JobStatus.RUNNING and not self.lease_live(now)
