"""Item import from a manifest (CSV or JSONL), streamed and written in bulk.

A row is ``external_id, image[, title, prior_labels, provider, rights, ...]`` (``image`` a URL or
a path relative to the manifest, ``prior_labels`` keys separated by ``;``, other columns kept as
metadata). Re-importing updates items by external id, never duplicates them; a row that cannot be
imported is reported with its line and reason, and the rest imports. Manifests come from outside:
a local image must lead (symlinks resolved) into the manifest's folder or ``settings.IMPORT_ROOTS``
and be a regular file read under ``IMAGE_MAX_BYTES``, else it reads exactly as a missing file; a
line that does not decode is reported, never imported with replacement characters; JSON is read
by ``ml.safe_json`` (no deep nesting, ``NaN``, ``Infinity`` or numbers beyond a double).
"""

from __future__ import annotations

import codecs
import csv
import itertools
import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from annotate.models import (
    Concept,
    ImportReport,
    Item,
    ItemIdentityChange,
    PriorLabel,
)
from annotate.services.classifications.subjects import subjects_link_pending
from annotate.services.item_identity import identity_changes, image_source_values
from annotate.services.media import image_store
from annotate.services.quarantine import printable_nul, quarantine_row, quarantine_store
from annotate.signals import prior_labels_changed
from ml import images, safe_json

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
    #: The local image, resolved and inside the allowed folders; None when it is not allowed.
    image_path: Path | None = None
    #: The local image path as the manifest wrote it: the only form a message shows.
    image_name: str = ""
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


def manifest_rows(
    path: Path, *, encoding: str = "utf-8"
) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    """Yield (line, raw record) or (line, problem) for each row of a CSV or JSONL manifest.

    Raises:
        ManifestError: (on the first ``next``) the file is missing, not a regular file, cannot
            be opened, is in an unknown encoding, or its CSV header is unusable.
    """
    fh = _manifest_open(path, encoding)
    with fh:
        lines = _Lines(fh, encoding)
        suffix = path.suffix.lower()
        if suffix in {".jsonl", ".ndjson", ".json"}:
            yield from _jsonl_rows(lines)
        else:
            yield from _csv_rows(path, lines)


def _manifest_open(path: Path, encoding: str) -> TextIO:
    """The manifest as text; a FIFO or a folder is refused without reading from it."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ManifestError(f"unknown encoding {encoding!r}") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such file") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ManifestError(f"{path}: not a regular file")
    try:
        # Undecodable bytes become lone surrogates, which _Lines finds and reports by line.
        return open(  # noqa: SIM115 - the caller closes it
            fd,
            encoding="utf-8-sig" if name == "utf-8" else name,
            errors="surrogateescape",
            newline="",
        )
    except LookupError as exc:  # a codec that is not a text encoding (base64, rot13)
        os.close(fd)
        raise ManifestError(f"unknown encoding {encoding!r}: {exc}") from None


class _Lines:
    """A manifest's physical lines, remembering each that is not valid in its encoding."""

    def __init__(self, fh: TextIO, encoding: str) -> None:
        self._fh = fh
        self._label = "UTF-8" if codecs.lookup(encoding).name == "utf-8" else encoding
        #: line number -> the first byte that did not decode
        self.bad: dict[int, int] = {}

    def __iter__(self) -> Iterator[str]:
        for number, text in enumerate(self._fh, start=1):
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as exc:
                    self.bad[number] = ord(text[exc.start]) - 0xDC00
            yield text

    def problem(self, first: int, last: int) -> str | None:
        """Why lines ``first`` to ``last`` (one record) cannot be read, or None."""
        if not self.bad:
            return None
        found = [(n, self.bad.pop(n)) for n in range(first, last + 1) if n in self.bad]
        return self._message(*found[0]) if found else None

    def _message(self, line: int, byte: int) -> str:
        return (
            f"line {line} is not valid {self._label} (byte 0x{byte:02X}): save the manifest as "
            "UTF-8, or name its encoding (import_items --encoding cp1252)"
        )


def _printable(text: str) -> str:
    """Text with undecodable bytes written as ``\\xe9``: storable, and showing what was there."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _jsonl_rows(lines: _Lines) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        undecodable = lines.problem(line_no, line_no)
        if undecodable:
            yield line_no, RowProblem(line_no, undecodable, raw=_printable(line[:500]))
            continue
        try:
            record = safe_json.loads(line)
        except safe_json.JSONValueError as exc:
            yield (
                line_no,
                RowProblem(
                    line_no, str(exc), field=re.split(r"[.\[]", exc.path)[0], raw=line[:500]
                ),
            )
            continue
        if not isinstance(record, dict):
            yield line_no, RowProblem(line_no, "expected a JSON object", raw=line[:500])
            continue
        yield line_no, record


def _csv_rows(path: Path, lines: _Lines) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    reader = csv.reader(lines, strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        raise ManifestError(f"{path}: line 1: unreadable header: {exc}") from exc
    undecodable = lines.problem(1, reader.line_num)
    if undecodable:
        raise ManifestError(f"{path}: {undecodable}")
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
            lines.problem(start, end)
            yield start, RowProblem(start, f"malformed CSV: {exc}")
            continue
        end = reader.line_num
        undecodable = lines.problem(start, end)
        if undecodable:
            yield start, RowProblem(start, undecodable, raw=_printable(",".join(values))[:500])
            continue
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
    if isinstance(value, float) and not math.isfinite(value):
        raise _FieldError(name, f"'{name}' is not a finite number: {value}")
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
    line: int,
    record: dict[str, Any],
    *,
    base_dir: Path,
    concept_keys: set[str],
    roots: Sequence[Path] = (),
) -> ItemRow:
    """Validate one manifest record.

    A local image path is relative to ``base_dir`` (absolute paths are taken as they are) and is
    only kept when it leads, symlinks resolved, into ``base_dir`` or one of ``roots`` (both
    already resolved); otherwise ``image_path`` stays None and the image reads as missing.

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
        row.image_name = image
        row.image_path = _image_path_allowed(image, roots=[base_dir, *roots])

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
    extra = {
        str(key)[:100]: value
        for key, value in record.items()
        if key not in _ITEM_FIELDS
        and key not in {"metadata", "image_url"}
        and value not in ("", None)
    }
    # A JSON column stores no inf, nan or NUL (records from other readers may hold them).
    for name, value in (("metadata", metadata), *extra.items()):
        if "\x00" in name:
            raise _FieldError("metadata", f"'{printable_nul(name)}' contains a NUL character")
        found = safe_json.unstorable(value)
        if found is not None:
            where, what = found
            where = name + (where if where.startswith("[") or not where else f".{where}")
            raise _FieldError(name, f"'{where}' {what}")
    row.metadata = {**(metadata or {}), **extra}
    return row


def _image_path_allowed(image: str, *, roots: Sequence[Path]) -> Path | None:
    """The resolved image path when it lies inside one of ``roots``, else None."""
    try:
        resolved = (roots[0] / image).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, an unusable name
        return None
    return resolved if any(resolved.is_relative_to(root) for root in roots) else None


def import_roots() -> list[Path]:
    """``settings.IMPORT_ROOTS``, resolved: the folders beyond a manifest's own it may use."""
    return [Path(root).resolve() for root in settings.IMPORT_ROOTS]


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
    try:
        if row.image_path is None:
            raise images.FileNotReadable("outside the manifest's folder and IMPORT_ROOTS")
        data = images.read_file_capped(
            row.image_path, max_bytes=settings.IMAGE_MAX_BYTES, follow_symlinks=False
        )
        stored = image_store(data=data)
    except images.ImageError as exc:
        state: str
        if isinstance(exc, images.FileNotReadable):
            # One answer for missing, outside the allowed folders and not a regular file, so a
            # manifest cannot find out which files exist elsewhere on the machine.
            reason = f"image file not found or not allowed: {row.image_name}"
            state, error = Item.ImageState.MISSING, reason
        else:
            reason, state, error = f"image {row.image_name}: {exc}", exc.state, str(exc)
        problem = RowProblem(row.line, reason, field="image", record_id=row.external_id)
        return {
            "image_url": "",
            "image_file": "",
            "thumbnail": "",
            "image_state": state,
            "image_error": error[:500],
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
    report: ImportReport | None = None,
) -> list[RowProblem]:
    """Create or update a batch of items by external id, in bulk; return the image problems.

    With ``replace_priors`` the items' prior labels from ``prior_source`` become exactly the rows'
    (a manifest states them all); without, the rows' labels are added (a harvest finds an item
    once per concept). A changed image is audited against ``report`` (item_identity).
    """
    problems: list[RowProblem] = []
    changes: list[ItemIdentityChange] = []
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
            values = image_source_values(item, values)
            changes += identity_changes(item, values, report=report)
            for k, v in values.items():
                setattr(item, k, v)
            to_update.append(item)
        else:
            counts.unchanged += 1
    with transaction.atomic():
        Item.objects.bulk_create(to_create)
        Item.objects.bulk_update(to_update, [f for f in _COMPARED], batch_size=500)
        ItemIdentityChange.objects.bulk_create(changes)
        changed = _priors_sync(
            by_id, concepts=concepts, source=prior_source, replace=replace_priors
        )
        if changed:
            # Whoever judges prior labels (the zero-shot model's doubts) looks again.
            transaction.on_commit(
                lambda: prior_labels_changed.send(sender=items_upsert, item_ids=changed)
            )
    counts.created += len(to_create)
    counts.updated += len(to_update)
    return problems


def _priors_sync(
    by_id: dict[str, ItemRow], *, concepts: dict[str, Concept], source: str, replace: bool
) -> list[int]:
    """Bring the items' prior labels from ``source`` in line, touching only what differs;
    return the ids of the items whose prior labels changed."""
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
    return sorted({label.item_id for label in to_add} | {item_id for item_id, _ in to_remove})


def items_import(
    *,
    path: Path,
    encoding: str = "utf-8",
    batch_size: int = 500,
    progress: Callable[[int], object] | None = None,
) -> tuple[ImportReport, ImportCounts]:
    """Import a CSV or JSONL manifest of items; see the module docstring for the format.

    ``encoding`` is the manifest's text encoding (``cp1252`` for a spreadsheet saved on Windows).

    Returns the stored report (with its quarantined rows) and the counts.

    Raises:
        ManifestError: the file as a whole cannot be read; nothing was imported.
    """
    path = Path(path)
    base_dir = path.resolve().parent
    concepts = {c.key: c for c in Concept.objects.all()}
    concept_keys = set(concepts)
    roots = import_roots()
    rows = manifest_rows(path, encoding=encoding)
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
            yield item_row_parse(
                line, record, base_dir=base_dir, concept_keys=concept_keys, roots=roots
            )
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
            problems += items_upsert(batch, concepts=concepts, counts=counts, report=report)
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
    quarantine_store(  # a row a run of the same manifest stored before is not stored again
        quarantine_row(
            report, line=p.line, record_id=p.record_id, field=p.field, reason=p.reason, raw=p.raw
        )
        for p in problems
    )
    counts.quarantined += len(problems)
    counts.image_problems += sum(1 for p in problems if p.field == "image")


def report_finish(report: ImportReport, counts: ImportCounts, *, status: str, message: str) -> None:
    """End an item import's report with its counts."""
    report.finish(
        status,
        message,
        total=counts.total,
        created=counts.created,
        updated=counts.updated,
        unchanged=counts.unchanged,
        quarantined=counts.quarantined,
    )
