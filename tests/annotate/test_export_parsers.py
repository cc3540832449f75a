"""Zooniverse exports parse row by row; a bad row is refused with its line, never fatal."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from annotate.services.classifications import ClassificationRecord, QuarantineEntry
from annotate.zooniverse.export_csv.classifications import (
    parse_classification_export,
)
from annotate.zooniverse.export_csv.rows import ExportFormatError
from annotate.zooniverse.export_csv.subjects import SubjectRow, parse_subject_export
from annotate.zooniverse.export_csv.workflows import parse_workflow_export
from tests.annotate.builders import export_row, export_text, parse
from tests.reference import reference_path


def refused(items: list[Any]) -> list[tuple[int | None, str, str]]:
    return [(q.line, q.field, q.reason) for q in items if isinstance(q, QuarantineEntry)]


def good_ids(items: list[Any]) -> list[int]:
    return [r.zooniverse_id for r in items if isinstance(r, ClassificationRecord)]


# --- real reference exports ----------------------------------------------------------------


def test_the_reference_single_answer_export_parses_to_seven_records():
    with reference_path("zooniverse", "cls_export.csv").open("rb") as handle:
        records = list(parse_classification_export(handle, task_key="T0"))
    assert [r.line for r in records] == [2, 3, 4, 5, 6, 7, 8]
    first = records[0]
    assert isinstance(first, ClassificationRecord)
    assert (first.zooniverse_id, first.workflow_id, first.workflow_version) == (
        543695319,
        10,
        "16.55",
    )
    assert first.user_id is None
    assert first.user_name == "not-logged-in-b644753d0e3948f81dc2"
    assert first.created_at == datetime(2024, 2, 23, 16, 17, 42, tzinfo=UTC)
    assert first.subject_ids == [96588114]
    assert first.answers == ["Yes"]
    assert first.session.startswith("7a1f4a17")
    assert first.subject_metadata[96588114]["objectId"] == "ZTF23abjrdem"
    assert first.source == "export"
    assert [r.answers for r in records] == [
        ["Yes"],
        ["No"],
        ["Yes"],
        ["No"],
        ["Yes"],
        ["No"],
        ["No"],
    ]


def test_the_reference_second_task_is_read_when_asked_for_and_absent_means_no_answer():
    with reference_path("zooniverse", "cls_export.csv").open("rb") as handle:
        records = list(parse_classification_export(handle, task_key="T1"))
    assert [r.answers for r in records] == [["Yes"], [], ["No"], [], ["No"], [], []]


def test_wildcam_survey_rows_read_as_the_choices_marked():
    with reference_path("zooniverse", "wildcam_gorongosa_sample.csv").open("rb") as handle:
        items = list(parse_classification_export(handle, task_key="T1"))
    assert len(items) == 20 and all(isinstance(r, ClassificationRecord) for r in items)
    assert items[0].line == 2 and items[0].zooniverse_id == 18059832
    assert items[0].answers == ["BBN"] and items[0].task_shown


def test_a_survey_workflow_export_lists_its_choices_in_order_with_their_labels():
    with (FIXTURES / "survey_workflow.csv").open("rb") as handle:
        (row,) = list(parse_workflow_export(handle))
    task = row.tasks["T1"]
    assert (row.version, task.type) == ("4.12", "survey")
    assert task.choices == ["ZBR", "BBN", "WARTHOG", "NTHNGHR"]
    assert task.answers[0] == "Zebra" and task.answers[3] == "Nothing here"


def test_the_reference_workflow_export_gives_one_answer_map_per_version():
    with reference_path("zooniverse", "wf_export.csv").open("rb") as handle:
        rows = list(parse_workflow_export(handle))
    assert [r.version for r in rows] == ["14.52", "14.53", "14.54", "14.55", "15.55", "16.55"]
    latest = rows[-1]
    assert latest.workflow_id == 10 and latest.first_task == "T0"
    assert latest.tasks["T0"].type == "single"
    assert latest.tasks["T0"].answers == ["Yes", "No"]
    assert latest.tasks["T1"].question.startswith("Is the cross-hair")
    assert latest.retirement == {"options": {"count": 10}, "criteria": "classification_count"}


def test_the_reference_subject_export_parses_with_empty_status_columns():
    with reference_path("zooniverse", "cat-project-subjects.csv").open("rb") as handle:
        rows = list(parse_subject_export(handle))
    assert len(rows) == 30
    assert all(isinstance(r, SubjectRow) for r in rows)
    first = rows[0]
    assert (first.subject_id, first.project_id, first.workflow_id) == (458021, 26558, 28090)
    assert first.metadata["origin"] == "Flickr"
    assert first.locations[0].startswith("https://panoptes-uploads.zooniverse.org/")
    assert first.created_at == datetime(2015, 5, 25, 21, 2, 58, tzinfo=UTC)
    # None of these subjects is retired: the status columns are empty, not an error.
    assert all(r.retired_at is None and r.retirement_reason == "" for r in rows)
    assert {r.classifications_count for r in rows} == {0}


# --- synthetic multiple-answer rows ----------------------------------------------------------


def test_multiple_answer_values_are_lists_of_labels_and_empty_when_none_ticked():
    items = parse(export_text([export_row(1), export_row(2, labels=[])]))
    assert [r.answers for r in items] == [["Painting", "drawing"], []]
    assert items[0].user_id == 1001 and items[0].session == "session-1"


def test_old_exports_with_answer_indices_keep_the_indices():
    annotations = json.dumps([{"task": "T0", "value": 1}])
    items = parse(export_text([export_row(1, annotations=annotations)]))
    assert items[0].answers == [1]


def test_gold_standard_and_expert_flags_are_read():
    items = parse(export_text([export_row(1, gold_standard="true", expert="TRUE")]))
    assert items[0].gold_standard is True and items[0].expert is True


def test_a_multi_subject_row_keeps_both_ids_for_the_ingest_to_refuse():
    items = parse(export_text([export_row(1, subject_ids="11;12")]))
    assert items[0].subject_ids == [11, 12]


def test_quoted_cells_spanning_lines_move_the_line_numbers_on():
    items = parse(export_text([export_row(1, workflow_name="two\nlines"), export_row(2)]))
    assert [(r.line, r.zooniverse_id) for r in items] == [(2, 1), (4, 2)]


def test_a_byte_order_mark_before_the_header_is_ignored():
    items = parse(b"\xef\xbb\xbf" + export_text([export_row(1)]).encode())
    assert good_ids(items) == [1]


def test_a_file_without_the_export_columns_is_refused_as_a_whole():
    with pytest.raises(ExportFormatError, match="subject_ids"):
        parse("classification_id,user_name\n1,x\n")
    with pytest.raises(ExportFormatError, match="empty"):
        parse("")


def test_rows_stream_one_at_a_time():
    class Endless(io.RawIOBase):
        """A file that never ends: parsing must not try to read it all."""

        def __init__(self) -> None:
            self.lines = iter(export_text([export_row(1)]).encode().splitlines(keepends=True))
            self.n = 1

        def readline(self, size: int = -1) -> bytes:
            line = next(self.lines, None)
            if line is not None:
                return line
            self.n += 1
            return export_text([export_row(self.n)]).encode().splitlines(keepends=True)[1]

    stream = parse_classification_export(Endless())
    assert [next(stream).zooniverse_id for _ in range(3)] == [1, 2, 3]


# --- bad input (reliability §4.1) ------------------------------------------------------------


def test_a_row_with_the_wrong_column_count_is_refused_with_its_line_b1():
    items = parse(export_text([export_row(1), "2,just,three", export_row(3)]))
    assert refused(items) == [(3, "row", "column_count: 3 columns, expected 14")]
    assert good_ids(items) == [1, 3]
    assert [r.line for r in items] == [2, 3, 4]


def test_a_broken_quote_is_refused_and_the_rows_behind_it_still_parse_b1():
    broken = '2,someone,5,ip,7,wf,3.1,2024-02-23 16:00:00 UTC,,,"{""session"":""x"",broken'
    items = parse(export_text([export_row(1), broken, export_row(3), export_row(4)]))
    assert [(q.line, q.field) for q in items if isinstance(q, QuarantineEntry)] == [(3, "row")]
    assert good_ids(items) == [1, 3, 4]
    assert [r.line for r in items if isinstance(r, ClassificationRecord)] == [2, 4, 5]


def test_a_stray_quote_inside_a_cell_is_refused_b1():
    items = parse(export_text([export_row(1), '2,"abc"def,x', export_row(3)]))
    assert [q.line for q in items if isinstance(q, QuarantineEntry)] == [3]
    assert good_ids(items) == [1, 3]


@pytest.mark.parametrize("column", ["annotations", "metadata", "subject_data"])
def test_invalid_json_in_a_cell_is_refused_naming_the_field_b2(column):
    items = parse(export_text([export_row(1, **{column: '{"not": json'}), export_row(2)]))
    (entry,) = [q for q in items if isinstance(q, QuarantineEntry)]
    assert (entry.line, entry.record_id, entry.field) == (2, "1", column)
    assert entry.reason.startswith("invalid_json")
    assert good_ids(items) == [2]


def test_json_of_the_wrong_shape_is_refused_b2():
    items = parse(export_text([export_row(1, annotations='{"task": "T0"}')]))
    assert refused(items) == [(2, "annotations", "invalid_json: expected a JSON list")]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("subject_ids", "abc"),
        ("subject_ids", ""),
        ("created_at", "yesterday"),
        ("classification_id", "x1"),
        ("workflow_id", "-7"),
        ("user_id", "1.5"),
    ],
)
def test_wrong_types_are_refused_naming_the_field_b8(column, value):
    items = parse(export_text([export_row(1, **{column: value}), export_row(2)]))
    (entry,) = [q for q in items if isinstance(q, QuarantineEntry)]
    assert (entry.line, entry.field) == (2, column)
    assert good_ids(items) == [2]


def test_a_nul_byte_is_refused_b17():
    items = parse(export_text([export_row(1, user_name="evil\x00name"), export_row(2)]))
    assert refused(items) == [(2, "row", "nul_byte")]
    assert good_ids(items) == [2]


def test_a_line_that_is_not_utf8_is_refused_alone():
    good = export_text([export_row(1), export_row(2)]).encode().splitlines(keepends=True)
    bad = export_text([export_row(3, user_name="caf\u00e9")]).encode().splitlines(keepends=True)[1]
    bad = bad.replace("é".encode(), b"\xe9")
    items = parse(b"".join([good[0], good[1], bad, good[2]]))
    assert refused(items) == [(3, "row", "invalid_utf8")]
    assert good_ids(items) == [1, 2]


def test_a_drawing_task_is_reported_as_unsupported():
    value = [{"tool": 0, "x": 1.5, "y": 2.5, "details": []}]
    items = parse(
        export_text([export_row(1, annotations=json.dumps([{"task": "T0", "value": value}]))])
    )
    assert refused(items) == [(2, "annotations", "unsupported_task_type:drawing")]


def test_a_bad_subject_export_row_is_refused_and_unlinked_rows_have_no_workflow():
    text = (
        "subject_id,project_id,workflow_id,subject_set_id,metadata,locations,"
        "classifications_count,retired_at,retirement_reason,created_at,updated_at\n"
        '1,2,3,4,{},"{""0"":""https://x/a.jpg""}",5,2024-01-01 00:00:00 UTC,consensus,,\n'
        "abc,2,3,4,{},{},,,,,\n"
        '2,2,,4,"{""crowdloop_id"":""9""}",{},,,,,\n'
    )
    items = list(parse_subject_export(io.BytesIO(text.encode())))
    assert [getattr(r, "subject_id", None) for r in items] == [1, None, 2]
    assert refused(items) == [(3, "subject_id", "not_an_id: 'abc'")]
    assert items[0].retirement_reason == "consensus"
    assert items[2].metadata == {"crowdloop_id": "9"}
    assert items[2].workflow_id is None and items[2].retired_at is None


# --- exports as real projects write them (fixtures in tests/annotate/fixtures/zooniverse) -----

FIXTURES = Path(__file__).parent / "fixtures" / "zooniverse"


def parse_fixture(name: str, **kwargs: Any) -> list[ClassificationRecord | QuarantineEntry]:
    with (FIXTURES / name).open("rb") as handle:
        return list(parse_classification_export(handle, **kwargs))


def test_a_classification_without_the_task_was_not_shown_it_rather_than_ticking_nothing():
    """A decision tree asks T1 only after "Yes" to T0: the other branch holds no T1 at all."""
    records = parse_fixture("decision_tree_export.csv", task_key="T1")
    assert [(r.zooniverse_id, r.task_shown, r.answers) for r in records] == [
        (701, True, ["Painting", "Drawing"]),
        (702, False, []),
        (703, True, []),
        (704, False, []),
        (705, True, ["Map"]),
        (706, False, []),
    ]


@pytest.mark.parametrize("name", ["r_written_export.csv", "pandas_written_export.csv"])
def test_an_export_written_by_r_or_pandas_reads_as_the_original(name):
    """A leading index column is ignored; NA (R) or a blank is a logged-out user_id, 40.0 is 40."""
    original = parse_fixture("decision_tree_export.csv", task_key="T1")
    rewritten = parse_fixture(name, task_key="T1")
    assert all(isinstance(r, ClassificationRecord) for r in rewritten)
    assert rewritten == original
    assert [r.user_id for r in rewritten] == [40, 41, 42, None, 43, 44]


@pytest.mark.parametrize(
    ("text", "flag"),
    [
        ("expert", True), ("a_user_name", True), ("true", True), ("TRUE", True), ("1", True),
        ("", False), ("false", False), ("0", False), ("NA", False), ("NaN", False),
        ("null", False), (" ", False),
    ],
)  # fmt: skip
def test_expert_and_gold_standard_are_true_for_any_value_but_a_false_or_missing_one(text, flag):
    (record,) = parse(export_text([export_row(1, expert=text, gold_standard=text)]))
    assert (record.expert, record.gold_standard) == (flag, flag)


@pytest.mark.parametrize("text", ["NA", "NaN", "null", "", "nan"])
def test_a_missing_user_id_in_any_spelling_is_a_logged_out_volunteer(text):
    (record,) = parse(export_text([export_row(1, user_id=text, user_name="not-logged-in-ab")]))
    assert isinstance(record, ClassificationRecord) and record.user_id is None


def test_rows_of_other_workflows_come_back_as_ids_only_never_refused():
    """A project-wide export: the survey rows of workflow 456 are not read, so not refused."""
    items = parse_fixture("project_export_three_workflows.csv", workflow_id=7)
    assert all(isinstance(r, ClassificationRecord) for r in items)
    others = [(r.zooniverse_id, r.workflow_id) for r in items if r.workflow_id != 7]
    assert others == [(802, 123), (803, 456), (805, 456), (807, 123), (809, 456)]
    assert all(not r.task_shown and r.subject_ids == [] for r in items if r.workflow_id != 7)
    ours = [r for r in items if r.workflow_id == 7]
    assert [r.expert for r in ours] == [True, True, True, False, False]
    # Without a workflow the survey rows are read too: their choices are their answers.
    every = parse_fixture("project_export_three_workflows.csv")
    assert not [q for q in every if isinstance(q, QuarantineEntry)]
