"""Dataset exports: the final labels, streamed to CSV, JSONL, W3C Web Annotation or an image folder.

One pass over the items in primary-key order, a chunk at a time (four queries per chunk: the items,
their final labels in two, their crowd posteriors), so memory stays flat however large the pool.
Every record goes to one or more *writers*; a plain export uses one, a release all four.

What an exported item is (see ``annotate.selectors`` for the final-label contract):

- items a curator rejected, items whose every subject was deleted upstream (B10), and crowd items
  with no aggregated label at all (no evidence yet) are left out;
- ``source`` is ``curator`` for accepted or edited items, else ``crowd``;
- ``labels`` are the final concept keys, ``scores`` the crowd's posteriors per concept.

Filters: ``reviewed_only`` keeps curator-labelled items; ``min_confidence=c`` keeps crowd items
whose every posterior is ``>= c`` or ``<= 1 - c`` (curator items always pass: a curator's decision
is certain); ``concepts`` restricts labels, scores and columns to a subset of the vocabulary.

File names inside an export come from our own ids only (``<item pk>.<verified extension>``), never
from titles, metadata or URLs. CSV cells are escaped against formula injection; JSONL and JSON-LD
are written raw (they are data, not spreadsheets).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet

from annotate.models import AggregatedLabel, Concept, Item, Subject
from annotate.security import csv_escape
from annotate.selectors import item_final_labels
from annotate.services.media import image_path

FORMATS = ("csv", "jsonl", "webannotation", "imagefolder")
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
SPLIT_RULE = "first 8 bytes of sha256(external_id) / 2**64: train < 0.8 <= validation < 0.9 <= test"
CHUNK_SIZE = 2000
W3C_CONTEXT = "http://www.w3.org/ns/anno.jsonld"
EUROPEANA_ITEM = "http://data.europeana.eu/item"
ITEM_URN = "urn:crowdloop:item:"
CONCEPT_URN = "urn:crowdloop:concept:"
GENERATOR = {"type": "Software", "name": "crowdloop"}
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif"})

#: The file each format writes inside a release folder (names are ours, never user data).
FILE_NAMES = {
    "csv": "labels.csv",
    "jsonl": "labels.jsonl",
    "webannotation": "annotations.jsonld",
    "imagefolder": "imagefolder",
}


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


def export_queryset(filters: ExportFilters) -> QuerySet[Item]:
    """The items an export may contain, before the confidence filter (which needs posteriors)."""
    items = Item.objects.exclude(review_state=Item.ReviewState.REJECTED)
    if filters.reviewed_only:
        items = items.curated()
    else:
        has_labels = AggregatedLabel.objects.filter(item_id=OuterRef("pk"))
        items = items.filter(
            Q(review_state__in=Item.ReviewState.CURATED)
            | Exists(has_labels)
        )
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
    fields = (
        "pk",
        "external_id",
        "image_url",
        "image_file",
        "title",
        "metadata",
        "n_classifications",
        "review_state",
    )
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
        for pk, external_id, url, image_file, title, metadata, n_class, state in rows:
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
            yield ExportRecord(
                item_id=pk,
                external_id=external_id,
                item_uri=item_uri(external_id, metadata),
                image=url or image_file,
                image_file=image_file,
                title=title,
                labels=sorted(labels),
                scores=item_scores,
                source="curator" if curated else "crowd",
                n_classifications=n_class,
                split=split_of(external_id),
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


# --- writers ------------------------------------------------------------------------------------


class Writer(Protocol):
    fmt: str

    def write(self, record: ExportRecord) -> None: ...

    def close(self) -> None: ...


def _open_text(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("w", encoding="utf-8", newline="")


class CsvWriter:
    """One row per item; a posterior column per concept. Every text cell is formula-escaped."""

    fmt = "csv"

    def __init__(self, path: Path, concepts: Sequence[Concept]) -> None:
        self.keys = [c.key for c in concepts]
        self._fh = _open_text(path)
        self._csv = csv.writer(self._fh)
        header = [
            "external_id",
            "item_uri",
            "image",
            "title",
            "split",
            "source",
            "n_classifications",
            "labels",
            *self.keys,
        ]
        self._csv.writerow([csv_escape(h) for h in header])

    def write(self, record: ExportRecord) -> None:
        row: list[Any] = [
            record.external_id,
            record.item_uri,
            record.image,
            record.title,
            record.split,
            record.source,
            record.n_classifications,
            ";".join(record.labels),
            *(record.scores.get(k) for k in self.keys),
        ]
        self._csv.writerow([csv_escape(v) for v in row])

    def close(self) -> None:
        self._fh.close()


class JsonlWriter:
    """The design's JSONL line, raw (no spreadsheet escaping: JSON is data)."""

    fmt = "jsonl"

    def __init__(self, path: Path) -> None:
        self._fh = _open_text(path)

    def write(self, record: ExportRecord) -> None:
        self._fh.write(json.dumps(record.jsonl(), ensure_ascii=False) + "\n")

    def close(self) -> None:
        self._fh.close()


class WebAnnotationWriter:
    """W3C Web Annotations (JSON-LD), one per item x concept of its final label.

    Each is a semantic tag as Europeana's Annotations API takes it: motivation ``tagging``, the
    concept URI as body, the item URI as target, crowdloop as creator and generator. The file is a
    JSON array of annotations, each with its own ``@context`` (the form of a batch upload).
    ``machine`` marks model-generated proposals: the creator is then the model version.
    """

    fmt = "webannotation"

    def __init__(
        self,
        path: Path,
        concepts: Sequence[Concept],
        *,
        id_prefix: str,
        created: datetime,
        creator: dict[str, Any] | None = None,
    ) -> None:
        self.uris = {c.key: concept_uri(c) for c in concepts}
        self.id_prefix = id_prefix
        self.created = created.isoformat().replace("+00:00", "Z")
        self.creator = creator or {"type": "Software", "name": "crowdloop (crowd and curators)"}
        self._fh = _open_text(path)
        self._fh.write("[")
        self._first = True

    def write(self, record: ExportRecord) -> None:
        for key in record.labels:
            uri = self.uris.get(key)
            if uri is None:  # a curated key outside the vocabulary in use
                continue
            creator = self.creator
            if record.model_version is not None:  # machine-generated: say which model
                creator = {"type": "Software", "name": f"crowdloop model v{record.model_version}"}
            annotation = {
                "@context": W3C_CONTEXT,
                "id": f"{self.id_prefix}{record.item_id}/{quote(key, safe='')}",
                "type": "Annotation",
                "motivation": "tagging",
                "created": self.created,
                "creator": creator,
                "generator": GENERATOR,
                "body": uri,
                "target": record.item_uri,
            }
            self._fh.write(("\n" if self._first else ",\n") + json.dumps(annotation))
            self._first = False

    def close(self) -> None:
        self._fh.write("\n]\n")
        self._fh.close()


class ImageFolderWriter:
    """The Hugging Face imagefolder layout: ``<split>/<item pk>.<ext>`` and a ``metadata.jsonl``
    per split whose ``file_name`` names the image beside it. Items with no stored copy of their
    image are counted in ``skipped`` and left out (there is nothing to train on)."""

    fmt = "imagefolder"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.skipped = 0
        self._meta = {}
        for split in SPLITS:
            (root / split).mkdir(parents=True, exist_ok=True)
            self._meta[split] = _open_text(root / split / "metadata.jsonl")

    def write(self, record: ExportRecord) -> None:
        ext = Path(record.image_file).suffix.lower().lstrip(".")
        if not record.image_file or ext not in IMAGE_EXTENSIONS:
            self.skipped += 1
            return
        try:
            source = image_path(record.image_file)
        except ValueError:
            self.skipped += 1
            return
        if not source.is_file():
            self.skipped += 1
            return
        name = f"{record.item_id}.{ext}"
        shutil.copyfile(source, self.root / record.split / name)
        line = {"file_name": name, **record.jsonl()}
        self._meta[record.split].write(json.dumps(line, ensure_ascii=False) + "\n")

    def close(self) -> None:
        for fh in self._meta.values():
            fh.close()


# --- running an export --------------------------------------------------------------------------


@dataclass
class ExportFile:
    path: str  # relative to the export root, "/"-separated
    sha256: str
    bytes: int


@dataclass
class ExportResult:
    formats: list[str]
    out: Path
    n_items: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # positives per concept key
    split_counts: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    skipped_images: int = 0
    files: list[ExportFile] = field(default_factory=list)
    manifest_path: Path | None = None

    def summary(self) -> str:
        splits = ", ".join(f"{self.split_counts.get(s, 0)} {s}" for s in SPLITS)
        text = f"exported {self.n_items} items ({splits}) as {'+'.join(self.formats)} to {self.out}"
        if self.skipped_images:
            text += f"; {self.skipped_images} without a stored image left out of the image folder"
        return text


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_describe(root: Path, paths: Iterable[Path]) -> list[ExportFile]:
    """sha256 and size of every file under ``paths`` (folders walked), relative to ``root``."""
    out: list[ExportFile] = []
    for path in paths:
        found = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for p in found:
            out.append(ExportFile(p.relative_to(root).as_posix(), file_sha256(p), p.stat().st_size))
    return out


def records_write(
    records: Iterable[ExportRecord], writers: Sequence[Writer], result: ExportResult
) -> ExportResult:
    """Send every record to every writer, counting as it goes; writers are closed at the end."""
    counts: Counter[str] = Counter()
    splits: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    try:
        for record in records:
            for writer in writers:
                writer.write(record)
            result.n_items += 1
            counts.update(record.labels)
            splits[record.split] += 1
            sources[record.source] += 1
    finally:
        for writer in writers:
            writer.close()
    result.counts = dict(sorted(counts.items()))
    result.split_counts = {s: splits.get(s, 0) for s in SPLITS}
    result.sources = dict(sorted(sources.items()))
    result.skipped_images = sum(getattr(w, "skipped", 0) for w in writers)
    return result


def writers_build(
    paths: dict[str, Path],
    concepts: Sequence[Concept],
    *,
    id_prefix: str = "urn:crowdloop:annotation:",
    created: datetime | None = None,
) -> list[Writer]:
    """One writer per format, each writing to its path (a folder for imagefolder)."""
    created = created or datetime.now(UTC)
    writers: list[Writer] = []
    for fmt, path in paths.items():
        if fmt == "csv":
            writers.append(CsvWriter(path, concepts))
        elif fmt == "jsonl":
            writers.append(JsonlWriter(path))
        elif fmt == "webannotation":
            writers.append(
                WebAnnotationWriter(path, concepts, id_prefix=id_prefix, created=created)
            )
        elif fmt == "imagefolder":
            writers.append(ImageFolderWriter(path))
        else:
            raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return writers


def manifest_build(result: ExportResult, filters: ExportFilters, **extra: Any) -> dict[str, Any]:
    return {
        "generator": "crowdloop",
        "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        **extra,
        "formats": result.formats,
        "filters": filters.as_dict(),
        "n_items": result.n_items,
        "counts": result.counts,
        "splits": result.split_counts,
        "sources": result.sources,
        "skipped_images": result.skipped_images,
        "split_rule": SPLIT_RULE,
        "files": [f.__dict__ for f in result.files],
    }


def dataset_export(
    *,
    fmt: str,
    out: Path | str,
    reviewed_only: bool = False,
    min_confidence: float | None = None,
    concepts: Sequence[str] | None = None,
    kind: str = "labels",
) -> ExportResult:
    """Export the final labels (or, with ``kind="proposals"``, the active model's enrichment
    proposals) in one format to ``out``, with a manifest beside it.

    ``out`` is a file for csv, jsonl and webannotation (the manifest is ``<out>.manifest.json``)
    and a folder for imagefolder (the manifest is ``<out>/manifest.json``). An export with no item
    still writes valid empty files and a manifest (B18).

    Raises:
        ValueError: an unknown format or concept, or a confidence outside [0.5, 1].
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    filters = ExportFilters(
        reviewed_only=reviewed_only,
        min_confidence=min_confidence,
        concepts=tuple(concepts) if concepts else None,
    )
    out = Path(out)
    vocabulary = export_concepts(filters)
    if fmt == "imagefolder":
        out.mkdir(parents=True, exist_ok=True)
        root, manifest_path = out, out / "manifest.json"
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        root, manifest_path = out.parent, out.with_name(out.name + ".manifest.json")
    records = records_for(kind, filters, concepts=vocabulary)  # fails before any file opens
    writers = writers_build({fmt: out}, vocabulary)
    result = records_write(records, writers, ExportResult(formats=[fmt], out=out))
    if fmt == "imagefolder":
        result.files = files_describe(out, [out / s for s in SPLITS])
    else:
        result.files = files_describe(root, [out])
    manifest = manifest_build(result, filters, kind=kind, lineage=lineage_describe())
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    result.manifest_path = manifest_path
    return result


def lineage_describe() -> dict[str, Any]:
    """Where the labels came from: aggregation method(s), votes, curator decisions, model."""
    from annotate.models import Classification, Review

    methods = sorted(AggregatedLabel.objects.order_by().values_list("method", flat=True).distinct())
    return {
        "aggregation_methods": methods,
        "aggregation_method_setting": getattr(settings, "AGGREGATION_METHOD", ""),
        "n_classifications": Classification.objects.filter(is_duplicate=False).count(),
        # Decisions that stand: an undo and the decision it reversed count for nothing.
        "n_curator_decisions": Review.objects.exclude(
            action__in=[Review.Action.SKIP, Review.Action.UNDO]
        )
        .filter(undone_by__isnull=True)
        .count(),
        "n_items_curated": Item.objects.filter(
            review_state__in=Item.ReviewState.CURATED
        ).count(),
        "n_items_rejected": Item.objects.filter(review_state=Item.ReviewState.REJECTED).count(),
        "model_version": active_model_version(),
    }


def active_model_version() -> dict[str, Any] | None:
    """The training app's active model version as {id, name}, when that app has one."""
    from django.apps import apps

    try:
        model = apps.get_model("training", "ModelVersion")
    except LookupError:
        return None
    names = {f.name for f in model._meta.get_fields()}
    query = model.objects.all()
    if "status" in names:
        query = query.filter(status="active")
    elif "active" in names:
        query = query.filter(active=True)
    else:
        return None
    version = query.order_by("-pk").first()
    if version is None:
        return None
    described = {"id": version.pk, "name": str(version)}
    if "weights_sha256" in names:  # the pretrained weights under the trunk, as asked and as read
        described.update(weights=version.weights, weights_sha256=version.weights_sha256)
    return described
