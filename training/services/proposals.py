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

import numpy as np
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
    return _proposals(version, keys, _cuts(version, filters), chunk_size)


def _cuts(version: ModelVersion, filters: ExportFilters) -> dict[str, float]:
    """Per concept, the score a proposal needs: its tuned threshold, at least ``min_confidence``."""
    thresholds = list(version.thresholds or [])
    floor = filters.min_confidence or 0.0
    return {k: max(_threshold(thresholds, i), floor) for i, k in enumerate(version.concepts)}


def _active_version() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).order_by("-pk").first()


def _threshold(thresholds: list[Any], i: int) -> float:
    try:
        value = float(thresholds[i])
    except (IndexError, TypeError, ValueError):
        return 0.5
    return value if 0.0 <= value <= 1.0 else 0.5


#: A chunk of candidate items: their rows, their scores (n, C) rounded to 6 places in the version's
#: concept order (NaN where a concept is missing or not asked for), and what is proposed (n, C).
Chunk = tuple[list[tuple[Any, ...]], np.ndarray, np.ndarray]
_FIELDS = ("pk", "external_id", "image_url", "image_file", "title", "metadata")


def _chunks(
    version: ModelVersion, keys: set[str], cut: dict[str, float], chunk_size: int
) -> Iterator[Chunk]:
    """Items without a final label that ``version`` scored, by id, a chunk at a time: a concept
    is proposed where its score reaches its cut (compared in one array per chunk)."""
    order = list(version.concepts)
    wanted = np.array([k in keys for k in order], dtype=bool)
    cuts = np.array([cut[k] for k in order], dtype=np.float64)
    base = proposal_queryset(version.pk).order_by("pk")
    last = 0
    while True:
        rows = list(base.filter(pk__gt=last).values_list(*_FIELDS)[:chunk_size])
        if not rows:
            return
        last = rows[-1][0]
        blobs = dict(
            Prediction.objects.filter(
                model_version=version, item_id__in=[r[0] for r in rows]
            ).values_list("item_id", "scores")
        )
        scores = np.full((len(rows), len(order)), np.nan)  # (n, C)
        for i, row in enumerate(rows):
            probs = np.frombuffer(bytes(blobs[row[0]]), dtype="<f4")[: len(order)]
            scores[i, : len(probs)] = probs
        scores = np.round(scores, 6)
        scores[:, ~wanted] = np.nan
        with np.errstate(invalid="ignore"):
            proposed = scores >= cuts  # NaN compares False
        yield rows, scores, proposed


def _record(version: ModelVersion, row: tuple[Any, ...], scores: np.ndarray,
            proposed: np.ndarray) -> ExportRecord:
    """One item's proposals (``scores`` and ``proposed``: its rows of a :data:`Chunk`)."""
    pk, external_id, url, image_file, title, metadata = row
    order = list(version.concepts)
    return ExportRecord(
        item_id=pk,
        external_id=external_id,
        item_uri=item_uri(external_id, metadata),
        image=url or image_file,
        image_file=image_file,
        title=title,
        labels=sorted(order[c] for c in np.flatnonzero(proposed)),
        scores=dict(sorted((order[c], float(scores[c])) for c in np.flatnonzero(
            ~np.isnan(scores)))),
        source="model",
        n_classifications=0,
        split=split_of(external_id),
        model_version=version.pk,
    )


def _proposals(
    version: ModelVersion, keys: set[str], cut: dict[str, float], chunk_size: int
) -> Iterator[ExportRecord]:
    for rows, scores, proposed in _chunks(version, keys, cut, chunk_size):
        for i in np.flatnonzero(proposed.any(axis=1)):
            yield _record(version, rows[i], scores[i], proposed[i])


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


class _Annotations:
    """The proposals of ``version`` as annotations, in the order of the collection: by item id,
    then concept key. Counting reads the scores chunk by chunk and compares them in arrays;
    only the items of the page asked for are built into annotations."""

    def __init__(self, version: ModelVersion, *, version_url: str = "") -> None:
        filters = ExportFilters()
        concepts = export_concepts(filters)
        self.version = version
        self.uris = {c.key: concept_uri(c) for c in concepts}
        self.chunks = _chunks(version, set(self.uris), _cuts(version, filters), CHUNK_SIZE)
        self.generator = _generator(version, version_url)
        self.created = (version.scored_at or version.created_at).isoformat().replace(
            "+00:00", "Z")

    def count(self) -> int:
        return sum(int(proposed.sum()) for _, _, proposed in self.chunks)

    def window(self, start: int, size: int) -> tuple[list[dict[str, Any]], int]:
        """Annotations ``start`` to ``start + size`` (from 0), and the total."""
        items: list[dict[str, Any]] = []
        total = 0
        for rows, scores, proposed in self.chunks:
            per_item = proposed.sum(axis=1)  # (n,) annotations of each item
            n = int(per_item.sum())
            if total + n > start and len(items) < size:
                offset = total
                for i in np.flatnonzero(per_item):
                    if offset + per_item[i] > start and len(items) < size:
                        built = self._build(_record(self.version, rows[i], scores[i],
                                                    proposed[i]))
                        skip = max(0, start - offset)
                        items += built[skip: skip + size - len(items)]
                    offset += int(per_item[i])
            total += n
        return items, total

    def _build(self, record: ExportRecord) -> list[dict[str, Any]]:
        return [
            {
                "id": f"urn:crowdloop:model:{self.version.pk}:proposal:{record.item_id}/"
                f"{quote(key, safe='')}",
                "type": "Annotation",
                "motivation": "tagging",
                "created": self.created,
                "creator": self.generator,
                "generator": self.generator,
                "confidence": record.scores[key],
                "body": self.uris[key],
                "target": record.item_uri,
            }
            for key in record.labels
        ]


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
    total = _Annotations(version).count() if version is not None else 0
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
    annotations = _Annotations(version, version_url=version_url.replace("{id}", str(version.pk)))
    items, total = annotations.window(start, page_size)
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
