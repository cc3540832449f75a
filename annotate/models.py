"""The crowd side of crowdloop: vocabulary, items, Zooniverse mirror, raw votes, clean labels."""

from __future__ import annotations

import enum
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from annotate.jobs import Job


class Concept(models.Model):
    """One entry of the vocabulary volunteers tag images with."""

    key = models.SlugField(max_length=64, unique=True)
    label = models.CharField(max_length=200)
    uri = models.URLField(max_length=500, blank=True)
    description = models.TextField(blank=True)
    position = models.PositiveIntegerField(default=0, help_text="Order in the vocabulary.")
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["position", "key"]

    def __str__(self) -> str:
        return self.label


def item_has_votes() -> models.Case:
    """1 for an item with counted votes, else 0: the review queue's first sort key.

    One definition for the queue's ORDER BY and the index behind it, whose expression PostgreSQL
    must match exactly.
    """
    return models.Case(
        models.When(n_classifications__gt=0, then=models.Value(1)),
        default=models.Value(0),
        output_field=models.IntegerField(),
    )


def item_is_uncertain() -> models.Case:
    """1 for an item whose crowd has not made up its mind (consensus "uncertain"), else 0.

    The review queue's second sort key: undecided items come before any conflict. One definition
    for the queue's ORDER BY and the index behind it, like :func:`item_has_votes`.
    """
    return models.Case(
        models.When(consensus="uncertain", then=models.Value(1)),
        default=models.Value(0),
        output_field=models.IntegerField(),
    )


class ItemQuerySet(models.QuerySet):
    def curated(self) -> ItemQuerySet:
        """Items a curator accepted or edited: their labels are the curator's."""
        return self.filter(review_state__in=Item.ReviewState.CURATED)


class Item(models.Model):
    """A digitised object with one image: the unit volunteers classify and the model learns."""

    class ImageState(models.TextChoices):
        PENDING = "pending", "not checked yet"
        OK = "ok", "ok"
        CORRUPT = "corrupt", "corrupt or truncated"
        INVALID = "invalid", "not an image"
        REFUSED = "refused", "format not allowed"
        TOO_LARGE = "too_large", "too large"
        MISSING = "missing", "file missing"
        UNREACHABLE = "unreachable", "download failed"

    class ReviewState(models.TextChoices):
        UNREVIEWED = "unreviewed", "not reviewed"
        ACCEPTED = "accepted", "accepted"
        EDITED = "edited", "edited"
        REJECTED = "rejected", "rejected"
        #: A curator's decision that gives the item its labels (a rejection gives it none).
        CURATED = enum.nonmember(("accepted", "edited"))
        #: Every state a curator's decision leaves.
        DECIDED = enum.nonmember(("accepted", "edited", "rejected"))

    class Consensus(models.TextChoices):
        NONE = "none", "no votes"
        UNCERTAIN = "uncertain", "uncertain"
        CONFIDENT = "confident", "confident"

    external_id = models.CharField(max_length=255, unique=True)
    image_url = models.URLField(max_length=2000, blank=True)
    image_file = models.CharField(
        max_length=500, blank=True, help_text="Path under MEDIA_ROOT of the local copy."
    )
    image_sha256 = models.CharField(max_length=64, blank=True)
    image_width = models.PositiveIntegerField(null=True, blank=True)
    image_height = models.PositiveIntegerField(null=True, blank=True)
    image_state = models.CharField(
        max_length=16, choices=ImageState.choices, default=ImageState.PENDING, db_index=True
    )
    image_error = models.CharField(max_length=500, blank=True)
    thumbnail = models.CharField(max_length=500, blank=True, help_text="Path under MEDIA_ROOT.")
    title = models.CharField(max_length=1000, blank=True)
    provider = models.CharField(max_length=500, blank=True)
    rights = models.CharField(max_length=500, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    # Derived by the aggregation and review services, kept here so lists need no joins.
    n_classifications = models.PositiveIntegerField(default=0)
    consensus = models.CharField(
        max_length=12, choices=Consensus.choices, default=Consensus.NONE, db_index=True
    )
    uncertainty = models.FloatField(
        default=0.0, db_index=True, help_text="Largest per-concept uncertainty, 0 to 1."
    )
    contradicts_prior = models.BooleanField(default=False, db_index=True)
    conflicts_model = models.BooleanField(
        default=False,
        db_index=True,
        help_text="The active model is confident one way on a concept where a confident crowd "
        "says the other (kept by the training app).",
    )
    zero_shot_contradicts_prior = models.BooleanField(
        default=False,
        help_text="The zero-shot model is confident that a concept of the prior enrichment does "
        "not apply (kept by the training app).",
    )
    review_state = models.CharField(
        max_length=12, choices=ReviewState.choices, default=ReviewState.UNREVIEWED, db_index=True
    )
    curated_concepts = models.JSONField(
        default=list,
        blank=True,
        help_text="Concept keys a curator set; the final label when reviewed.",
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ItemQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["review_state", "-uncertainty"]),
            # The review queue in its order, so a page and "next item" read a few index entries
            # instead of sorting every item in the state (annotate.selectors.review_queue).
            models.Index(
                models.F("review_state"),
                item_has_votes().desc(),
                item_is_uncertain().desc(),
                models.F("conflicts_model").desc(),
                models.F("contradicts_prior").desc(),
                models.F("uncertainty").desc(),
                models.F("id"),
                name="item_review_queue",
            ),
        ]

    def __str__(self) -> str:
        return self.external_id


class PriorLabel(models.Model):
    """A label from an earlier enrichment: a noisy prior, never the truth."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="prior_labels")
    concept = models.ForeignKey(Concept, on_delete=models.CASCADE, related_name="+")
    source = models.CharField(max_length=100, default="manifest")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "concept", "source"], name="prior_label_unique")
        ]

    def __str__(self) -> str:
        return f"{self.concept_id} ({self.source})"


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


class Volunteer(models.Model):
    """A Zooniverse volunteer; logged-out volunteers are keyed by their stable anonymous name."""

    key = models.CharField(max_length=255, unique=True)
    zooniverse_user_id = models.PositiveBigIntegerField(null=True, blank=True, db_index=True)
    user_name = models.CharField(max_length=255, blank=True)
    logged_in = models.BooleanField(default=True)
    n_classifications = models.PositiveIntegerField(default=0)
    excluded = models.BooleanField(
        default=False,
        db_index=True,
        help_text="Left out of aggregation (a spammer, a test account); see VolunteerExclusion.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.user_name or self.key


class VolunteerExclusion(models.Model):
    """Audit of excluding a volunteer from aggregation, or taking them back: append-only."""

    volunteer = models.ForeignKey(Volunteer, on_delete=models.PROTECT, related_name="exclusions")
    excluded = models.BooleanField(help_text="True: excluded; False: taken back.")
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    reason = models.TextField(blank=True, max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        verb = "excluded" if self.excluded else "taken back"
        return f"{self.volunteer} {verb} by {self.by} on {self.created_at:%Y-%m-%d %H:%M}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise AppendOnlyError("Exclusions are append-only: record a new one instead.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Exclusions are append-only and cannot be deleted.")


class RowIdAutoField(models.BigAutoField):
    """A ``BigAutoField`` that on SQLite is the table's plain rowid, without ``AUTOINCREMENT``.

    ``AUTOINCREMENT`` keeps ids of deleted rows from ever coming back, at the price of a write to
    ``sqlite_sequence`` with every insert (measured by ``bench/import_classifications.py
    --insert-variants``, figures in bench/README.md, "Classification import"). For an
    append-only table the guarantee buys nothing: a new id is still one more than the largest,
    and only deleting the newest rows would let their ids return. Other databases keep their own
    identity columns.
    """

    def db_type_suffix(self, connection: Any) -> str | None:
        if connection.vendor == "sqlite":
            return None
        return super().db_type_suffix(connection)


class Classification(models.Model):
    """One volunteer's answer on one subject: the raw vote, append-only."""

    id = RowIdAutoField(primary_key=True)
    zooniverse_id = models.PositiveBigIntegerField(unique=True)
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="+")
    workflow_version = models.CharField(max_length=32)
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="classifications")
    # No single-column indexes on item and volunteer: the composite indexes in Meta start with
    # them and serve the same lookups, and every index costs each of millions of inserted rows.
    item = models.ForeignKey(
        Item,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="classifications",
        db_index=False,
    )
    volunteer = models.ForeignKey(
        Volunteer, on_delete=models.PROTECT, related_name="classifications", db_index=False
    )
    created_at = models.DateTimeField(db_index=True)
    concept_ids = models.JSONField(
        default=list, help_text="Ids of the concepts ticked; [] when none was ticked."
    )
    invalid_answers = models.JSONField(
        default=list, blank=True, help_text="Answers that map to no concept; not aggregated."
    )
    is_duplicate = models.BooleanField(
        default=False, help_text="A later repeat by the same volunteer on the same subject."
    )
    # A vote is only what the volunteer was asked. A classification that does not hold the
    # workflow's task (a decision-tree branch that never asks it, a version without it) is kept
    # but gives no vote; nor does one with an answer that is none of its version's answers, whose
    # meaning is unknown. Aggregation reads only rows with both flags set.
    task_shown = models.BooleanField(
        default=True, help_text="False when the classification does not hold the task: no vote."
    )
    answers_known = models.BooleanField(
        default=True,
        help_text="False when an answer is none of its workflow version's answers: no vote.",
    )
    gold_standard = models.BooleanField(default=False)
    expert = models.BooleanField(default=False)
    # Logged-out volunteers are keyed by a hashed IP, which a classroom shares: repeats among them
    # are only flagged within one browser session (reliability B7), so the session is kept.
    session = models.CharField(max_length=128, blank=True)
    source = models.CharField(max_length=8, default="api")
    imported_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["volunteer", "subject", "created_at"]),
            models.Index(fields=["item", "is_duplicate"]),
        ]

    def __str__(self) -> str:
        return f"classification {self.zooniverse_id}"


class SyncCursor(models.Model):
    """The largest classification id committed for a workflow, written with each batch."""

    workflow = models.OneToOneField(Workflow, on_delete=models.CASCADE, related_name="cursor")
    last_id = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"cursor at {self.last_id}"


class ImportReport(models.Model):
    """What one import or sync did: counts, and the rows it set aside."""

    class Kind(models.TextChoices):
        ITEMS = "items", "items"
        CLASSIFICATIONS = "classifications", "classification export"
        SYNC = "sync", "Zooniverse sync"
        HARVEST = "harvest", "Europeana harvest"
        VOCABULARY = "vocabulary", "vocabulary"
        SUBJECTS = "subjects", "subject export"

    class Status(models.TextChoices):
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    source = models.CharField(max_length=1000, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RUNNING)
    total = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    quarantined = models.PositiveIntegerField(default=0)
    message = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.source}"

    #: The longest summary a report keeps.
    MESSAGE_LIMIT = 5000
    COUNT_FIELDS = frozenset({"total", "created", "updated", "unchanged", "quarantined"})

    def finish(self, status: str, message: str, *, keep_notes: bool = False, **counts: int) -> None:
        """End the report: its status, its summary ``message`` and the counts given, saved.

        ``keep_notes`` keeps what the run already wrote in ``message`` (notes such as unknown
        workflow versions) after the summary; otherwise the summary replaces it.
        """
        unknown = set(counts) - self.COUNT_FIELDS
        if unknown:
            raise ValueError(f"an import report has no count {', '.join(sorted(unknown))}")
        summary = message[: self.MESSAGE_LIMIT]
        self.status = status
        self.message = "\n".join(p for p in (summary, self.message) if p) if keep_notes else summary
        for field, value in counts.items():
            setattr(self, field, value)
        self.finished_at = timezone.now()
        self.save(update_fields=["status", "message", "finished_at", *counts])


class QuarantinedRow(models.Model):
    """A bad input record, kept with where it came from and why it was refused."""

    report = models.ForeignKey(ImportReport, on_delete=models.CASCADE, related_name="rows")
    line = models.PositiveIntegerField(null=True, blank=True)
    record_id = models.CharField(max_length=255, blank=True)
    field = models.CharField(max_length=100, blank=True)
    reason = models.CharField(max_length=1000)
    raw = models.TextField(blank=True)
    #: What makes the row this row (import kind, source, line, record, reason, raw text), hashed:
    #: re-running an import stores no row twice (``annotate.services.quarantine``).
    fingerprint = models.CharField(max_length=64, null=True, blank=True, editable=False)

    class Meta:
        ordering = ["report", "line"]
        constraints = [
            models.UniqueConstraint(fields=["fingerprint"], name="quarantined_row_once")
        ]

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class AggregatedLabel(models.Model):
    """The crowd's label for one item and concept, from the aggregation model."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="aggregated_labels")
    concept = models.ForeignKey(Concept, on_delete=models.CASCADE, related_name="+")
    posterior = models.FloatField()
    votes_for = models.PositiveIntegerField(default=0)
    votes_against = models.PositiveIntegerField(default=0)
    method = models.CharField(max_length=32)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "concept"], name="aggregated_label_unique")
        ]

    def __str__(self) -> str:
        return f"{self.posterior:.2f}"


class VolunteerSkill(models.Model):
    """A volunteer's sensitivity and specificity on one concept."""

    volunteer = models.ForeignKey(Volunteer, on_delete=models.CASCADE, related_name="skills")
    concept = models.ForeignKey(Concept, on_delete=models.CASCADE, related_name="+")
    sensitivity = models.FloatField()
    specificity = models.FloatField()
    n_votes = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["volunteer", "concept"], name="volunteer_skill_unique")
        ]

    def __str__(self) -> str:
        return f"se {self.sensitivity:.2f} / sp {self.specificity:.2f}"


class AggregationState(models.Model):
    """The crowd-level parameters of an aggregation pass: what an incremental pass starts from.

    A full pass stores the class prior and the crowd's average skill per concept (what a
    volunteer without votes gets), and the skill anonymous volunteers share; an incremental pass
    reads the latest row, scores the items with new votes under those parameters with the stored
    ``VolunteerSkill`` rows, and records itself with a copy of the parameters it used. Every JSON
    field maps a ``Concept`` pk (as text) to a probability; the keys are the vocabulary of the
    pass, so a changed vocabulary sends the next incremental pass back to a full one.
    """

    method = models.CharField(max_length=32)
    full_pass = models.BooleanField(default=True)
    priors = models.JSONField(default=dict, help_text="Concept pk to P(concept applies).")
    crowd_sensitivity = models.JSONField(
        default=dict, blank=True, help_text="Concept pk to the skill of a volunteer without votes."
    )
    crowd_specificity = models.JSONField(default=dict, blank=True)
    pooled_sensitivity = models.JSONField(
        default=dict, blank=True, help_text="Concept pk to the skill anonymous volunteers share."
    )
    pooled_specificity = models.JSONField(default=dict, blank=True)
    n_votes = models.PositiveIntegerField(default=0)
    n_items = models.PositiveIntegerField(default=0)
    labels_changed = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        get_latest_by = ["created_at", "id"]

    def __str__(self) -> str:
        kind = "full" if self.full_pass else "incremental"
        return f"{self.method} {kind} pass, {self.n_votes} votes"


class AppendOnlyError(Exception):
    """Raised when code tries to change or delete an audit record."""


class Review(models.Model):
    """A curator's decision on an item: append-only audit of who, when, before, after and why."""

    class Action(models.TextChoices):
        ACCEPT = "accept", "accept"
        ACCEPT_PRIOR = "accept_prior", "accept the prior enrichment"
        EDIT = "edit", "edit"
        REJECT = "reject", "reject"
        SKIP = "skip", "skip"
        UNDO = "undo", "undo"

    item = models.ForeignKey(Item, on_delete=models.PROTECT, related_name="reviews")
    curator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    action = models.CharField(max_length=12, choices=Action.choices)
    before = models.JSONField(default=list, help_text="Concept keys before the decision.")
    after = models.JSONField(default=list, help_text="Concept keys after the decision.")
    state_before = models.CharField(
        max_length=12,
        choices=Item.ReviewState.choices,
        blank=True,
        help_text="The item's review state before the decision (blank on rows older than undo).",
    )
    state_after = models.CharField(max_length=12, choices=Item.ReviewState.choices, blank=True)
    batch = models.UUIDField(
        null=True, blank=True, db_index=True, help_text="Shared by the rows of one bulk decision."
    )
    undoes = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="undone_by",
        help_text="For an undo: the decision it reverses.",
    )
    comment = models.TextField(blank=True, max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    action__in=["accept", "accept_prior", "edit", "reject", "skip", "undo"]
                ),
                name="review_action_valid",
            ),
            models.CheckConstraint(
                condition=Q(action="undo", undoes__isnull=False)
                | (~Q(action="undo") & Q(undoes__isnull=True)),
                name="review_undo_names_its_decision",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} by {self.curator_id}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise AppendOnlyError("Reviews are append-only: write a new review instead.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Reviews are append-only and cannot be deleted.")


class ReleaseImmutableError(Exception):
    """Raised when code tries to change or delete a dataset release that has been written."""


class DatasetRelease(Job):
    """An immutable, versioned snapshot of the final labels, written as files with a manifest.

    The row is created ``queued`` and filled in by the release job (a :class:`~annotate.jobs.Job`
    claimed once, with no attempts counted and no takeover: a lost build is retried by a new
    release); once ``succeeded`` nothing about it changes again: a new snapshot is a new release
    with the next version number.
    """

    error_max_length = 2000

    class Kind(models.TextChoices):
        LABELS = "labels", "final labels"
        PROPOSALS = "proposals", "enrichment proposals (machine-generated)"

    version = models.PositiveIntegerField(unique=True)
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.LABELS)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    note = models.CharField(max_length=500, blank=True)
    filters = models.JSONField(
        default=dict, blank=True, help_text="reviewed_only, min_confidence, concepts."
    )
    formats = models.JSONField(default=list, blank=True)
    n_items = models.PositiveIntegerField(default=0)
    counts = models.JSONField(default=dict, blank=True, help_text="Items per concept key.")
    split_counts = models.JSONField(default=dict, blank=True, help_text="Items per split.")
    lineage = models.JSONField(
        default=dict,
        blank=True,
        help_text="Aggregation method, numbers of classifications and reviews, model version.",
    )
    manifest = models.JSONField(
        default=dict, blank=True, help_text="The manifest.json written with the files."
    )
    content_hash = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-version"]

    def __str__(self) -> str:
        return f"release {self.version}"

    def save(self, *args, **kwargs) -> None:
        if self._written():
            raise ReleaseImmutableError("A written release never changes: make a new release.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        if self._written():
            raise ReleaseImmutableError("A written release cannot be deleted.")
        return super().delete(*args, **kwargs)

    def _written(self) -> bool:
        if self.pk is None:
            return False
        stored = type(self).objects.filter(pk=self.pk).values_list("status", flat=True).first()
        return stored == self.Status.SUCCEEDED


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


class ItemIdentityChange(models.Model):
    """A change of what an item is (its image source or image content) made by an import: the
    audit of an item's identity, which nobody edits by hand."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="identity_changes")
    report = models.ForeignKey(
        ImportReport, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    field = models.CharField(max_length=32)
    before = models.TextField(blank=True)
    after = models.TextField(blank=True)
    changed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["item", "-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.field} changed"
