"""Quarantined rows, stored once: re-running an import or a sync adds no row it stored before.

Every import writes its refused rows through :func:`quarantine_store`. A row is known by its
fingerprint, a hash of the import's kind and source (the file, or the project and workflow of a
sync), the row's line, record id, field, reason and raw text; the table holds each fingerprint
once (a unique constraint), so a second run of the same file, or a page synced again, finds its
rows there already and the report of that run says so. The same bad row in another file is
other evidence and is kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from annotate.models import ImportReport, QuarantinedRow

#: Rows written per INSERT (SQLite allows 999 parameters, a row takes 8).
BATCH = 100
#: The longest raw text kept as evidence.
RAW_LIMIT = 10_000


def printable_nul(text: str) -> str:
    """Text with each NUL written as ``\\x00``: PostgreSQL stores no NUL in text."""
    return text.replace("\x00", "\\x00")


def quarantine_row(
    report: ImportReport, *, line: int | None, record_id: str, field: str, reason: str, raw: str
) -> QuarantinedRow:
    """A refused row as it is kept: NUL written out and each text cut to its column's length
    (the row is refused already; its text is only evidence)."""
    return QuarantinedRow(
        report=report,
        line=line,
        record_id=printable_nul(record_id)[:255],
        field=printable_nul(field)[:100],
        reason=printable_nul(reason)[:1000],
        raw=printable_nul(raw)[:RAW_LIMIT],
    )


def quarantine_fingerprint(
    *, kind: str, source: str, line: int | None, record_id: str, field: str, reason: str, raw: str
) -> str:
    """The SHA-256 (hex) of what makes a quarantined row that row."""
    text = json.dumps([kind, source, line, record_id, field, reason, raw], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def quarantine_store(rows: Iterable[QuarantinedRow], batch_size: int | None = None) -> int:
    """Store the rows not stored before; return how many were new.

    Each row must be made with its ``report`` (the instance: its kind and source are part of the
    fingerprint). Rows stored already, by an earlier run or a concurrent one, are skipped.
    """
    by_fingerprint: dict[str, QuarantinedRow] = {}
    for row in rows:
        row.fingerprint = quarantine_fingerprint(
            kind=row.report.kind,
            source=row.report.source,
            line=row.line,
            record_id=row.record_id,
            field=row.field,
            reason=row.reason,
            raw=row.raw,
        )
        by_fingerprint.setdefault(row.fingerprint, row)
    if not by_fingerprint:
        return 0
    keys = list(by_fingerprint)
    stored: set[str | None] = set()
    for start in range(0, len(keys), BATCH * 5):
        stored.update(
            QuarantinedRow.objects.filter(
                fingerprint__in=keys[start : start + BATCH * 5]
            ).values_list("fingerprint", flat=True)
        )
    fresh = [row for key, row in by_fingerprint.items() if key not in stored]
    QuarantinedRow.objects.bulk_create(fresh, batch_size=batch_size or BATCH, ignore_conflicts=True)
    return len(fresh)
