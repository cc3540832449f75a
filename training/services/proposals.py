"""Enrichment proposals: the active model's labels for items that have no final label yet.

Exports and releases of kind ``proposals`` read :func:`proposal_records` through
:data:`annotate.services.datasets.records.RECORD_SOURCES` (registered by ``TrainingConfig.ready``,
so annotate never imports training). The API serves the same proposals as a W3C Web Annotation
``AnnotationCollection`` in ``AnnotationPage``s (:func:`proposal_collection`,
:func:`proposal_page`): one ``tagging`` annotation per item x proposed concept, shaped as the
``webannotation`` export writes them, the model's score as ``confidence``, the version as
``generator``. ``next`` and ``prev`` carry a keyset cursor, so a walk meets every annotation once
even while the crowd labels items; ``total`` is cached (:func:`proposal_total`) per active
version, scoring progress, vocabulary and newest crowd label, at most
``PROPOSALS_TOTAL_CACHE_SECONDS``.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db.models import Exists, Max, OuterRef, QuerySet

from annotate.models import AggregatedLabel, Concept, Item, Subject
from annotate.services.datasets.records import (
    CHUNK_SIZE,
    ITEM_FIELDS,
    ExportFilters,
    ExportRecord,
    concept_uri,
    export_concepts,
    item_record,
)
from annotate.services.datasets.writers import W3C_CONTEXT
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


def _chunks(
    version: ModelVersion,
    keys: set[str],
    cut: dict[str, float],
    chunk_size: int,
    *,
    start: int | None = None,
    descending: bool = False,
) -> Iterator[Chunk]:
    """Items without a final label that ``version`` scored, by id, a chunk at a time: a concept
    is proposed where its score reaches its cut (compared in one array per chunk).

    Keyset reads: from item ``start`` on (inclusive; None: from the first), by descending id
    when ``descending``.
    """
    order = list(version.concepts)
    wanted = np.array([k in keys for k in order], dtype=bool)
    cuts = np.array([cut[k] for k in order], dtype=np.float64)
    base = proposal_queryset(version.pk).order_by("-pk" if descending else "pk")
    if start is not None:
        base = base.filter(**{"pk__lte" if descending else "pk__gte": start})
    bound: int | None = None
    while True:
        page = base
        if bound is not None:
            page = page.filter(**{"pk__lt" if descending else "pk__gt": bound})
        rows = list(page.values_list(*ITEM_FIELDS)[:chunk_size])
        if not rows:
            return
        bound = rows[-1][0]
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
        if len(rows) < chunk_size:
            return


def _record(
    version: ModelVersion, row: tuple[Any, ...], scores: np.ndarray, proposed: np.ndarray
) -> ExportRecord:
    """One item's proposals (``scores`` and ``proposed``: its rows of a :data:`Chunk`)."""
    order = list(version.concepts)
    return item_record(
        row,
        labels=sorted(order[c] for c in np.flatnonzero(proposed)),
        scores=dict(
            sorted((order[c], float(scores[c])) for c in np.flatnonzero(~np.isnan(scores)))
        ),
        source="model",
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


#: Where an annotation stands in the collection's order: its item's id and its concept key.
Position = tuple[int, str]
#: An annotation and its position.
Entry = tuple[Position, dict[str, Any]]
_CURSOR = re.compile(r"([1-9][0-9]{0,17})\.([-a-zA-Z0-9_]{1,64})")


class _Annotations:
    """The proposals of ``version`` as annotations, in the order of the collection: by item id,
    then concept key. Counting reads the scores chunk by chunk and compares them in arrays;
    walking reads from a position on, a few items at a time, and builds only what it yields."""

    def __init__(self, version: ModelVersion, *, version_url: str = "") -> None:
        filters = ExportFilters()
        concepts = export_concepts(filters)
        self.version = version
        self.uris = {c.key: concept_uri(c) for c in concepts}
        self.cuts = _cuts(version, filters)
        self.generator = _generator(version, version_url)
        self.created = (version.scored_at or version.created_at).isoformat().replace("+00:00", "Z")

    def _chunks(self, chunk_size: int, **kwargs: Any) -> Iterator[Chunk]:
        return _chunks(self.version, set(self.uris), self.cuts, chunk_size, **kwargs)

    def count(self) -> int:
        return sum(int(proposed.sum()) for _, _, proposed in self._chunks(CHUNK_SIZE))

    def walk(
        self, *, chunk_size: int, cursor: Position | None = None, reverse: bool = False
    ) -> Iterator[Entry]:
        """Annotations with their positions in the collection's order, from the first or those
        after ``cursor``; with ``reverse``, in reverse order from the last or those before it."""
        chunks = self._chunks(chunk_size, start=cursor[0] if cursor else None, descending=reverse)
        for rows, scores, proposed in chunks:
            for i in np.flatnonzero(proposed.any(axis=1)):
                record = _record(self.version, rows[i], scores[i], proposed[i])
                built = list(zip(record.labels, self._build(record), strict=True))
                for key, annotation in reversed(built) if reverse else built:
                    position = (record.item_id, key)
                    if cursor is not None and (
                        position >= cursor if reverse else position <= cursor
                    ):
                        continue
                    yield position, annotation

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


def _total_ttl() -> int:
    return settings.PROPOSALS_TOTAL_CACHE_SECONDS


def _total_key(annotations: _Annotations) -> str:
    """What the total depends on, cheaply: the version and its scoring progress, the concepts
    and their cuts, and the newest crowd label (an item's first one ends its proposals)."""
    version = annotations.version
    newest_label = AggregatedLabel.objects.aggregate(newest=Max("pk"))["newest"] or 0
    vocabulary = sorted((k, annotations.uris[k], annotations.cuts.get(k)) for k in annotations.uris)
    digest = hashlib.sha256(repr(vocabulary).encode()).hexdigest()[:16]
    scored = version.scored_at.timestamp() if version.scored_at else 0
    # The creation time too: a database restored or rebuilt may give the id to another version.
    return (
        f"proposals:total:v{version.pk}:{version.created_at.timestamp()}:"
        f"{version.scoring_chunks_done}:{scored}:{newest_label}:{digest}"
    )


def _total(annotations: _Annotations) -> int:
    key = _total_key(annotations)
    total = cache.get(key)
    if total is None:
        total = annotations.count()
        cache.set(key, total, _total_ttl())
    return int(total)


def proposal_total() -> int:
    """Annotations in the active version's proposal collection (0 without one), counted once
    and cached: see the module's docstring for what makes it count again."""
    version = _active_version()
    return _total(_Annotations(version)) if version is not None else 0


def _cursor(position: Position) -> str:
    return f"{position[0]}.{position[1]}"


def _cursor_parse(raw: str) -> Position | None:
    match = _CURSOR.fullmatch(raw)
    return (int(match[1]), match[2]) if match else None


def _page_url(
    collection_url: str,
    number: int,
    *,
    after: Position | None = None,
    before: Position | None = None,
) -> str:
    url = f"{collection_url}?page={number}"
    if after is not None:
        url += f"&after={_cursor(after)}"
    if before is not None:
        url += f"&before={_cursor(before)}"
    return url


def _collection_ref(
    version: ModelVersion | None, *, collection_url: str, total: int, page_size: int
) -> dict[str, Any]:
    label = (
        f"Enrichment proposals of crowdloop model v{version.pk}"
        if version is not None
        else "Enrichment proposals (no model version is active)"
    )
    ref: dict[str, Any] = {
        "id": collection_url,
        "type": "AnnotationCollection",
        "label": label,
        "total": total,
    }
    if total:
        ref["first"] = _page_url(collection_url, 1)
        ref["last"] = _page_url(collection_url, math.ceil(total / page_size))
    return ref


def proposal_collection(*, collection_url: str, page_size: int = PAGE_SIZE) -> dict[str, Any]:
    """The active model's proposals as an ``AnnotationCollection``: ``total`` annotations (cached,
    :func:`proposal_total`), and ``first`` / ``last`` page links (none when the collection is
    empty, or no model is active).

    Args:
        collection_url: the absolute URL the collection is served at (its ``id``).
        page_size: annotations per page.
    """
    version = _active_version()
    total = _total(_Annotations(version)) if version is not None else 0
    return {
        "@context": ANNOTATION_CONTEXT,
        **_collection_ref(version, collection_url=collection_url, total=total, page_size=page_size),
    }


def _take(entries: Iterator[Entry], n: int, skip: int = 0) -> list[Entry]:
    return list(itertools.islice(entries, skip, skip + n))


def _by_number(
    annotations: _Annotations, *, start: int, total: int, page_size: int
) -> tuple[list[Entry], bool]:
    """The page at annotation ``start`` (from 0) without a cursor, read from the nearer end of
    the collection, and whether more follow it."""
    if start < total - start:
        found = _take(annotations.walk(chunk_size=CHUNK_SIZE), page_size + 1, skip=start)
        return found[:page_size], len(found) > page_size
    end = min(start + page_size, total)
    found = _take(
        annotations.walk(chunk_size=CHUNK_SIZE, reverse=True), end - start, skip=total - end
    )
    return found[::-1], total > end


def proposal_page(
    *,
    number: int,
    collection_url: str,
    version_url: str,
    page_size: int = PAGE_SIZE,
    after: str | None = None,
    before: str | None = None,
) -> dict[str, Any] | None:
    """Page ``number`` (from 1) of the collection as an ``AnnotationPage``: ``partOf`` the
    collection, ``startIndex`` (from 0), ``next`` / ``prev`` links and the annotations. None
    when there is no such page.

    The page's ``id`` is its number's URL; its ``next`` and ``prev`` links carry a cursor
    (``after`` / ``before``: ``<item id>.<concept key>`` of the annotation next to the linked
    page), so that a page reached by them reads only its own items and starts exactly where the
    page before it ended. The first page needs no cursor. A page by number alone is found by
    position, from the nearer end of the collection.

    Args:
        number: the page, from 1.
        collection_url: the absolute URL the collection is served at.
        version_url: the model version's URL with ``{id}`` in place of its id (the generator).
        page_size: annotations per page.
        after: the cursor of a ``next`` link.
        before: the cursor of a ``prev`` link.
    """
    version = _active_version()
    if version is None or number < 1 or (after is not None and before is not None):
        return None
    cursor = _cursor_parse(after or before or "") if (after or before) is not None else None
    if (after or before) is not None and (cursor is None or number < 2):
        return None
    annotations = _Annotations(version, version_url=version_url.replace("{id}", str(version.pk)))
    total = _total(annotations)
    # A few more items than a page's annotations: one read usually holds the page and the
    # annotation after it, whatever the size of the collection.
    chunk = page_size + 1
    entries: list[Entry] = []
    more = False
    if before is not None:
        found = _take(
            annotations.walk(chunk_size=chunk, cursor=cursor, reverse=True), page_size + 1
        )
        if len(found) > page_size:
            entries, more = found[:page_size][::-1], True
        else:  # the start of the collection: that is the first page
            number, before = 1, None
    if before is None:
        if after is not None:
            found = _take(annotations.walk(chunk_size=chunk, cursor=cursor), page_size + 1)
            entries, more = found[:page_size], len(found) > page_size
        elif number == 1:
            found = _take(annotations.walk(chunk_size=chunk), page_size + 1)
            entries, more = found[:page_size], len(found) > page_size
        elif (number - 1) * page_size < total:
            entries, more = _by_number(
                annotations, start=(number - 1) * page_size, total=total, page_size=page_size
            )
    if not entries:
        return None
    page: dict[str, Any] = {
        "@context": ANNOTATION_CONTEXT,
        "id": _page_url(collection_url, number),
        "type": "AnnotationPage",
        "partOf": _collection_ref(
            version, collection_url=collection_url, total=total, page_size=page_size
        ),
        "startIndex": (number - 1) * page_size,
    }
    if number > 1:
        page["prev"] = _page_url(
            collection_url, number - 1, before=entries[0][0] if number > 2 else None
        )
    if more:
        page["next"] = _page_url(collection_url, number + 1, after=entries[-1][0])
    page["items"] = [annotation for _, annotation in entries]
    return page
