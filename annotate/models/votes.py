"""The raw votes: volunteers, their exclusions and their classifications, both append-only."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from annotate.models.catalogue import Item
from annotate.models.zooniverse import Subject, Workflow


class AppendOnlyError(Exception):
    """Raised when code tries to change or delete an audit record."""


class AppendOnly(models.Model):
    """An audit record: written once, never changed, never deleted. ``append_only`` names the
    records and what to do instead of changing one, for the errors."""

    append_only: tuple[str, str] = ("Records", "write a new one instead")

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            records, instead = self.append_only
            raise AppendOnlyError(f"{records} are append-only: {instead}.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError(f"{self.append_only[0]} are append-only and cannot be deleted.")


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


class VolunteerExclusion(AppendOnly):
    """Audit of excluding a volunteer from aggregation, or taking them back: append-only."""

    append_only = ("Exclusions", "record a new one instead")

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
