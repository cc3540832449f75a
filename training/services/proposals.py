"""Enrichment proposals: the active model's labels for items that have no final label yet.

A release or export of kind ``proposals`` holds these records; the crowd side's exports and
releases read them through :data:`annotate.services.exports.RECORD_SOURCES`, where
``TrainingConfig.ready`` registers :func:`proposal_records`, so that annotate never imports
training.

The API serves the same proposals as a W3C Web Annotation ``AnnotationCollection`` in
``AnnotationPage``s (:func:`proposal_collection`, :func:`proposal_page`): one ``tagging``
annotation per item x proposed concept, shaped as the ``webannotation`` export writes them (concept
URI as body, item URI as target), with the model's score as ``confidence`` and the model version
as ``generator``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

from django.db.models import Exists, OuterRef, QuerySet

from annotate.models import AggregatedLabel, Concept, Item, Subject
from annotate.services.exports import (
    CHUNK_SIZE,
    W3C_CONTEXT,
    ExportFilters,
    ExportRecord,
    concept_uri,
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
    version = _active_version()
    if version is None:
        raise ValueError("there is no active model version: train and promote one first")
    keys = {c.key for c in (concepts if concepts is not None else export_concepts(filters))}
    order = list(version.concepts)
    thresholds = list(version.thresholds or [])
    floor = filters.min_confidence or 0.0
    cut = {k: max(_threshold(thresholds, i), floor) for i, k in enumerate(order)}
    return _proposals(version, keys, cut, chunk_size)


def _active_version() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).order_by("-pk").first()


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


# ---------------------------------------------------------------------------- W3C collection

#: Annotations per ``AnnotationPage``.
PAGE_SIZE = 100
#: The Web Annotation context, and the one term it lacks: the model's score for the concept.
ANNOTATION_CONTEXT: list[Any] = [
    W3C_CONTEXT,
    {
        "crowdloop": "urn:crowdloop:vocab#",
        "confidence": {
            "@id": "crowdloop:confidence",
            "@type": "http://www.w3.org/2001/XMLSchema#double",
        },
    },
]
#: The media type of a Web Annotation response (W3C Web Annotation Protocol, 4.1).
ANNOTATION_MEDIA_TYPE = 'application/ld+json; profile="http://www.w3.org/ns/anno.jsonld"'


def _generator(version: ModelVersion, version_url: str) -> dict[str, Any]:
    return {
        "id": version_url,
        "type": "Software",
        "name": f"crowdloop model v{version.pk} ({version.backbone})",
    }


def _annotations(version: ModelVersion, *, version_url: str) -> Iterator[dict[str, Any]]:
    """Every proposal of ``version`` as an annotation, by item id then concept key."""
    filters = ExportFilters()
    concepts = export_concepts(filters)
    uris = {c.key: concept_uri(c) for c in concepts}
    generator = _generator(version, version_url)
    created = (version.scored_at or version.created_at).isoformat().replace("+00:00", "Z")
    for record in proposal_records(filters, concepts=concepts):
        for key in record.labels:
            yield {
                "id": f"urn:crowdloop:model:{version.pk}:proposal:{record.item_id}/"
                f"{quote(key, safe='')}",
                "type": "Annotation",
                "motivation": "tagging",
                "created": created,
                "creator": generator,
                "generator": generator,
                "confidence": record.scores[key],
                "body": uris[key],
                "target": record.item_uri,
            }


def _page_url(collection_url: str, number: int) -> str:
    return f"{collection_url}?page={number}"


def _collection_ref(
    version: ModelVersion | None, *, collection_url: str, total: int, page_size: int
) -> dict[str, Any]:
    label = (f"Enrichment proposals of crowdloop model v{version.pk}" if version is not None
             else "Enrichment proposals (no model version is active)")
    ref: dict[str, Any] = {"id": collection_url, "type": "AnnotationCollection", "label": label,
                           "total": total}
    if total:
        ref["first"] = _page_url(collection_url, 1)
        ref["last"] = _page_url(collection_url, math.ceil(total / page_size))
    return ref


def proposal_collection(*, collection_url: str, page_size: int = PAGE_SIZE) -> dict[str, Any]:
    """The active model's proposals as an ``AnnotationCollection``: ``total`` annotations, and
    ``first`` / ``last`` page links (none when the collection is empty, or no model is active).

    Args:
        collection_url: the absolute URL the collection is served at (its ``id``).
        page_size: annotations per page.
    """
    version = _active_version()
    total = 0
    if version is not None:
        total = sum(1 for _ in _annotations(version, version_url=""))
    return {"@context": ANNOTATION_CONTEXT,
            **_collection_ref(version, collection_url=collection_url, total=total,
                              page_size=page_size)}


def proposal_page(
    *, number: int, collection_url: str, version_url: str, page_size: int = PAGE_SIZE
) -> dict[str, Any] | None:
    """Page ``number`` (from 1) of the collection as an ``AnnotationPage``: ``partOf`` the
    collection, ``startIndex`` (from 0), ``next`` / ``prev`` links and the annotations. None
    when there is no such page.

    Args:
        number: the page, from 1.
        collection_url: the absolute URL the collection is served at.
        version_url: the model version's URL with ``{id}`` in place of its id (the generator).
        page_size: annotations per page.
    """
    version = _active_version()
    if version is None or number < 1:
        return None
    start = (number - 1) * page_size
    items: list[dict[str, Any]] = []
    total = 0
    for annotation in _annotations(version, version_url=version_url.replace("{id}",
                                                                             str(version.pk))):
        if start <= total < start + page_size:
            items.append(annotation)
        total += 1
    if not items:
        return None
    page: dict[str, Any] = {
        "@context": ANNOTATION_CONTEXT,
        "id": _page_url(collection_url, number),
        "type": "AnnotationPage",
        "partOf": _collection_ref(version, collection_url=collection_url, total=total,
                                  page_size=page_size),
        "startIndex": start,
    }
    if number > 1:
        page["prev"] = _page_url(collection_url, number - 1)
    if start + page_size < total:
        page["next"] = _page_url(collection_url, number + 1)
    page["items"] = items
    return page
