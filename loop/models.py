"""The pipeline's state: one row per step, and an append-only log of what each run did.

A :class:`LoopStep` row is the step's mailbox and lock at once. A trigger stamps
``requested_at``; the first trigger since the last message also flips ``queued`` and sends one
task, so ten pulls in a row queue one aggregation, not ten. The task claims the row (under a row
lock: ``running_since``, ``lease_until`` and its own task id), does the work, and clears the
request only if nothing newer arrived meanwhile; a newer request sends one more message. The
request is the source of truth, not the message: a lost message or a killed worker leaves the
request standing, and the reconciler (beat, every minute) sends it again once the lease is over.
"""

from __future__ import annotations

from django.db import models


class StepName(models.TextChoices):
    PULL = "pull", "pull classifications"
    AGGREGATE = "aggregate", "aggregate votes"
    RETIRE = "retire", "retire settled subjects"
    TRAIN = "train", "retrain the model"
    SCORE = "score", "score the pool"
    ROUND = "round", "choose and push the next round"


class LoopStep(models.Model):
    """A step of the pipeline: its pending request, its lock and its last outcome."""

    name = models.CharField(max_length=16, choices=StepName.choices, unique=True)
    requested_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the oldest trigger not served yet arrived (none: nothing to do).",
    )
    request_reason = models.CharField(max_length=300, blank=True)
    #: Triggers counted up; the run that serves them sets ``served_seq`` to what it saw.
    request_seq = models.PositiveBigIntegerField(default=0)
    served_seq = models.PositiveBigIntegerField(default=0)
    queued = models.BooleanField(
        default=False, help_text="A message for this step is on its way to a worker."
    )
    queued_at = models.DateTimeField(null=True, blank=True)
    running_since = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    running_task = models.CharField(max_length=64, blank=True)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)
    last_status = models.CharField(max_length=12, blank=True)
    last_summary = models.TextField(blank=True)
    last_error = models.TextField(blank=True)
    runs = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    #: Step-specific memory: the aggregation's classification watermark and last full pass.
    state = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.get_name_display()


class LoopEvent(models.Model):
    """One run of a step (or one failed try): what asked for it, what it did, how it ended."""

    class Status(models.TextChoices):
        DONE = "done", "done"
        NOTHING = "nothing", "nothing to do"
        RETRYING = "retrying", "failed, will retry"
        FAILED = "failed", "failed"

    step = models.CharField(max_length=16, choices=StepName.choices)
    status = models.CharField(max_length=12, choices=Status.choices)
    trigger = models.CharField(max_length=300, blank=True)
    summary = models.TextField(blank=True)
    error = models.TextField(blank=True)
    #: Numbers the dashboard adds up: votes, labels_changed, retired, run_id, round_id, ...
    detail = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    task_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-finished_at", "-id"]
        indexes = [models.Index(fields=["step", "-finished_at"], name="loop_event_step_time")]

    def __str__(self) -> str:
        return f"{self.step} {self.status} at {self.finished_at:%Y-%m-%d %H:%M:%S}"

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()
