"""Dataset writers: export records streamed to CSV, JSONL, W3C Web Annotation or an image folder.

Contract: a writer takes :class:`~annotate.services.datasets.records.ExportRecord` s one at a time
(``write``) and finishes its file on ``close``; :func:`records_write` sends every record to every
writer and counts as it goes, so a plain export uses one writer and a release all four in one pass.
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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from annotate.models import Concept
from annotate.security import csv_escape
from annotate.services.datasets.records import SPLITS, ExportRecord, concept_uri
from annotate.services.media import image_path

FORMATS = ("csv", "jsonl", "webannotation", "imagefolder")
W3C_CONTEXT = "http://www.w3.org/ns/anno.jsonld"
GENERATOR = {"type": "Software", "name": "crowdloop"}
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif"})

#: The file each format writes inside a release folder (names are ours, never user data).
FILE_NAMES = {
    "csv": "labels.csv",
    "jsonl": "labels.jsonl",
    "webannotation": "annotations.jsonld",
    "imagefolder": "imagefolder",
}


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
