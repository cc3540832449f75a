"""Dataset releases: immutable, versioned snapshots of the final labels."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from annotate.jobs import Job


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
