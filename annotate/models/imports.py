"""Import reports: one per import or sync, its quarantined rows, and the identity changes of
items it made."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from annotate.models.catalogue import Item


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
        constraints = [models.UniqueConstraint(fields=["fingerprint"], name="quarantined_row_once")]

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


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
