"""Reading: the records handed in, cut into batches, and the state one ingest keeps across them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from annotate.models import Concept, Workflow, WorkflowVersion
from annotate.services.classifications.answers import WILDCARD_VERSION, AnswerMap
from annotate.zooniverse.classification_records import (
    ClassificationColumns,
    ClassificationRecord,
    QuarantineEntry,
)


class IngestContext:
    """State kept across the batches of one ingest: caches of small, stable tables."""

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow
        self.concepts: dict[str, tuple[int, str]] = {
            key.casefold(): (pk, label)
            for pk, key, label in Concept.objects.values_list("id", "key", "label")
        }
        self.maps: dict[str, AnswerMap | None] = {}
        # (major, minor without trailing zeros) -> the one configured version it names.
        self.numeric: dict[tuple[int, str], AnswerMap | None] = {}
        self.volunteers: dict[str, int] = {}
        # Subject id -> the item metadata last looked up for it without finding an item: items do
        # not appear during an ingest, so the same subject's next votes need not look again.
        self.unmatched: dict[int, tuple[Any, ...]] = {}
        # Subject ids seen without an item (some may be linked later in the same ingest).
        self.unlinked: set[int] = set()
        # With counters recounted at the end of the ingest: the items and volunteers to recount.
        self.deferred: tuple[set[int], set[int]] | None = None
        self._load(None)

    def _load(self, versions: set[str] | None) -> None:
        # All of the workflow's versions (a handful), also when only some are new: a version
        # written back without its trailing zeros ("16.5") is found through the others.
        qs = WorkflowVersion.objects.filter(workflow=self.workflow)
        for version in versions or ():
            self.maps.setdefault(version, None)
        for row in qs:
            self.maps[row.version] = AnswerMap.build(row, self.concepts)
        self.numeric = {}
        for name, found in self.maps.items():
            key = version_numeric(name)
            if found is not None and key is not None:
                # Two configured versions equal but for trailing zeros: neither is guessed.
                self.numeric[key] = None if key in self.numeric else found

    def prefetch(self, versions: set[str]) -> None:
        """Look up versions configured since the ingest started (one query, only when needed)."""
        missing = {v for v in versions if v not in self.maps}
        if missing:
            self._load(missing)

    def answer_map(self, version: str, *, labels: bool) -> AnswerMap | None:
        found = self.maps.get(version)
        if found is None:
            key = version_numeric(version)
            found = self.numeric.get(key) if key is not None else None
        if found is None and labels:
            found = self.maps.get(WILDCARD_VERSION)
        return found


def version_numeric(version: str) -> tuple[int, str] | None:
    """``major.minor`` as numbers would keep it: ``16.50`` and ``16.5`` (and ``16.0``, ``16``)
    are equal, as a version written back through R or a spreadsheet, read as a decimal number,
    loses its minor number's trailing zeros. None for text that is no version number.
    """
    major, _, minor = version.strip().partition(".")
    if not major.isdigit() or (minor and not minor.isdigit()):
        return None
    return int(major), minor.rstrip("0")


def batches(
    records: Iterable[ClassificationRecord | QuarantineEntry | ClassificationColumns], size: int
) -> Iterator[ClassificationColumns]:
    """Batches of about ``size`` rows: records are counted one by one, ``ClassificationColumns``
    items (a fast parser's blocks) are joined whole until they reach ``size``."""
    pending: list[ClassificationRecord | QuarantineEntry] = []
    blocks: list[ClassificationColumns] = []
    rows = 0
    for item in records:
        if isinstance(item, ClassificationColumns):
            if pending:
                yield ClassificationColumns.from_records(pending)
                pending = []
            blocks.append(item)
            rows += len(item) + len(item.quarantine)
            if rows >= size:
                yield blocks[0] if len(blocks) == 1 else ClassificationColumns.concat(blocks)
                blocks, rows = [], 0
            continue
        if blocks:
            yield blocks[0] if len(blocks) == 1 else ClassificationColumns.concat(blocks)
            blocks, rows = [], 0
        pending.append(item)
        if len(pending) >= size:
            yield ClassificationColumns.from_records(pending)
            pending = []
    if blocks:
        yield blocks[0] if len(blocks) == 1 else ClassificationColumns.concat(blocks)
    if pending:
        yield ClassificationColumns.from_records(pending)
