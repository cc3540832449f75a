"""The crowd side's tables, a module per family: the catalogue, the Zooniverse mirror, the raw
votes, import reports, clean labels and releases. Every model is importable from here."""

from __future__ import annotations

from annotate.models.catalogue import (
    Concept,
    Item,
    ItemQuerySet,
    PriorLabel,
    item_has_votes,
    item_is_uncertain,
)
from annotate.models.imports import ImportReport, ItemIdentityChange, QuarantinedRow
from annotate.models.labels import AggregatedLabel, AggregationState, Review, VolunteerSkill
from annotate.models.releases import DatasetRelease, ReleaseImmutableError
from annotate.models.votes import (
    AppendOnly,
    AppendOnlyError,
    Classification,
    RowIdAutoField,
    Volunteer,
    VolunteerExclusion,
)
from annotate.models.zooniverse import (
    Round,
    RoundPick,
    Subject,
    SyncCursor,
    Workflow,
    WorkflowVersion,
)

__all__ = [
    "Concept",
    "item_has_votes",
    "item_is_uncertain",
    "ItemQuerySet",
    "Item",
    "PriorLabel",
    "ImportReport",
    "QuarantinedRow",
    "ItemIdentityChange",
    "Workflow",
    "WorkflowVersion",
    "Round",
    "RoundPick",
    "Subject",
    "SyncCursor",
    "AppendOnly",
    "AppendOnlyError",
    "Volunteer",
    "VolunteerExclusion",
    "RowIdAutoField",
    "Classification",
    "AggregatedLabel",
    "VolunteerSkill",
    "AggregationState",
    "Review",
    "ReleaseImmutableError",
    "DatasetRelease",
]
