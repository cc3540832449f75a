"""The catalogue: the vocabulary's concepts, the items and their prior labels."""

from __future__ import annotations

import enum

from django.db import models


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
