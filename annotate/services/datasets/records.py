"""Export records: which items a dataset holds and what each says, streamed in primary-key order.

:func:`export_records` yields one :class:`ExportRecord` per exported item, a chunk at a time
(four queries a chunk), so memory stays flat however large the pool. Left out: items a curator
rejected, items whose every subject was deleted upstream (B10), crowd items with no aggregated
label yet. ``source`` is ``curator`` (accepted or edited) or ``crowd``; ``labels`` are the final
concept keys, ``scores`` the crowd's posteriors. Filters: ``reviewed_only``; ``min_confidence=c``
keeps crowd items whose every posterior is ``>= c`` or ``<= 1 - c`` (curator items always pass);
``concepts`` restricts labels, scores and columns to a subset of the vocabulary. Other kinds of
records (the model's ``proposals``) are registered by the app that owns them
(:func:`record_source_register`, from ``TrainingConfig.ready``): annotate never imports training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from django.db.models import Exists, OuterRef, Q, QuerySet

from annotate.models import AggregatedLabel, Concept, Item, Subject
from annotate.selectors import item_final_labels

SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
SPLIT_RULE = "first 8 bytes of sha256(external_id) / 2**64: train < 0.8 <= validation < 0.9 <= test"
CHUNK_SIZE = 2000
EUROPEANA_ITEM = "http://data.europeana.eu/item"
ITEM_URN = "urn:crowdloop:item:"
CONCEPT_URN = "urn:crowdloop:concept:"


# --- filters and records --------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportFilters:
    reviewed_only: bool = False
    min_confidence: float | None = None
    concepts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        c = self.min_confidence
        if c is not None and not (0.5 <= c <= 1.0):
            raise ValueError(f"min_confidence must be between 0.5 and 1, got {c}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "reviewed_only": self.reviewed_only,
            "min_confidence": self.min_confidence,
            "concepts": list(self.concepts) if self.concepts is not None else None,
        }


@dataclass(frozen=True)
class ExportRecord:
    item_id: int
    external_id: str
    item_uri: str
    image: str  # the source URL, else the stored copy's path under MEDIA_ROOT, else ""
    image_file: str  # path of our stored copy under MEDIA_ROOT, "" when none
    title: str
    labels: list[str]
    scores: dict[str, float]
    source: str  # "curator" | "crowd" | "model" (an enrichment proposal)
    n_classifications: int
    split: str
    model_version: int | None = None  # proposals: the model version that made them

    def jsonl(self) -> dict[str, Any]:
        line = {
            "external_id": self.external_id,
            "image": self.image,
            "labels": self.labels,
            "scores": self.scores,
            "source": self.source,
            "n_classifications": self.n_classifications,
            "split": self.split,
        }
        if self.model_version is not None:
            line["machine_generated"] = True
            line["model_version"] = self.model_version
        return line


def split_of(external_id: str, *, salt: str = "") -> str:
    """train / validation / test by the sha256 of the id: the same on every machine, for ever.

    The same hash and edges as ``ml.data.stable_split`` (0.8 / 0.1 / 0.1, unsalted), so an item is
    in the same split in an export as in training; written here so exports need no PyTorch.
    """
    digest = hashlib.sha256(f"{salt}{external_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    edge = 0.0
    for name, fraction in zip(SPLITS, SPLIT_FRACTIONS, strict=True):
        edge += fraction
        if u < edge:
            return name
    return SPLITS[-1]


def item_uri(external_id: str, metadata: dict[str, Any] | None) -> str:
    """The URI a collection knows the item by: its own, Europeana's, else a crowdloop URN."""
    uri = (metadata or {}).get("item_uri")
    if isinstance(uri, str) and uri.startswith(("http://", "https://")) and len(uri) < 2000:
        return uri
    parts = external_id.split("/")
    if len(parts) == 3 and parts[0] == "" and all(parts[1:]):  # "/2021672/record_id"
        return EUROPEANA_ITEM + quote(external_id, safe="/_-.~")
    return ITEM_URN + quote(external_id, safe="")


def concept_uri(concept: Concept) -> str:
    if concept.uri.startswith(("http://", "https://")):
        return concept.uri
    return CONCEPT_URN + concept.key


#: The item columns a record is built from (:func:`item_record`), in this order.
ITEM_FIELDS = ("pk", "external_id", "image_url", "image_file", "title", "metadata")


def item_record(
    row: Sequence[Any],
    *,
    labels: list[str],
    scores: dict[str, float],
    source: str,
    n_classifications: int = 0,
    model_version: int | None = None,
) -> ExportRecord:
    """The record of an item read as :data:`ITEM_FIELDS`: its URI, image and split said once for
    every kind of record, with the labels and scores the caller decided."""
    pk, external_id, url, image_file, title, metadata = row
    return ExportRecord(
        item_id=pk,
        external_id=external_id,
        item_uri=item_uri(external_id, metadata),
        image=url or image_file,
        image_file=image_file,
        title=title,
        labels=labels,
        scores=scores,
        source=source,
        n_classifications=n_classifications,
        split=split_of(external_id),
        model_version=model_version,
    )


def export_queryset(filters: ExportFilters) -> QuerySet[Item]:
    """The items an export may contain, before the confidence filter (which needs posteriors)."""
    items = Item.objects.exclude(review_state=Item.ReviewState.REJECTED)
    if filters.reviewed_only:
        items = items.curated()
    else:
        has_labels = AggregatedLabel.objects.filter(item_id=OuterRef("pk"))
        items = items.filter(Q(review_state__in=Item.ReviewState.CURATED) | Exists(has_labels))
    deleted = Subject.objects.filter(
        item_id=OuterRef("pk"), upstream_state=Subject.Upstream.DELETED
    )
    active = Subject.objects.filter(item_id=OuterRef("pk"), upstream_state=Subject.Upstream.ACTIVE)
    return items.exclude(Exists(deleted) & ~Exists(active))


def export_concepts(filters: ExportFilters) -> list[Concept]:
    if filters.concepts is None:
        return list(Concept.objects.filter(active=True))
    found = {c.key: c for c in Concept.objects.filter(key__in=filters.concepts)}
    unknown = sorted(set(filters.concepts) - set(found))
    if unknown:
        raise ValueError(f"unknown concepts: {', '.join(unknown)}")
    return [found[k] for k in dict.fromkeys(filters.concepts)]


def _confident(scores: dict[str, float], c: float) -> bool:
    return all(p >= c or p <= 1.0 - c for p in scores.values())


def export_records(
    filters: ExportFilters,
    *,
    concepts: Sequence[Concept] | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> Iterator[ExportRecord]:
    """The exported items in primary-key order, streamed chunk by chunk (four queries a chunk)."""
    keys = {c.key for c in (concepts if concepts is not None else export_concepts(filters))}
    subset = filters.concepts is not None
    base = export_queryset(filters).order_by("pk")
    fields = (*ITEM_FIELDS, "n_classifications", "review_state")
    last = 0
    while True:
        rows = list(base.filter(pk__gt=last).values_list(*fields)[:chunk_size])
        if not rows:
            return
        last = rows[-1][0]
        ids = [r[0] for r in rows]
        finals = item_final_labels(ids)
        scores: dict[int, dict[str, float]] = {}
        for item_id, key, posterior in AggregatedLabel.objects.filter(item_id__in=ids).values_list(
            "item_id", "concept__key", "posterior"
        ):
            if not subset or key in keys:
                scores.setdefault(item_id, {})[key] = round(float(posterior), 6)
        for row in rows:
            pk, (n_class, state) = row[0], row[len(ITEM_FIELDS) :]
            labels = finals.get(pk)
            if labels is None:  # rejected in the meantime
                continue
            curated = state in Item.ReviewState.CURATED
            item_scores = dict(sorted(scores.get(pk, {}).items()))
            if filters.min_confidence is not None and not curated:
                if not item_scores or not _confident(item_scores, filters.min_confidence):
                    continue
            if subset:
                labels = [k for k in labels if k in keys]
            yield item_record(
                row[: len(ITEM_FIELDS)],
                labels=sorted(labels),
                scores=item_scores,
                source="curator" if curated else "crowd",
                n_classifications=n_class,
            )


# --- record kinds -------------------------------------------------------------------------------

#: Where the records of each kind come from. ``labels`` (the final labels) is this module's own;
#: the training app adds ``proposals`` (its active model's enrichment proposals) when it loads
#: (``TrainingConfig.ready``), since the crowd side never imports the model side.
RecordSource = Callable[..., Iterator[ExportRecord]]
RECORD_SOURCES: dict[str, RecordSource] = {"labels": export_records}


def record_source_register(*, kind: str, source: RecordSource) -> None:
    """Let another app supply the records of a release kind: ``source(filters, concepts=...)``."""
    RECORD_SOURCES[kind] = source


def records_for(
    kind: str, filters: ExportFilters, *, concepts: Sequence[Concept]
) -> Iterator[ExportRecord]:
    """The records of a release kind: ``labels`` (final labels) or ``proposals`` (the model's)."""
    source = RECORD_SOURCES.get(kind)
    if source is None:
        raise ValueError(f"unknown kind {kind!r}; use {' or '.join(RECORD_SOURCES)}")
    return source(filters, concepts=concepts)
