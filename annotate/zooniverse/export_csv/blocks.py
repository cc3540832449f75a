"""The classification export read a block at a time into columns: the importer's fast path.

Apache Arrow splits a block of whole rows into columns, the row checks run on whole columns, and
repeated JSON cells are parsed once per distinct text. Rows the columns cannot vouch for, and
blocks Arrow cannot read as a whole or would read more leniently (:func:`_quotes_in_place`), take
the exact row parser of :mod:`annotate.zooniverse.export_csv.classifications`, so they are refused
with the same field, reason and line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from annotate.zooniverse.classification_records import (
    ClassificationColumns,
    ClassificationRecord,
    QuarantineEntry,
)
from annotate.zooniverse.export_csv.classifications import (
    CLASSIFICATION_COLUMNS,
    classification_from_row,
    parse_classification_export,
    task_answers,
)
from annotate.zooniverse.export_csv.rows import (
    FALSE_FLAGS,
    MISSING,
    CellError,
    ExportFormatError,
    ExportRow,
    header_checked,
    json_cell,
    raw_clipped,
)

#: Bytes read per block: about 12,000 rows of a typical export.
BLOCK_BYTES = 16 << 20

_DIGITS = r"^[0-9]{1,18}$"
_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} UTC$"
_FALSE = pa.array(sorted(FALSE_FLAGS))
_MISSING = pa.array(sorted(MISSING))
#: The bytes that may stand before an opening quote or after a closing one: a comma, a line end,
#: or the other quote of an escaped pair (``""``).
_QUOTE_NEIGHBOUR = np.zeros(256, bool)
_QUOTE_NEIGHBOUR[list(b'",\n\r')] = True


def classification_blocks(
    handle: IO[bytes],
    *,
    task_key: str = "T0",
    block_bytes: int = BLOCK_BYTES,
    workflow_id: int | None = None,
) -> Iterator[ClassificationColumns]:
    """The export's rows as :class:`ClassificationColumns`, one block of the file at a time.

    With ``workflow_id``, rows of other workflows come as the row parser gives them
    (:func:`~annotate.zooniverse.export_csv.classifications.other_workflow_record`): their ids only.

    Raises :class:`ExportFormatError` when the header is missing or lacks a required column.
    The caller may read ``handle.tell()`` between blocks to report progress.
    """
    header_bytes = handle.readline()
    if not header_bytes:
        raise ExportFormatError("the file is empty: no header row")
    header_bytes = header_bytes.removeprefix(b"\xef\xbb\xbf")
    try:
        header = next(csv.reader([header_bytes.decode("utf-8")], strict=True))
    except (UnicodeDecodeError, csv.Error, StopIteration) as exc:
        raise ExportFormatError(f"line 1: the header is not CSV ({exc})")
    header = header_checked(header, CLASSIFICATION_COLUMNS)
    if not header_bytes.endswith(b"\n"):
        header_bytes += b"\n"
    reader = _Blocks(header, header_bytes, task_key, workflow_id)
    first_line = 2
    rest = b""
    while True:
        data = handle.read(block_bytes)
        buffer = rest + data if rest else data
        if not buffer:
            return
        end = len(buffer) if not data else _row_end(buffer, give_up=len(buffer) > 4 * block_bytes)
        if end == 0:  # no row ends in it yet: read on
            rest = buffer
            continue
        block, rest = buffer[:end], buffer[end:]
        yield reader.columns(block, first_line)
        first_line += block.count(b"\n")


def _row_end(buffer: bytes, *, give_up: bool) -> int:
    """The end of the last whole row: just past a newline with an even number of quotes before.

    A newline inside a quoted cell has an odd number of quotes before it (``""`` escapes keep
    the parity). 0 when no newline qualifies (the row goes on in the next read). After a broken
    quote none ever may: with ``give_up`` the last newline ends the block, and the exact parser
    sorts the block out.
    """
    quotes = buffer.count(b'"')
    end = len(buffer)
    for _ in range(10_000):
        newline = buffer.rfind(b"\n", 0, end)
        if newline < 0:
            break
        quotes -= buffer.count(b'"', newline, end)
        if quotes % 2 == 0:
            return newline + 1
        end = newline
    return buffer.rfind(b"\n") + 1 if give_up else 0


class _Blocks:
    """Turns blocks of one export into columns; caches parsed ``subject_data`` across blocks."""

    def __init__(
        self, header: list[str], header_bytes: bytes, task_key: str, workflow_id: int | None
    ) -> None:
        self.header = header
        self.header_bytes = header_bytes
        self.task_key = task_key
        self.workflow_id = workflow_id
        self.subjects: dict[str, dict[int, dict[str, Any]]] = {}  # for the exact path
        self.names = [f"c{i}" for i in range(len(header))]
        self.index = {name: i for i, name in enumerate(header)}  # the last of a repeated name wins

    def columns(self, block: bytes, first_line: int) -> ClassificationColumns:
        table = self._table(block)
        lines = self._lines(table, block, first_line) if table is not None else None
        if table is None or lines is None:
            return self._exact(block, first_line)
        try:
            return self._fast(table, lines)
        except (pa.ArrowInvalid, OverflowError):  # a value the columns cannot hold: go exact
            return self._exact(block, first_line)

    def _table(self, block: bytes) -> pa.Table | None:
        # Arrow takes NUL bytes and text after a closing quote as text; the exact parser reports
        # them. (It also skips blank lines, which the line count in ``_lines`` then notices.)
        if b"\x00" in block or not _quotes_in_place(block):
            return None
        try:
            return pcsv.read_csv(
                io.BytesIO(block),
                # One thread: the other core is the database writer's. Without threads Arrow
                # reads quoted newlines right whatever ``newlines_in_values`` says, and twice as
                # fast with it off.
                read_options=pcsv.ReadOptions(column_names=self.names, use_threads=False),
                parse_options=pcsv.ParseOptions(newlines_in_values=False),
                convert_options=pcsv.ConvertOptions(
                    column_types={name: pa.string() for name in self.names},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid:
            return None

    def _lines(self, table: pa.Table, block: bytes, first_line: int) -> np.ndarray | None:
        """The physical line each row starts on; None when they cannot be accounted for."""
        n = table.num_rows
        newlines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
        if newlines == n:
            return first_line + np.arange(n, dtype=np.int64)
        inside = np.zeros(n, np.int64)
        for column in table.columns:
            inside += pc.count_substring(column, "\n").to_numpy(zero_copy_only=False)
        if int(inside.sum()) + n != newlines:
            return None
        before = np.concatenate(([0], np.cumsum(inside)[:-1]))
        return first_line + np.arange(n, dtype=np.int64) + before

    def _column(self, table: pa.Table, name: str) -> pa.ChunkedArray:
        return table.column(self.index[name])

    def _fast(self, table: pa.Table, lines: np.ndarray) -> ClassificationColumns:
        col = lambda name: self._column(table, name)  # noqa: E731
        n = table.num_rows
        ok = np.ones(n, bool)

        def matches(name: str, pattern: str) -> None:
            nonlocal ok
            ok &= pc.match_substring_regex(col(name), pattern).to_numpy(zero_copy_only=False)

        for name in ("classification_id", "workflow_id", "subject_ids"):
            matches(name, _DIGITS)
        if self.workflow_id is not None:  # other workflows' rows: the row parser skips them
            ok &= pc.equal(col("workflow_id"), str(self.workflow_id)).to_numpy(zero_copy_only=False)
        # NA, NaN, null: blank (R and pandas); 1234.0: 1234 (pandas, a column with blanks).
        user_id = col("user_id")
        missing = pc.is_in(pc.utf8_lower(pc.utf8_trim_whitespace(user_id)), value_set=_MISSING)
        user_id = pc.if_else(missing, "", user_id)
        user_id = pc.replace_substring_regex(user_id, r"^([0-9]{1,18})\.0$", r"\1")
        ok &= pc.match_substring_regex(user_id, r"^([0-9]{1,18})?$").to_numpy(zero_copy_only=False)
        matches("workflow_version", r"^\S(.*\S)?$")
        matches("user_name", r"^(\S(.*\S)?)?$")
        matches("created_at", _TIMESTAMP)
        created = pc.strptime(
            col("created_at"), format="%Y-%m-%d %H:%M:%S UTC", unit="us", error_is_null=True
        )
        # Arrow rolls 30 February over into March; the exact parser refuses it.
        whole_seconds = created.cast(pa.timestamp("s"))  # (%S of microseconds adds a fraction)
        again = pc.strftime(whole_seconds, format="%Y-%m-%d %H:%M:%S UTC")
        ok &= pc.fill_null(pc.equal(again, col("created_at")), False).to_numpy(zero_copy_only=False)

        # Answers repeat: parsed once per distinct text. The other JSON cells differ row by row
        # and are parsed a block at a time.
        parsed, answer_code, answers_ok = self._distinct(col("annotations"), self._answers)
        ok &= answers_ok
        answer_lists = [p[0] if p is not None else None for p in parsed]
        shown = np.array([p is not None and p[1] for p in parsed], bool)[answer_code]
        subject_data = _objects(col("subject_data"))
        metadata = _objects(col("metadata"))
        sessions = np.empty(n, object)
        subjects: dict[str, Any] = {}
        for i, (data, meta) in enumerate(zip(subject_data, metadata, strict=True)):
            if data is None or meta is None:
                ok[i] = False
                continue
            session = meta.get("session")
            sessions[i] = session if type(session) is str else ""
        # A subject's first row names its metadata, as in the row parser: merged last to first.
        for data in reversed(subject_data):
            if data:
                subjects.update(data)

        def ints(name: str) -> np.ndarray:
            values = pc.if_else(pa.array(ok), col(name), "0")
            return pc.cast(values, pa.int64()).to_numpy(zero_copy_only=False)

        fast = np.flatnonzero(ok)
        user_id = pc.if_else(pc.equal(user_id, ""), "-", user_id)
        volunteer = pc.binary_join_element_wise(user_id, col("user_name"), "\x1f")
        volunteers, volunteer_code = _encoded(volunteer)
        versions, version_code = _encoded(col("workflow_version"))
        columns = ClassificationColumns(
            zooniverse_id=ints("classification_id")[fast],
            workflow_id=ints("workflow_id")[fast],
            version_code=version_code[fast],
            versions=versions,
            subject_id=ints("subject_ids")[fast],
            volunteer_code=volunteer_code[fast],
            volunteers=[_volunteer(text) for text in volunteers],
            created_at=created.to_numpy(zero_copy_only=False).astype("datetime64[us]")[fast],
            answer_code=answer_code[fast],
            answer_lists=answer_lists,  # type: ignore[arg-type]  # None marks an answer text that did not parse; no row kept in fast points at one
            gold_standard=_flags(col("gold_standard"))[fast],
            expert=_flags(col("expert"))[fast],
            session=sessions[fast],
            source="export",
            subject_metadata=_SubjectData(subjects),
            line=lines[fast],
            order=lines[fast],
            task_shown=shown[fast],
        )
        slow = np.flatnonzero(~ok)
        if not len(slow):
            return columns
        return self._with_slow(columns, table, lines, slow)

    def _distinct(
        self, column: pa.ChunkedArray, parse: Any
    ) -> tuple[list[Any], np.ndarray, np.ndarray]:
        """Each distinct text parsed once: (values, code per row, parsed well per row)."""
        texts, codes = _encoded(column)
        values = [parse(text) for text in texts]
        good = np.array([v is not None for v in values], bool)
        return values, codes, good[codes]

    def _answers(self, text: str) -> tuple[list[Any], bool] | None:
        """(answers, whether the task was shown), or None where the row parser refuses it."""
        try:
            answers = task_answers(
                json_cell({"annotations": text}, "annotations", list), self.task_key
            )
        except CellError:
            return None
        return (answers, True) if answers is not None else ([], False)

    def _with_slow(
        self, columns: ClassificationColumns, table: pa.Table, lines: np.ndarray, slow: np.ndarray
    ) -> ClassificationColumns:
        """Rows the columns could not vouch for, through the exact row parser, merged in."""
        rows = table.take(pa.array(slow)).to_pylist()
        records: list[ClassificationRecord] = []
        refused: list[tuple[int, QuarantineEntry]] = []
        for line, cells in zip(lines[slow].tolist(), rows, strict=True):
            named = {name: cells[self.names[i]] for name, i in self.index.items()}
            row = ExportRow(line, named, [_csv_text(cells[name] for name in self.names)])
            try:
                records.append(
                    classification_from_row(
                        row,
                        task_key=self.task_key,
                        subjects=self.subjects,
                        workflow_id=self.workflow_id,
                    )
                )
            except CellError as bad:
                record_id = named["classification_id"].strip()
                entry = QuarantineEntry(
                    line, record_id, bad.field, bad.reason, raw_clipped(row.raw)
                )
                refused.append((line, entry))
        extra = ClassificationColumns.from_records(records)
        extra.order = extra.line.copy()
        merged = ClassificationColumns.concat([columns, extra])
        merged.quarantine = refused
        return merged

    def _exact(self, block: bytes, first_line: int) -> ClassificationColumns:
        items = list(
            parse_classification_export(
                io.BytesIO(self.header_bytes + block),
                task_key=self.task_key,
                first_line=first_line - 1,
                workflow_id=self.workflow_id,
            )
        )
        columns = ClassificationColumns.from_records(items)
        columns.order = columns.line.copy()  # blocks are joined: order by line, as elsewhere
        columns.quarantine = [(entry.line or 0, entry) for _, entry in columns.quarantine]
        return columns


def _quotes_in_place(block: bytes) -> bool:
    """Whether every quote of the block is where strict CSV puts one, so Arrow reads it as the
    row parser does.

    A block starts at a cell, so its quotes alternate: the 1st, 3rd, ... open a cell or are the
    second of an escaped pair, and must follow a comma, a line end or a quote (or start the
    block); the 2nd, 4th, ... close a cell or are the first of a pair, and must be followed by a
    comma, a line end or a quote (or end the block). Text after a closing quote (``"ab"c``, also
    ``""c``) breaks the second rule; a quote inside an unquoted cell (``ab"c``) breaks the first,
    which sends that rare block to the exact parser too. An odd count is a broken quote.

    Arrow alone would read text after a closing quote (``1,"ab"c,...``) as part of the cell
    (``abc``), where the row parser refuses the row as malformed CSV.
    """
    data = np.frombuffer(block, np.uint8)
    quotes = np.flatnonzero(data == ord('"'))
    if not len(quotes):
        return True
    if len(quotes) % 2:
        return False
    opening, closing = quotes[0::2], quotes[1::2]
    if opening[0] == 0:
        opening = opening[1:]
    if closing[-1] == len(data) - 1:
        closing = closing[:-1]
    return bool(
        _QUOTE_NEIGHBOUR[data[opening - 1]].all() and _QUOTE_NEIGHBOUR[data[closing + 1]].all()
    )


def _encoded(column: pa.ChunkedArray) -> tuple[list[str], np.ndarray]:
    """Distinct values and each row's code into them."""
    encoded = column.combine_chunks().dictionary_encode() if column.num_chunks else None
    if encoded is None:
        return [], np.zeros(0, np.intp)
    return encoded.dictionary.to_pylist(), encoded.indices.to_numpy(zero_copy_only=False)


def _volunteer(text: str) -> tuple[int | None, str]:
    user_id, _, user_name = text.partition("\x1f")
    if not user_id.isdigit():  # "-" (logged out), or a row taking the exact path
        return None, user_name
    return int(user_id), user_name


def _flags(column: pa.ChunkedArray) -> np.ndarray:
    """True unless blank or a false or missing spelling, as ``flag_cell`` reads a cell."""
    folded = pc.utf8_lower(pc.utf8_trim_whitespace(column))
    return pc.invert(pc.is_in(folded, value_set=_FALSE)).to_numpy(zero_copy_only=False)


def _objects(column: pa.ChunkedArray) -> list[dict[str, Any] | None]:
    """Each cell's JSON object (``{}`` for an empty cell or ``null``), None where it is not one.

    Cell by cell: one ``orjson`` call over the whole column joined as a JSON array was slower
    (bench/README.md).
    """
    values: list[dict[str, Any] | None] = []
    append = values.append
    loads = orjson.loads
    for text in column.to_pylist():
        try:
            value = loads(text)
        except ValueError:
            append({} if not text or text.isspace() else None)
            continue
        append({} if value is None else value if type(value) is dict else None)
    return values


class _SubjectData(Mapping[int, dict[str, Any]]):
    """``subject_data`` cells merged: subject id -> metadata, the keys converted on lookup."""

    def __init__(self, merged: dict[str, Any]) -> None:
        self._merged = merged

    def __getitem__(self, zid: int) -> dict[str, Any]:
        value = self._merged.get(str(zid))
        if type(value) is not dict:
            raise KeyError(zid)
        return value

    def __iter__(self) -> Iterator[int]:
        return (int(k) for k, v in self._merged.items() if k.isdigit() and type(v) is dict)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _csv_text(cells: Sequence[str] | Any) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(list(cells))
    return out.getvalue()
