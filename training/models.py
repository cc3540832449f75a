"""The model side of crowdloop: training runs, model versions, predictions, scoring chunks.

A :class:`TrainingRun` row is the source of truth for a retrain, not the Celery message: the
message only says "look at run N". Workers claim the row with a conditional UPDATE, hold a lease
they renew every epoch, and publish their result fenced by the attempt number they claimed, so a
duplicate or late message can never publish twice or over a newer attempt.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db import models
from django.db.models import Q

from annotate.jobs import AttemptedJob, Attempts, LeasedJob

DEFAULT_FAMILY = "default"


class TrainingRun(LeasedJob):
    """One request to retrain, and everything that happened while serving it.

    A :class:`~annotate.jobs.LeasedJob`: status, attempts and the lease (``lease_until``,
    ``heartbeat_at``, ``worker_id``) the worker holding the run renews every epoch; an expired
    lease may be taken over.
    """

    error_max_length = 10_000

    class Trigger(models.TextChoices):
        BUTTON = "button", "admin button"
        API = "api", "REST API"
        COMMAND = "command", "train command"
        BEAT = "beat", "nightly schedule"
        AUTO = "auto", "new labels"

    # One model family today; the constraint is per family so a second vocabulary could train
    # beside the first without waiting for it.
    family = models.CharField(max_length=64, default=DEFAULT_FAMILY)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    trigger = models.CharField(max_length=12, choices=Trigger.choices)
    params = models.JSONField(default=dict, blank=True)
    progress = models.FloatField(default=0.0, help_text="0 to 1.")
    metrics = models.JSONField(default=list, blank=True, help_text="One dict per epoch.")
    # When the last message for this run went to the broker, and why the last send failed.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    enqueue_error = models.TextField(blank=True)
    # "New labels arrived while this run was training": one follow-up run, however many arrive.
    followup_requested = models.BooleanField(default=False)
    # The training-set snapshot (JSON under ARTIFACT_ROOT) and the resumable training state.
    snapshot_path = models.CharField(max_length=500, blank=True)
    snapshot_sha256 = models.CharField(max_length=64, blank=True)
    # The pretrained weights the run started from, as asked (a torchvision weights name, a file, a
    # URL) and as read: the sha256 of the file.
    weights = models.CharField(max_length=500, blank=True)
    weights_sha256 = models.CharField(max_length=64, blank=True)
    n_items = models.PositiveIntegerField(null=True, blank=True)
    labels_counted = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Final labels counted (training_set_count) when the snapshot was taken: the "
        "baseline of 'new labels since the last run'.",
    )
    state_sha256 = models.CharField(max_length=64, blank=True)
    log = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # The database, not the lease or luck, refuses a second concurrent run.
            models.UniqueConstraint(
                fields=["family"],
                condition=Q(status__in=["queued", "running"]),
                name="training_run_one_in_flight",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["queued", "running", "succeeded", "failed"]),
                name="training_run_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"training run {self.pk} ({self.status})"


class ModelVersion(models.Model):
    """A trained model: its checkpoint, what it predicts and how well it did on validation."""

    class Status(models.TextChoices):
        CANDIDATE = "candidate", "candidate"
        ACTIVE = "active", "active"
        ARCHIVED = "archived", "archived"

    family = models.CharField(max_length=64, default=DEFAULT_FAMILY)
    status = models.CharField(
        max_length=12, choices=Status.choices, default=Status.CANDIDATE, db_index=True
    )
    # One version per run: a second publish of the same run fails on this constraint.
    training_run = models.OneToOneField(
        TrainingRun, on_delete=models.PROTECT, null=True, blank=True, related_name="model_version"
    )
    class Kind(models.TextChoices):
        TRAINED = "trained", "trained on crowd labels"
        ZERO_SHOT = "zero_shot", "zero-shot (image-text model, no training)"

    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.TRAINED)
    backbone = models.CharField(max_length=64)
    mode = models.CharField(max_length=12, default="finetune")
    # Provenance of the pretrained weights under the trunk (see TrainingRun.weights).
    weights = models.CharField(max_length=500, blank=True)
    weights_sha256 = models.CharField(max_length=64, blank=True)
    # The promotion gate's comparison: the candidate and the version active then, scored on the
    # same validation items ({"items", "candidate_map", "active_map", "active_version"}).
    gate = models.JSONField(default=dict, blank=True)
    concepts = models.JSONField(default=list, help_text="Concept keys in output order.")
    checkpoint_path = models.CharField(
        max_length=500, help_text="Sidecar JSON path relative to ARTIFACT_ROOT."
    )
    checkpoint_sha256 = models.CharField(max_length=64)
    snapshot_sha256 = models.CharField(max_length=64, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    val_map = models.FloatField(null=True, blank=True)
    thresholds = models.JSONField(default=list, blank=True)
    n_train = models.PositiveIntegerField(default=0)
    n_val = models.PositiveIntegerField(default=0)
    # Scoring of the pool, filled by the chunk tasks.
    scoring_chunks = models.PositiveIntegerField(default=0)
    scoring_chunks_done = models.PositiveIntegerField(default=0)
    scoring_chunks_failed = models.PositiveIntegerField(default=0)
    scored_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    promoted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    promotion_note = models.CharField(
        max_length=500,
        blank=True,
        help_text="How the version was judged at promotion: the gate's comparison with the "
        "version active then, and, when a person promoted it over a better one, who confirmed it.",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["family"], condition=Q(status="active"), name="model_version_one_active"
            ),
        ]

    def __str__(self) -> str:
        return f"model v{self.pk} ({self.status})"


class Prediction(models.Model):
    """A model version's scores for one item: float32 little-endian, in the version's concept order.

    One row of ~100 bytes per item keeps a pool of a million items at ~100 MB per version, and
    ``uncertainty`` (the largest per-concept closeness to 0.5, 0 to 1) is indexed so that
    selection reads the most uncertain items without decoding any blob.
    """

    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="predictions"
    )
    item = models.ForeignKey("annotate.Item", on_delete=models.CASCADE, related_name="predictions")
    scores = models.BinaryField()
    uncertainty = models.FloatField()
    created_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model_version", "item"], name="prediction_unique")
        ]
        indexes = [models.Index(fields=["model_version", "-uncertainty"])]

    def __str__(self) -> str:
        return f"prediction of {self.item_id} by v{self.model_version_id}"

    @staticmethod
    def pack(scores: np.ndarray) -> bytes:
        return np.asarray(scores, dtype="<f4").tobytes()

    def probabilities(self) -> np.ndarray:
        return np.frombuffer(bytes(self.scores), dtype="<f4")

    def scores_by_key(self) -> dict[str, float]:
        keys = self.model_version.concepts
        return {k: round(float(p), 6) for k, p in zip(keys, self.probabilities(), strict=True)}


class ScoringChunk(Attempts):
    """A contiguous id range of the pool that one task scores; claimed and counted like a run.

    Its attempt counter (:class:`~annotate.jobs.Attempts`) is the poison guard of scoring: a chunk
    that kills its worker every time is given up after ``max_attempts`` instead of being
    redelivered forever. It has no status of its own: it is open until ``done_at`` or ``error``
    is set, and its group, not the chunk, is what staff watch (the version's chunk counters).
    """

    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="scoring_chunk_rows"
    )
    index = models.PositiveIntegerField()
    first_item_id = models.BigIntegerField()
    last_item_id = models.BigIntegerField()
    sent_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["model_version", "index"]
        constraints = [
            models.UniqueConstraint(fields=["model_version", "index"], name="scoring_chunk_unique")
        ]

    def __str__(self) -> str:
        return f"chunk {self.index} of v{self.model_version_id}"


class RoundRequest(AttemptedJob):
    """A request to choose the next round (``select_round`` through the API), served by a task.

    Like a training run, the row, not the Celery message, is the source of truth: the task claims
    it with a conditional UPDATE and counts attempts (:class:`~annotate.jobs.AttemptedJob`), and
    the round it makes is linked in the same transaction that records the picks, so a redelivered
    message never makes a second round. It has no lease: a request claimed longer ago than
    ``stale_after`` and still running was lost with its worker (the task's hard time limit is
    shorter) and may be claimed again.
    """

    stale_after = timedelta(seconds=2000)

    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    params = models.JSONField(
        default=dict, blank=True, help_text="The arguments of select_round, as checked."
    )
    round = models.OneToOneField(
        "annotate.Round",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="request",
    )
    summary = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"round request {self.pk} ({self.status})"
