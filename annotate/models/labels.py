"""Clean labels: the aggregated labels, the volunteers' skills, each aggregation pass, and the
curators' reviews (append-only)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from annotate.models.catalogue import Concept, Item
from annotate.models.votes import AppendOnly, Volunteer


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


class Review(AppendOnly):
    """A curator's decision on an item: append-only audit of who, when, before, after and why."""

    append_only = ("Reviews", "write a new review instead")

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

