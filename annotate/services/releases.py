"""Dataset releases: versioned, immutable snapshots of the final labels in every export format.

``release_request`` writes a ``queued`` row with the next version number and sends the build task
(:data:`RELEASE_BUILD_TASK`) once the transaction commits. ``release_build`` claims the row
(``claim()`` of :mod:`annotate.jobs`: a redelivered message finds it running or done and
returns, so the task may run more than once), streams the items once into all four writers in a
temporary folder beside the final one, zips the images, hashes every file into ``manifest.json``,
renames the folder into ``ARTIFACT_ROOT/releases/<id>/``, then saves the row ``succeeded`` with
counts, lineage and content hash; from then on the model refuses any change. Downloads go through
:func:`release_file_path`: only names listed in the manifest (``labels.csv``, ``labels.jsonl``,
``annotations.jsonld``, ``imagefolder.zip``, ``manifest.json``), inside the release folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from annotate.models import DatasetRelease
from annotate.services.datasets.export import lineage_describe, manifest_build
from annotate.services.datasets.records import ExportFilters, export_concepts, records_for
from annotate.services.datasets.writers import (
    FILE_NAMES,
    FORMATS,
    ExportResult,
    files_describe,
    records_write,
    writers_build,
)

logger = logging.getLogger(__name__)

#: The Celery task that runs :func:`release_build` (``annotate.tasks.release_build_task``); the
#: name of the module it was first written in, kept for the messages already queued under it.
RELEASE_BUILD_TASK = "annotate.tasks_releases.release_build"

MANIFEST_NAME = "manifest.json"
IMAGEFOLDER_ZIP = "imagefolder.zip"
#: The names a download may ask for, by format; the manifest is always downloadable.
DOWNLOAD_NAMES = {
    "csv": FILE_NAMES["csv"],
    "jsonl": FILE_NAMES["jsonl"],
    "webannotation": FILE_NAMES["webannotation"],
    "imagefolder": IMAGEFOLDER_ZIP,
    "manifest": MANIFEST_NAME,
}
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
    "webannotation": 'application/ld+json; profile="http://www.w3.org/ns/anno.jsonld"',
    "imagefolder": "application/zip",
    "manifest": "application/json",
}


def releases_root() -> Path:
    return Path(settings.ARTIFACT_ROOT) / "releases"


def release_dir(release: DatasetRelease) -> Path:
    return releases_root() / str(int(release.pk))


def release_request(
    *,
    user: User | None,
    reviewed_only: bool = False,
    min_confidence: float | None = None,
    concepts: Sequence[str] | None = None,
    formats: Sequence[str] | None = None,
    note: str = "",
    kind: str = DatasetRelease.Kind.LABELS,
) -> DatasetRelease:
    """Create a queued release with the next version number; its build starts after commit.

    Raises:
        ValueError: unknown format or concept, or a confidence outside [0.5, 1].
    """
    filters = ExportFilters(
        reviewed_only=reviewed_only,
        min_confidence=min_confidence,
        concepts=tuple(dict.fromkeys(concepts)) if concepts else None,
    )
    vocabulary = export_concepts(filters)  # unknown concept keys fail now, not in the worker
    if kind not in DatasetRelease.Kind.values:
        raise ValueError(
            f"unknown kind {kind!r}; use one of {', '.join(DatasetRelease.Kind.values)}"
        )
    if kind == DatasetRelease.Kind.PROPOSALS:
        records_for(kind, filters, concepts=vocabulary)  # no active model: fail now
    formats = list(dict.fromkeys(formats or FORMATS))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format {unknown[0]!r}; use one of {', '.join(FORMATS)}")
    if "\0" in note or len(note) > 500:
        raise ValueError("the note must be at most 500 characters, without NUL")

    for _attempt in range(5):
        try:
            with transaction.atomic():
                top = DatasetRelease.objects.aggregate(top=Max("version"))["top"] or 0
                release = DatasetRelease.objects.create(
                    version=top + 1,
                    created_by=user if user is not None and user.is_authenticated else None,
                    filters=filters.as_dict(),
                    formats=formats,
                    note=note,
                    kind=kind,
                )
                break
        except IntegrityError:  # two requests took the same number: take the next one
            continue
    else:
        raise RuntimeError("could not allocate a release version number")
    transaction.on_commit(lambda: _enqueue(release.pk))
    return release


def _enqueue(release_id: int) -> None:
    """Send the build; if the broker is unreachable, say so on the row instead of leaving it
    queued with no message behind it (reliability F1): a new release is the retry.

    The task is looked up by its name (``config.task_kinds.task_named``), so that this module
    never imports the tasks that call it."""
    from kombu.exceptions import OperationalError

    from config.task_kinds import task_named

    try:
        task_named(RELEASE_BUILD_TASK).delay(release_id=release_id)
    except (OperationalError, ConnectionError, OSError) as exc:
        logger.error("release %s: could not enqueue the build: %s", release_id, exc)
        DatasetRelease.objects.filter(pk=release_id, status=DatasetRelease.Status.QUEUED).finish(
            status=DatasetRelease.Status.FAILED, error=f"the task queue is unreachable: {exc}"
        )


@dataclass(frozen=True)
class BuildOutcome:
    release_id: int
    status: str
    built: bool  # False when this call found the work done or in progress elsewhere


def release_build(*, release_id: int) -> BuildOutcome:
    """Build a queued release's files and publish it. Safe to call more than once."""
    claimed = DatasetRelease.objects.filter(pk=release_id).claim()
    if not claimed:
        status = (
            DatasetRelease.objects.filter(pk=release_id).values_list("status", flat=True).first()
        )
        return BuildOutcome(release_id, status or "missing", built=False)
    release = DatasetRelease.objects.get(pk=release_id)
    final = release_dir(release)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    try:
        fields = _build_files(release, tmp)
        if final.exists():  # a crashed earlier attempt after the rename; its row never said done
            shutil.rmtree(final)
        tmp.rename(final)
        for name, value in fields.items():
            setattr(release, name, value)
        release.status = DatasetRelease.Status.SUCCEEDED
        release.finished_at = timezone.now()
        release.save()
    except Exception as exc:
        logger.exception("release %s failed", release_id)
        shutil.rmtree(tmp, ignore_errors=True)
        DatasetRelease.objects.filter(pk=release_id).finish(
            status=DatasetRelease.Status.FAILED, error=f"{type(exc).__name__}: {exc}"
        )
        return BuildOutcome(release_id, DatasetRelease.Status.FAILED, built=False)
    return BuildOutcome(release_id, DatasetRelease.Status.SUCCEEDED, built=True)


def _build_files(release: DatasetRelease, root: Path) -> dict[str, Any]:
    root.mkdir(parents=True)
    stored = release.filters or {}
    filters = ExportFilters(
        reviewed_only=bool(stored.get("reviewed_only")),
        min_confidence=stored.get("min_confidence"),
        concepts=tuple(stored["concepts"]) if stored.get("concepts") else None,
    )
    formats = [f for f in FORMATS if f in (release.formats or FORMATS)]
    vocabulary = export_concepts(filters)
    # The JSONL is always written: the content hash is defined on it.
    paths = {fmt: root / FILE_NAMES[fmt] for fmt in dict.fromkeys(["jsonl", *formats])}
    writers = writers_build(
        paths,
        vocabulary,
        id_prefix=f"urn:crowdloop:release:{release.version}:annotation:",
        created=release.created_at,
    )
    result = records_write(
        records_for(release.kind, filters, concepts=vocabulary),
        writers,
        ExportResult(formats=formats, out=root),
    )
    content_hash = hashlib.sha256((root / FILE_NAMES["jsonl"]).read_bytes()).hexdigest()
    if "jsonl" not in formats:
        (root / FILE_NAMES["jsonl"]).unlink()
    if "imagefolder" in formats:
        folder = root / FILE_NAMES["imagefolder"]
        _zip_folder(folder, root / IMAGEFOLDER_ZIP)
        shutil.rmtree(folder)
    names = [DOWNLOAD_NAMES[f] for f in formats]
    result.files = files_describe(root, [root / n for n in names])
    lineage = lineage_describe()
    manifest = manifest_build(
        result,
        filters,
        release={"id": release.pk, "version": release.version, "kind": release.kind},
        lineage=lineage,
        content_hash=content_hash,
    )
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return {
        "n_items": result.n_items,
        "counts": result.counts,
        "split_counts": result.split_counts,
        "lineage": lineage,
        "manifest": manifest,
        "content_hash": content_hash,
        "error": "",
    }


def _zip_folder(folder: Path, target: Path) -> None:
    """A zip of ``folder`` with fixed timestamps, so the same files give the same bytes."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_dir():
                continue
            info = zipfile.ZipInfo(
                path.relative_to(folder).as_posix(), date_time=(1980, 1, 1, 0, 0, 0)
            )
            info.compress_type = (
                zipfile.ZIP_STORED if path.suffix != ".jsonl" else zipfile.ZIP_DEFLATED
            )
            info.external_attr = 0o644 << 16
            with path.open("rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def release_file_path(release: DatasetRelease, what: str) -> Path:
    """The file of ``release`` for a format name (or ``manifest``), for download.

    Raises:
        FileNotFoundError: the release is not written, the format was not part of it, or the file
            is gone. ``what`` is looked up in a fixed table, never joined as a path, and the
            resolved path must stay inside the release folder (no traversal, no symlink out).
    """
    if release.status != DatasetRelease.Status.SUCCEEDED:
        raise FileNotFoundError("the release is not ready")
    name = DOWNLOAD_NAMES.get(what)
    listed = {f["path"] for f in (release.manifest or {}).get("files", [])} | {MANIFEST_NAME}
    if name is None or name not in listed:
        raise FileNotFoundError(f"no {what!r} file in this release")
    root = release_dir(release).resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise FileNotFoundError(f"no {what!r} file in this release")
    return path


def release_download_name(release: DatasetRelease, what: str) -> str:
    """The file name offered to the browser: built from our ids and format only."""
    name = DOWNLOAD_NAMES[what]
    return f"crowdloop-release-{int(release.version)}-{name}"


def release_verify(release: DatasetRelease) -> list[str]:
    """Files whose bytes no longer match the manifest (empty when all match)."""
    root = release_dir(release)
    bad = []
    for entry in (release.manifest or {}).get("files", []):
        path = root / entry["path"]
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            bad.append(entry["path"])
    return bad
