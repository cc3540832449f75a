"""Enrichment proposals: the active model's labels for items that have no final label yet.

A release or export of kind ``proposals`` holds these records; the crowd side's exports and
releases read them through :data:`annotate.services.exports.RECORD_SOURCES`, where
``TrainingConfig.ready`` registers :func:`proposal_records`, so that annotate never imports
training.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from django.db.models import Exists, OuterRef, QuerySet

from annotate.models import AggregatedLabel, Concept, Item, Subject
from annotate.services.exports import (
    CHUNK_SIZE,
    ExportFilters,
    ExportRecord,
    export_concepts,
    item_uri,
    split_of,
)
from training.models import ModelVersion, Prediction


def proposal_queryset(version_id: int) -> QuerySet[Item]:
    """Items with no final label (no curator decision, no crowd label) the model has scored."""
    crowd = AggregatedLabel.objects.filter(item_id=OuterRef("pk"))
    scored = Prediction.objects.filter(item_id=OuterRef("pk"), model_version_id=version_id)
    deleted = Subject.objects.filter(
        item_id=OuterRef("pk"), upstream_state=Subject.Upstream.DELETED
    )
    return (
        Item.objects.filter(review_state=Item.ReviewState.UNREVIEWED)
        .exclude(Exists(crowd))
        .exclude(Exists(deleted))
        .filter(Exists(scored))
    )


def proposal_records(
    filters: ExportFilters,
    *,
    concepts: Sequence[Concept] | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> Iterator[ExportRecord]:
    """The active model's proposals for items without a final label: a concept is proposed when
    its score reaches the version's tuned threshold for it (and ``min_confidence`` when given).
    Machine-generated: ``source="model"`` and the model version on every record.

    Raises:
        ValueError: no active model version, or ``reviewed_only`` (proposals are never reviewed).
    """
    if filters.reviewed_only:
        raise ValueError("enrichment proposals are unreviewed by definition: drop reviewed_only")
    version = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).order_by("-pk").first()
    if version is None:
        raise ValueError("there is no active model version: train and promote one first")
    keys = {c.key for c in (concepts if concepts is not None else export_concepts(filters))}
    order = list(version.concepts)
    thresholds = list(version.thresholds or [])
    floor = filters.min_confidence or 0.0
    cut = {k: max(_threshold(thresholds, i), floor) for i, k in enumerate(order)}
    return _proposals(version, keys, cut, chunk_size)


def _threshold(thresholds: list[Any], i: int) -> float:
    try:
        value = float(thresholds[i])
    except (IndexError, TypeError, ValueError):
        return 0.5
    return value if 0.0 <= value <= 1.0 else 0.5


def _proposals(version, keys: set[str], cut: dict[str, float], chunk_size: int):  # type: ignore[no-untyped-def]
    import numpy as np

    order = list(version.concepts)
    base = proposal_queryset(version.pk).order_by("pk")
    fields = ("pk", "external_id", "image_url", "image_file", "title", "metadata")
    last = 0
    while True:
        rows = list(base.filter(pk__gt=last).values_list(*fields)[:chunk_size])
        if not rows:
            return
        last = rows[-1][0]
        blobs = dict(
            Prediction.objects.filter(
                model_version=version, item_id__in=[r[0] for r in rows]
            ).values_list("item_id", "scores")
        )
        for pk, external_id, url, image_file, title, metadata in rows:
            probs = np.frombuffer(bytes(blobs[pk]), dtype="<f4")
            scores = {
                k: round(float(p), 6) for k, p in zip(order, probs, strict=False) if k in keys
            }
            labels = sorted(k for k, p in scores.items() if p >= cut[k])
            if not labels:
                continue
            yield ExportRecord(
                item_id=pk,
                external_id=external_id,
                item_uri=item_uri(external_id, metadata),
                image=url or image_file,
                image_file=image_file,
                title=title,
                labels=labels,
                scores=dict(sorted(scores.items())),
                source="model",
                n_classifications=0,
                split=split_of(external_id),
                model_version=version.pk,
            )
