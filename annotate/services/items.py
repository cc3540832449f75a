"""Item import from a manifest (CSV or JSONL), streamed and written in bulk.

A manifest row is ``external_id, image[, title, prior_labels, provider, rights, ...]``: ``image`` is
an http(s) URL or a path relative to the manifest, ``prior_labels`` concept keys separated by ``;``
(a JSON list in JSONL). Other columns are kept as item metadata. Re-importing a file updates items
by external id and never duplicates them; a row that cannot be imported is reported with its line
and the reason, and the rest imports.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from annotate.models import Concept, ImportReport, Item, PriorLabel, QuarantinedRow
from annotate.services.classifications.subjects import subjects_link_pending
from annotate.services.media import image_store
from ml import images

MANIFEST_SOURCE = "manifest"
_ITEM_FIELDS = ("external_id", "image", "title", "prior_labels", "provider", "rights")
_LIMITS = {"external_id": 255, "title": 1000, "provider": 500, "rights": 500, "image": 2000}


class ManifestError(ValueError):
    """A whole manifest that cannot be read (missing file, no external_id column)."""


@dataclass
class RowProblem:
    line: int
    reason: str
    field: str = ""
    record_id: str = ""
    raw: str = ""


@dataclass
class ItemRow:
    """A validated manifest row, ready to be written."""

    line: int
    external_id: str
    image_url: str = ""
    image_path: Path | None = None
    title: str = ""
    provider: str = ""
    rights: str = ""
    prior_labels: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    source_label: str = MANIFEST_SOURCE


@dataclass
class ImportCounts:
    total: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    image_problems: int = 0
    #: Items that subjects waiting for them (votes imported first) were linked to.
    subjects_linked: int = 0

    def summary(self) -> str:
        return (
            f"{self.total} rows: {self.created} created, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.quarantined} reported "
            f"({self.image_problems} with image problems)"
        ) + (
            f", {self.subjects_linked} items linked to waiting subjects"
            if self.subjects_linked
            else ""
        )


# -- reading -----------------------------------------------------------------------------------


def manifest_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    """Yield (line, raw record) or (line, problem) for each row of a CSV or JSONL manifest."""
    if not path.exists():
        raise ManifestError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        yield from _jsonl_rows(path)
    else:
        yield from _csv_rows(path)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield line_no, RowProblem(line_no, f"invalid JSON: {exc.msg}", raw=line[:500])
                continue
            if not isinstance(record, dict):
                yield line_no, RowProblem(line_no, "expected a JSON object", raw=line[:500])
                continue
            yield line_no, record


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        reader = csv.reader(fh, strict=True)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            return
        except csv.Error as exc:
            raise ManifestError(f"{path}: line 1: unreadable header: {exc}") from exc
        if "external_id" not in header:
            raise ManifestError(f"{path}: line 1: the header has no 'external_id' column")
        end = reader.line_num
        while True:
            start = end + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                # A broken quote swallows the rest of the line; csv resynchronises on the next one.
                end = reader.line_num
                yield start, RowProblem(start, f"malformed CSV: {exc}")
                continue
            end = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                yield (
                    start,
                    RowProblem(
                        start,
                        f"expected {len(header)} columns, found {len(values)}",
                        raw=",".join(values)[:500],
                    ),
                )
                continue
            yield start, dict(zip(header, values, strict=True))


def _text(record: dict[str, Any], name: str) -> str:
    value = record.get(name)
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)):
        raise _FieldError(name, f"'{name}' must be text")
    text = str(value).strip()
    if "\x00" in text:
        raise _FieldError(name, f"'{name}' contains a NUL byte")
    limit = _LIMITS.get(name)
    if limit and len(text) > limit:
        raise _FieldError(name, f"'{name}' is longer than {limit} characters")
    return text


class _FieldError(ValueError):
    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field_name


def item_row_parse(
    line: int, record: dict[str, Any], *, base_dir: Path, concept_keys: set[str]
) -> ItemRow:
    """Validate one manifest record.

    Raises:
        _FieldError: the record is refused; the message names the field.
    """
    external_id = _text(record, "external_id")
    if not external_id:
        raise _FieldError("external_id", "'external_id' is empty")
    image = _text(record, "image") or _text(record, "image_url")
    row = ItemRow(
        line=line,
        external_id=external_id,
        title=_text(record, "title"),
        provider=_text(record, "provider"),
        rights=_text(record, "rights"),
    )
    if not image:
        raise _FieldError("image", "'image' is empty: give a URL or a path")
    scheme = urlsplit(image).scheme.lower()
    if scheme in {"http", "https"}:
        if not urlsplit(image).netloc:
            raise _FieldError("image", f"'image' is not a valid URL: {image!r}")
        row.image_url = image
    elif scheme and len(scheme) > 1:
        raise _FieldError("image", f"'image' URL scheme {scheme!r} is not allowed (http, https)")
    else:
        row.image_path = (base_dir / image).resolve()

    labels = record.get("prior_labels") or []
    if isinstance(labels, str):
        labels = [p for p in (s.strip() for s in labels.split(";")) if p]
    if not isinstance(labels, list) or not all(isinstance(p, str) for p in labels):
        raise _FieldError("prior_labels", "'prior_labels' must be concept keys")
    unknown = sorted({p for p in labels if p not in concept_keys})
    if unknown:
        raise _FieldError("prior_labels", f"unknown concept(s): {', '.join(unknown)}")
    row.prior_labels = sorted(set(labels))

    metadata = record.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _FieldError("metadata", "'metadata' must be an object")
    row.metadata = dict(metadata or {})
    for key, value in record.items():
        if (
            key not in _ITEM_FIELDS
            and key not in {"metadata", "image_url"}
            and value not in ("", None)
        ):
            row.metadata[str(key)[:100]] = value
    return row


# -- writing -----------------------------------------------------------------------------------


def _chunks(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _image_fields(row: ItemRow) -> tuple[dict[str, Any], RowProblem | None]:
    """The image columns of an item, checking and storing a local file now.

    Remote images are left ``pending``: they are fetched later by a worker, never during import.
    """
    if row.image_url:
        return {"image_url": row.image_url}, None
    assert row.image_path is not None
    try:
        data = images.read_bytes(row.image_path)
        stored = image_store(data=data)
    except images.ImageError as exc:
        state = Item.ImageState.MISSING if "not found" in str(exc) else exc.state
        problem = RowProblem(
            row.line,
            f"image {row.image_path.name}: {exc}",
            field="image",
            record_id=row.external_id,
        )
        return {
            "image_url": "",
            "image_file": "",
            "thumbnail": "",
            "image_state": state,
            "image_error": str(exc)[:500],
        }, problem
    return {
        "image_url": "",
        "image_file": stored.image_file,
        "thumbnail": stored.thumbnail,
        "image_sha256": stored.info.sha256,
        "image_width": stored.info.width,
        "image_height": stored.info.height,
        "image_state": Item.ImageState.OK,
        "image_error": "",
    }, None


_COMPARED = (
    "image_url",
    "image_file",
    "thumbnail",
    "image_sha256",
    "image_width",
    "image_height",
    "image_state",
    "image_error",
    "title",
    "provider",
    "rights",
    "metadata",
)


def items_upsert(
    rows: list[ItemRow],
    *,
    concepts: dict[str, Concept],
    counts: ImportCounts,
    prior_source: str = MANIFEST_SOURCE,
    replace_priors: bool = True,
) -> list[RowProblem]:
    """Create or update a batch of items by external id, in bulk; return the image problems.

    With ``replace_priors`` the items' prior labels from ``prior_source`` become exactly the rows'
    (a manifest states them all); without, the rows' labels are added (a harvest finds an item
    once per concept).
    """
    problems: list[RowProblem] = []
    # The last row wins when a manifest repeats an external id.
    by_id = {row.external_id: row for row in rows}
    existing = {i.external_id: i for i in Item.objects.filter(external_id__in=list(by_id))}
    to_create: list[Item] = []
    to_update: list[Item] = []
    for external_id, row in by_id.items():
        values, problem = _image_fields(row)
        if problem:
            problems.append(problem)
        values.update(
            title=row.title, provider=row.provider, rights=row.rights, metadata=row.metadata
        )
        item = existing.get(external_id)
        if item is None:
            to_create.append(Item(external_id=external_id, **values))
        elif any(getattr(item, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(item, k, v)
            to_update.append(item)
        else:
            counts.unchanged += 1
    with transaction.atomic():
        Item.objects.bulk_create(to_create)
        Item.objects.bulk_update(to_update, [f for f in _COMPARED], batch_size=500)
        _priors_sync(by_id, concepts=concepts, source=prior_source, replace=replace_priors)
    counts.created += len(to_create)
    counts.updated += len(to_update)
    return problems


def _priors_sync(
    by_id: dict[str, ItemRow], *, concepts: dict[str, Concept], source: str, replace: bool
) -> None:
    """Bring the items' prior labels from ``source`` in line, touching only what differs."""
    item_ids = dict(
        Item.objects.filter(external_id__in=list(by_id)).values_list("external_id", "id")
    )
    current: dict[int, set[int]] = {}
    for item_id, concept_id in PriorLabel.objects.filter(
        item_id__in=item_ids.values(), source=source
    ).values_list("item_id", "concept_id"):
        current.setdefault(item_id, set()).add(concept_id)
    to_add: list[PriorLabel] = []
    to_remove: list[tuple[int, int]] = []
    for external_id, row in by_id.items():
        item_id = item_ids[external_id]
        wanted = {concepts[k].id for k in row.prior_labels}
        have = current.get(item_id, set())
        to_add += [PriorLabel(item_id=item_id, concept_id=c, source=source) for c in wanted - have]
        if replace:
            to_remove += [(item_id, c) for c in have - wanted]
    PriorLabel.objects.bulk_create(to_add)
    if to_remove:
        stale = Q()
        for item_id, concept_id in to_remove:
            stale |= Q(item_id=item_id, concept_id=concept_id)
        PriorLabel.objects.filter(stale, source=source).delete()


def items_import(
    *,
    path: Path,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> tuple[ImportReport, ImportCounts]:
    """Import a CSV or JSONL manifest of items; see the module docstring for the format.

    Returns the stored report (with its quarantined rows) and the counts.

    Raises:
        ManifestError: the file as a whole cannot be read; nothing was imported.
    """
    path = Path(path)
    base_dir = path.resolve().parent
    concepts = {c.key: c for c in Concept.objects.all()}
    concept_keys = set(concepts)
    rows = manifest_rows(path)
    first = next(rows, None)  # raises ManifestError before a report exists for a bad file
    report = ImportReport.objects.create(kind=ImportReport.Kind.ITEMS, source=str(path))
    counts = ImportCounts()
    problems: list[RowProblem] = []

    def parsed() -> Iterator[ItemRow]:
        for line, record in itertools.chain([first] if first else [], rows):
            yield from _parse_one(line, record)

    def _parse_one(line: int, record: dict[str, Any] | RowProblem) -> Iterator[ItemRow]:
        counts.total += 1
        if progress:
            progress(1)
        if isinstance(record, RowProblem):
            problems.append(record)
            return
        try:
            yield item_row_parse(line, record, base_dir=base_dir, concept_keys=concept_keys)
        except _FieldError as exc:
            problems.append(
                RowProblem(
                    line,
                    str(exc),
                    field=exc.field,
                    record_id=str(record.get("external_id") or "")[:255],
                    raw=json.dumps(record, ensure_ascii=False, default=str)[:500],
                )
            )

    try:
        for batch in _chunks(parsed(), batch_size):
            problems += items_upsert(batch, concepts=concepts, counts=counts)
            quarantine_rows(report, problems, counts)
            problems = []
        quarantine_rows(report, problems, counts)
        # Votes may have arrived before their items: link their subjects now.
        counts.subjects_linked = len(subjects_link_pending())
    except Exception as exc:
        report_finish(report, counts, status=ImportReport.Status.FAILED, message=str(exc))
        raise
    report_finish(report, counts, status=ImportReport.Status.SUCCEEDED, message=counts.summary())
    return report, counts


def quarantine_rows(report: ImportReport, problems: list[RowProblem], counts: ImportCounts) -> None:
    if not problems:
        return
    QuarantinedRow.objects.bulk_create(
        QuarantinedRow(
            report=report,
            line=p.line,
            record_id=p.record_id[:255],
            field=p.field,
            reason=p.reason[:1000],
            raw=p.raw,
        )
        for p in problems
    )
    counts.quarantined += len(problems)
    counts.image_problems += sum(1 for p in problems if p.field == "image")


def report_finish(report: ImportReport, counts: ImportCounts, *, status: str, message: str) -> None:
    report.status = status
    report.total = counts.total
    report.created = counts.created
    report.updated = counts.updated
    report.unchanged = counts.unchanged
    report.quarantined = counts.quarantined
    report.message = message[:5000]
    report.finished_at = timezone.now()
    report.save()
