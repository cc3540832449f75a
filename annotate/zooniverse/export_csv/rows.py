"""Rows of a Zooniverse export CSV, streamed: cells by column, or a quarantine entry per bad row.

A binary handle is read one physical line at a time through the ``csv`` module, so memory stays
flat whatever the file size. A bad row becomes a :class:`QuarantineEntry` naming the physical line
it starts on (from 1, the header), the field and the reason, and never stops the rows after it; a
row that swallowed lines behind a broken quote has them read again. The cell readers raise
:class:`CellError` naming the field.
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from annotate.zooniverse.classification_records import QuarantineEntry

#: Longest raw text kept with a refused row.
RAW_LIMIT = 10_000


class ExportFormatError(ValueError):
    """The file as a whole is not the expected export (no header, required columns missing)."""


class CellError(Exception):
    """One field of one row is wrong; becomes a quarantine entry."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field_name
        self.reason = reason


@dataclass(slots=True)
class ExportRow:
    """One well-formed CSV row: the physical line it starts on, its cells by column, its lines."""

    line: int
    cells: dict[str, str]
    lines: list[str]

    @property
    def raw(self) -> str:
        return "".join(self.lines)


class _PhysicalLines:
    """Physical lines of a binary file, decoded one by one, with push-back for resynchronising.

    Decoding per line (not per file) lets one badly encoded line be refused on its own. The
    lines handed out since the last :meth:`take` are kept (one row's worth), so a bad row can be
    shown and the lines it swallowed re-read.
    """

    def __init__(self, handle: IO[bytes], *, first_line: int = 1) -> None:
        self._readline = handle.readline
        self._pending: deque[tuple[int, str]] = deque()
        self._first_line = first_line
        self._count = first_line - 1
        self.first = 0  # the number of the first line in ``texts``
        self.texts: list[str] = []
        # Line numbers that did not decode or hold a NUL: rare, so a set beats a flag per line.
        self.bad_utf8: set[int] = set()
        self.nul: set[int] = set()

    def __iter__(self) -> _PhysicalLines:
        return self

    def __next__(self) -> str:
        if self._pending:
            number, text = self._pending.popleft()
        else:
            data = self._readline()
            if not data:
                raise StopIteration
            self._count += 1
            number = self._count
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = data.decode("utf-8", "replace")
                self.bad_utf8.add(number)
            if "\x00" in text:
                self.nul.add(number)
            if number == self._first_line:
                text = text.removeprefix("\ufeff")
        if not self.texts:
            self.first = number
        self.texts.append(text)
        return text

    def take(self) -> tuple[int, list[str]]:
        """The first line number and the lines of the row just read; starts the next row."""
        taken, self.texts = self.texts, []
        return self.first, taken

    def push_back(self, first: int, texts: list[str]) -> None:
        self._pending.extendleft(reversed(list(enumerate(texts, start=first))))

    def flagged(self, first: int, count: int, numbers: set[int]) -> bool:
        return bool(numbers) and any(n in numbers for n in range(first, first + count))


def raw_clipped(text: str) -> str:
    return text[:RAW_LIMIT]


def read_export_rows(
    handle: IO[bytes], *, required: Sequence[str], first_line: int = 1
) -> Iterator[ExportRow | QuarantineEntry]:
    """Rows of a CSV export as dicts, or quarantine entries for rows that are not CSV.

    Raises :class:`ExportFormatError` when the header lacks a required column. ``first_line``
    numbers the header line (a block of a larger file is read behind a copy of its header).
    """
    lines = _PhysicalLines(handle, first_line=first_line)
    # strict: a stray quote is an error here rather than a silently merged field.
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ExportFormatError("the file is empty: no header row")
    except csv.Error as exc:
        raise ExportFormatError(f"line 1: the header is not CSV ({exc})")
    lines.take()
    header = header_checked(header, required)
    width = len(header)
    # The record id is the first required column's cell (not the first cell: an index may lead).
    id_at = header.index(required[0]) if required else 0

    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            number, texts = lines.take()
            if not texts:  # the error came with no line read: nothing to resume from
                break
            yield QuarantineEntry(number, "", "row", f"malformed_csv: {exc}", raw_clipped(texts[0]))
            lines.push_back(number + 1, texts[1:])
            continue
        number, texts = lines.take()
        if not cells:  # a blank line
            continue
        if len(cells) != width:
            reason = f"column_count: {len(cells)} columns, expected {width}"
            cell = cells[id_at] if id_at < len(cells) else ""
            record_id = cell if cell.isdigit() else ""
            yield QuarantineEntry(number, record_id, "row", reason, raw_clipped(texts[0]))
            # The row may have swallowed good rows behind a broken quote: read them again.
            lines.push_back(number + 1, texts[1:])
            continue
        record_id = cells[id_at] if cells[id_at].isdigit() else ""
        if lines.flagged(number, len(texts), lines.bad_utf8):
            yield QuarantineEntry(
                number, record_id, "row", "invalid_utf8", raw_clipped("".join(texts))
            )
            continue
        if lines.flagged(number, len(texts), lines.nul):
            yield QuarantineEntry(number, record_id, "row", "nul_byte", raw_clipped("".join(texts)))
            continue
        yield ExportRow(number, dict(zip(header, cells, strict=True)), texts)


#: How a leading column of row numbers is named: pandas writes an empty name or ``Unnamed: 0``,
#: R's ``write.csv`` writes ``""``. It is no field of the export and is ignored.
INDEX_COLUMN_NAMES = frozenset({"", "Unnamed: 0"})

#: Cells that mean "no value": Panoptes leaves them blank; R writes ``NA``, pandas ``NaN`` (or a
#: blank), JSON tools ``null``. Compared case-folded and stripped.
MISSING = frozenset({"", "na", "nan", "null", "none", "<na>"})

#: Flag cells that read as false; any other text (``true``, ``expert``, a user name) is true.
FALSE_FLAGS = MISSING | {"false", "f", "0", "0.0", "no"}


def header_checked(header: list[str], required: Sequence[str]) -> list[str]:
    header = [name.strip() for name in header]
    if header and header[0] in INDEX_COLUMN_NAMES and required and header[0] != required[0]:
        header[0] = "\x00index"  # a name no export column has: the cells are never read
    missing = [name for name in required if name not in header]
    if missing:
        raise ExportFormatError(f"line 1: the header lacks column(s) {', '.join(missing)}")
    return header


# --- cell parsers: each raises CellError naming the field -----------------------------------------


def id_cell(cells: dict[str, str], name: str, *, optional: bool = False) -> int | None:
    text = cells.get(name, "").strip()
    if optional:
        if text.lower() in MISSING:
            return None
        # pandas writes an integer column with blanks in it as floats: "1234.0".
        if text.endswith(".0") and text[:-2].isdigit():
            text = text[:-2]
    if not text.isdigit():  # also refuses "-1", "1.5", "abc" and "" when required
        raise CellError(name, f"not_an_id: {text[:40]!r}")
    return int(text)


def required_id_cell(cells: dict[str, str], name: str) -> int:
    value = id_cell(cells, name)
    assert value is not None
    return value


def json_cell(cells: dict[str, str], name: str, kind: type) -> Any:
    text = cells.get(name, "")
    if not text or text.isspace():  # not strip(): that copies a kilobyte of JSON per cell
        return kind()
    try:
        # orjson: about five times faster than json on the kilobyte metadata cell of every row,
        # and stricter (NaN and Infinity are not JSON). Its errors are ValueErrors too.
        value = orjson.loads(text)
    except ValueError as exc:
        raise CellError(name, f"invalid_json: {exc}")
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise CellError(name, f"invalid_json: expected a JSON {kind.__name__}")
    return value


def parse_timestamp(text: str) -> datetime:
    """``2024-02-23 16:17:42 UTC`` (exports) or ISO 8601 (API), as an aware UTC datetime."""
    text = text.strip()
    if text.endswith(" UTC"):
        text = text[:-4]
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def timestamp_cell(cells: dict[str, str], name: str, *, optional: bool = False) -> datetime | None:
    text = cells.get(name, "").strip()
    if not text and optional:
        return None
    try:
        return parse_timestamp(text)
    except ValueError:
        raise CellError(name, f"not_a_timestamp: {text[:40]!r}")


def flag_cell(text: str) -> bool:
    """A flag cell: true unless blank or a false/missing spelling (``expert`` holds a user name)."""
    return text.strip().lower() not in FALSE_FLAGS
