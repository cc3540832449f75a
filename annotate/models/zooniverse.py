"""The Zooniverse mirror: workflows and their versions, rounds and their picks, subjects, and
the sync cursors."""

from __future__ import annotations

from django.db import models

from annotate.models.catalogue import Item


class Workflow(models.Model):
    """A Zooniverse workflow asking volunteers which concepts apply."""

    zooniverse_id = models.PositiveBigIntegerField(unique=True)
    project_id = models.PositiveBigIntegerField(null=True, blank=True)
    display_name = models.CharField(max_length=500, blank=True)
    task_key = models.CharField(max_length=32, default="T0")
    task_type = models.CharField(max_length=32, default="multiple")
    active = models.BooleanField(default=True)
    subject_match = models.CharField(
        max_length=255,
        blank=True,
        default="",
        help_text=(
            "How this workflow's subjects find their items: empty for the built-in metadata keys "
            "(external_id, europeana_id, crowdloop_id), 'subject_id' for subjects brought in by "
            "import_subjects, or the subject metadata key that holds the item's external id "
            "(e.g. '!europeana_id', 'Filename')."
        ),
    )
    created_at = models.DateTimeField(auto_now_add=True)

    #: ``subject_match`` value: items found through the subject id (see import_subjects).
    MATCH_SUBJECT_ID = "subject_id"

    def __str__(self) -> str:
        return self.display_name or f"workflow {self.zooniverse_id}"


class WorkflowVersion(models.Model):
    """The answers of one workflow version, each mapped to a concept (or to none).

    ``answers`` is a list ordered by answer index,
    ``[{"label": "painting", "concept": "painting"}]``.
    The API gives answer indices and exports give labels; both resolve through this map.
    """

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    version = models.CharField(max_length=32, help_text="major.minor as Zooniverse writes it.")
    task_key = models.CharField(max_length=32, default="T0")
    task_type = models.CharField(max_length=32, default="multiple")
    answers = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workflow", "version"], name="workflow_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.workflow} v{self.version}"


class Round(models.Model):
    """A batch of items pushed to Zooniverse as one subject set."""

    class Status(models.TextChoices):
        DRAFT = "draft", "draft"
        PUSHED = "pushed", "pushed"
        CLOSED = "closed", "closed"

    number = models.PositiveIntegerField(unique=True)
    name = models.CharField(max_length=200)
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, null=True, blank=True)
    strategy = models.CharField(max_length=64, default="manual")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.DRAFT)
    subject_set_id = models.PositiveBigIntegerField(null=True, blank=True)
    model_version = models.ForeignKey(
        "training.ModelVersion",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="rounds",
        help_text="The model whose predictions chose the round (none for a cold start).",
    )
    random_share = models.FloatField(default=0.0, help_text="Share of random control picks.")
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    pushed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-number"]

    def __str__(self) -> str:
        return self.name


class RoundPick(models.Model):
    """Why an item is in a round: its rank, the strategy's score and the reason."""

    class Reason(models.TextChoices):
        UNCERTAIN = "uncertain", "the model is unsure"
        DIVERSE = "diverse", "unsure and unlike the other picks"
        TYPICAL = "typical", "typical of a cluster (cold start)"
        RANDOM = "random", "random control"
        RELABEL = "relabel", "another vote on a contested item"

    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="picks")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="picks")
    rank = models.PositiveIntegerField(help_text="1 is shown to volunteers first.")
    score = models.FloatField(null=True, blank=True)
    reason = models.CharField(max_length=12, choices=Reason.choices)

    class Meta:
        ordering = ["round", "rank"]
        constraints = [
            models.UniqueConstraint(fields=["round", "item"], name="round_pick_unique"),
            models.UniqueConstraint(fields=["round", "rank"], name="round_pick_rank_unique"),
        ]

    def __str__(self) -> str:
        return f"#{self.rank} {self.reason}"


class Subject(models.Model):
    """A Zooniverse subject and the item it shows."""

    class Upstream(models.TextChoices):
        ACTIVE = "active", "active"
        DELETED = "deleted", "deleted upstream"

    zooniverse_id = models.PositiveBigIntegerField(unique=True)
    item = models.ForeignKey(
        Item, on_delete=models.SET_NULL, null=True, blank=True, related_name="subjects"
    )
    round = models.ForeignKey(
        Round, on_delete=models.SET_NULL, null=True, blank=True, related_name="subjects"
    )
    priority = models.FloatField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    retirement_reason = models.CharField(max_length=32, blank=True)
    upstream_state = models.CharField(
        max_length=12, choices=Upstream.choices, default=Upstream.ACTIVE
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"subject {self.zooniverse_id}"


class SyncCursor(models.Model):
    """The largest classification id committed for a workflow, written with each batch."""

    workflow = models.OneToOneField(Workflow, on_delete=models.CASCADE, related_name="cursor")
    last_id = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"cursor at {self.last_id}"
