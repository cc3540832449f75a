"""The block reader (the importer's fast path) reads an export exactly as the row parser does."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annotate.services.classifications import ClassificationColumns, QuarantineEntry
from annotate.zooniverse.export_csv.blocks import _quotes_in_place, classification_blocks
from annotate.zooniverse.export_csv.classifications import parse_classification_export
from annotate.zooniverse.export_csv.rows import ExportFormatError
from tests.annotate.builders import export_row, export_text


def by_rows(data: bytes, **kwargs) -> tuple[list[tuple], list[tuple]]:
    """(records, refusals) of the exact row parser, as comparable tuples."""
    items = list(parse_classification_export(io.BytesIO(data), **kwargs))
    columns = ClassificationColumns.from_records(items)
    return _records(columns), _refusals(columns)


def by_blocks(data: bytes, block_bytes: int, **kwargs) -> tuple[list[tuple], list[tuple]]:
    blocks = list(classification_blocks(io.BytesIO(data), block_bytes=block_bytes, **kwargs))
    if not blocks:
        return [], []
    merged = ClassificationColumns.concat(blocks)
    return _records(merged), _refusals(merged)


def _records(columns: ClassificationColumns) -> list[tuple]:
    rows = []
    for i in range(len(columns)):
        r = columns.record(i)
        meta = {z: columns.subject_metadata.get(z) for z in r.subject_ids}
        rows.append(
            (
                r.line, r.zooniverse_id, r.workflow_id, r.workflow_version, tuple(r.subject_ids),
                r.user_id, r.user_name, r.created_at, tuple(r.answers or ()), r.gold_standard,
                r.expert, r.session, json.dumps(meta, sort_keys=True, default=str), r.task_shown,
            )
        )  # fmt: skip
    return sorted(rows, key=lambda row: (row[0] or 0, row[1]))


def _refusals(columns: ClassificationColumns) -> list[tuple]:
    entries = [e for _, e in columns.quarantine if isinstance(e, QuarantineEntry)]
    return sorted((e.line, e.record_id, e.field, e.reason) for e in entries)


def _row_text(row: dict[str, str]) -> str:
    """One row as the CSV line the export writer would give it, without its line end."""
    return export_text([row]).splitlines()[1]


ODD_ROWS = {
    "good rows": [export_row(i) for i in range(1, 40)],
    "cells spanning lines": [
        export_row(1, workflow_name="two\nlines"),
        export_row(2, metadata=json.dumps({"session": "a\nb"}, indent=1)),
        export_row(3),
    ],
    "wrong column count": [export_row(1), "2,just,three", export_row(3)],
    "broken quote": [
        export_row(1),
        '2,someone,5,ip,7,wf,3.1,2024-02-23 16:00:00 UTC,,,"{""session"":""x"",broken',
        export_row(3),
        export_row(4),
    ],
    "stray quote": [export_row(1), '2,"abc"def,x', export_row(3)],
    "text after a closing quote, the cell count right": [
        export_row(1),
        _row_text(export_row(2)).replace(",volunteer2,", ',"volunteer"2,'),
        export_row(3),
    ],
    "text after an empty quoted cell": [
        export_row(1),
        _row_text(export_row(2)).replace(",volunteer2,", ',""volunteer2,'),
        export_row(3),
    ],
    "a quote inside an unquoted cell": [
        export_row(1),
        _row_text(export_row(2)).replace(",volunteer2,", ',volun"teer2,'),
        export_row(3),
    ],
    "quotes escaped at a cell's edges": [
        export_row(1, user_name='"quoted"'),
        export_row(2, user_name='a""b', workflow_name='"'),
        export_row(3),
    ],
    "invalid json": [
        export_row(1, annotations='{"not": json'),
        export_row(2, metadata='{"not": json'),
        export_row(3, subject_data='{"not": json'),
        export_row(4, metadata="[1, 2]"),
        export_row(5, metadata="", subject_data="null"),
        export_row(6),
    ],
    "wrong types": [
        export_row(1, subject_ids="abc"),
        export_row(2, subject_ids=""),
        export_row(3, created_at="yesterday"),
        export_row(4, classification_id="x1"),
        export_row(5, workflow_id="-7"),
        export_row(6, user_id="1.5"),
        export_row(7, subject_ids="11;12"),
        export_row(8),
    ],
    "unusual but valid spellings": [
        export_row(1, created_at="2024-02-23T16:17:42+01:00"),
        export_row(2, subject_ids=" 96588100 ", user_name=" padded "),
        export_row(3, created_at="2024-02-30 10:00:00 UTC"),
        export_row(4, gold_standard="TRUE", expert=" yes "),
        export_row(5, user_id="", user_name="not-logged-in-abc"),
        export_row(6),
    ],
    "subject metadata that changes between rows": [
        export_row(1, subject="900", subject_data=json.dumps({"900": {"external_id": "first"}})),
        export_row(2, subject="900", subject_data=json.dumps({"900": {"external_id": "later"}})),
        export_row(3, subject="901", subject_data=json.dumps({"901": {"external_id": "x"}})),
    ],
    "nul byte": [export_row(1, user_name="evil\x00name"), export_row(2)],
    "missing values as R and pandas write them": [
        export_row(1, user_id="NA", user_name="not-logged-in-a"),
        export_row(2, user_id="NaN", user_name="not-logged-in-b"),
        export_row(3, user_id="1002.0"),
        export_row(4, user_id=" null ", gold_standard="NA", expert="expert"),
        export_row(5, gold_standard="nan", expert="a_user_name"),
        export_row(6, gold_standard="0", expert="False"),
        export_row(7, user_id="12.5"),
        export_row(8),
    ],
    "a task not shown": [
        export_row(1, annotations=json.dumps([{"task": "T1", "value": "Yes"}])),
        export_row(2, annotations="[]"),
        export_row(3, annotations=json.dumps([{"task": "T0", "value": None}])),
        export_row(4),
    ],
    "blank lines": [export_row(1), "", export_row(2)],
}


@pytest.mark.parametrize("block_bytes", [300, 4096, 1 << 20])
@pytest.mark.parametrize("case", sorted(ODD_ROWS))
def test_blocks_give_the_records_and_refusals_the_row_parser_gives(case, block_bytes):
    data = export_text(ODD_ROWS[case]).encode()
    assert by_blocks(data, block_bytes) == by_rows(data)


FIXTURES = Path(__file__).parent / "fixtures" / "zooniverse"


@pytest.mark.parametrize("block_bytes", [300, 1 << 20])
@pytest.mark.parametrize(
    ("name", "task_key"),
    [
        ("decision_tree_export.csv", "T1"),
        ("r_written_export.csv", "T1"),
        ("pandas_written_export.csv", "T1"),
        ("project_export_three_workflows.csv", "T0"),
        ("markdown_labels_export.csv", "T0"),
        ("r_written_single_answer_export.csv", "T0"),
        ("survey_export.csv", "T1"),
    ],
)
@pytest.mark.parametrize("workflow_id", [None, 7])
def test_blocks_read_the_fixture_exports_as_the_row_parser_does(
    name, task_key, workflow_id, block_bytes
):
    data = (FIXTURES / name).read_bytes()
    kwargs = {"task_key": task_key, "workflow_id": workflow_id}
    assert by_blocks(data, block_bytes, **kwargs) == by_rows(data, **kwargs)


def test_a_line_that_is_not_utf8_is_refused_alone_by_blocks_too():
    good = export_text([export_row(1), export_row(2)]).encode().splitlines(keepends=True)
    bad = export_text([export_row(3, user_name="caf\u00e9")]).encode().splitlines(keepends=True)[1]
    data = b"".join([good[0], good[1], bad.replace("é".encode(), b"\xe9"), good[2]])
    records, refusals = by_blocks(data, 1 << 20)
    assert (records, refusals) == by_rows(data)
    assert refusals == [(3, "3", "row", "invalid_utf8")]


def test_a_byte_order_mark_and_crlf_line_ends_read_as_plain_lines():
    text = export_text([export_row(1), export_row(2, workflow_name="a\nb"), export_row(3)])
    data = b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode()
    assert by_blocks(data, 1 << 20) == by_rows(data)
    assert [r[1] for r in by_blocks(data, 1 << 20)[0]] == [1, 2, 3]


def test_a_file_without_the_export_columns_is_refused_as_a_whole_by_blocks_too():
    with pytest.raises(ExportFormatError, match="subject_ids"):
        list(classification_blocks(io.BytesIO(b"classification_id,user_name\n1,x\n")))
    with pytest.raises(ExportFormatError, match="empty"):
        list(classification_blocks(io.BytesIO(b"")))


def test_well_formed_rows_never_take_the_row_by_row_path(monkeypatch):
    from annotate.zooniverse.export_csv import blocks

    def refuse(*args, **kwargs):
        raise AssertionError("a well-formed row went the slow way")

    monkeypatch.setattr(blocks._Blocks, "_with_slow", refuse)
    monkeypatch.setattr(blocks._Blocks, "_exact", refuse)
    edges = ODD_ROWS["quotes escaped at a cell's edges"]
    rows = ODD_ROWS["good rows"] + [export_row(50, workflow_name="a\nb")] + edges
    data = export_text(rows).encode()
    (block,) = classification_blocks(io.BytesIO(data))
    assert len(block) == 43 and not block.quarantine


_CSV_BYTES = '"a,\n\r'


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.text(alphabet=_CSV_BYTES, max_size=5), min_size=1, max_size=3)))
def test_the_quote_check_passes_whatever_a_csv_writer_writes(rows):
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    assert _quotes_in_place(out.getvalue().encode())


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=_CSV_BYTES, max_size=14))
def test_text_that_passes_the_quote_check_is_strict_csv(text):
    if _quotes_in_place(text.encode()):
        list(csv.reader(io.StringIO(text, newline=""), strict=True))  # raises on a stray quote
