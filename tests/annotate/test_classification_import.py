"""Classifications go in once, map to concepts, and repeats keep the earliest vote."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotate.models import (
    Classification,
    Concept,
    ImportReport,
    Item,
    QuarantinedRow,
    Subject,
    SyncCursor,
    Volunteer,
    Workflow,
    WorkflowVersion,
)
from annotate.services.classifications import (
    ClassificationRecord,
    QuarantineEntry,
    classifications_ingest,
    volunteer_key,
)
from annotate.services.zooniverse.classification_import import classifications_import
from annotate.services.zooniverse.workflows import workflow_configure
from tests.annotate.builders import (
    T0,
    export_row,
    ingest,
    record,
    report_new,
    run_import,
    write_export,
)
from tests.factories import WORKFLOW_ANSWERS, WorkflowFactory, WorkflowVersionFactory, answers_for
from tests.reference import reference_path

pytestmark = pytest.mark.django_db

HEADER = (
    "classification_id,user_name,user_id,user_ip,workflow_id,workflow_name,workflow_version,"
    "created_at,gold_standard,expert,metadata,annotations,subject_data,subject_ids"
)


def keys_of(classification: Classification, concepts) -> set[str]:
    by_id = {c.id: key for key, c in concepts.items()}
    return {by_id[i] for i in classification.concept_ids}


# --- the ingestion core -----------------------------------------------------------------------


def test_export_labels_map_to_concepts_case_insensitively(workflow, concepts):
    ingest(workflow, [record(1, answers=["PAINTING", "drawing ", "Map"])])
    stored = Classification.objects.get(zooniverse_id=1)
    assert keys_of(stored, concepts) == {"painting", "drawing", "map"}
    assert stored.invalid_answers == []


def test_api_answer_indices_map_through_the_version(workflow, concepts):
    ingest(workflow, [record(1, answers=[1, 3], source="api")])
    assert keys_of(Classification.objects.get(zooniverse_id=1), concepts) == {
        "drawing",
        "photograph",
    }


def test_an_empty_answer_is_a_vote_for_no_concept(workflow):
    counts = ingest(workflow, [record(1, answers=[]), record(2, answers=None)])
    assert counts.created == 2
    assert list(Classification.objects.values_list("concept_ids", flat=True)) == [[], []]


def test_a_large_batch_stores_every_vote_and_subject_as_small_ones_do_and_a_rerun_adds_none(
    workflow, concepts
):
    """Past ``_COPY_FROM`` rows PostgreSQL inserts through COPY: rows must read back the same."""
    retired = {"id": 1, "retired_at": "2026-10-02T10:00:00.000Z", "retirement_reason": "consensus"}

    def big(cid: int) -> ClassificationRecord:
        subject = 9000 + cid % 300
        return record(
            cid, subject_ids=[subject], user_id=cid % 40, user_name=f"u{cid % 40}",
            answers=["Painting", "Map", "mystery"] if cid % 2 else [],
            subject_metadata={subject: {"external_id": f"x{subject}", "note": "a\tb\nc\\d",
                                        **({"retired": retired} if cid % 3 == 0 else {})}},
        )  # fmt: skip

    counts = ingest(workflow, [big(cid) for cid in range(1, 1501)], batch_size=1500)
    assert (counts.created, counts.invalid_answers) == (1500, 750)
    assert Classification.objects.count() == 1500 and Subject.objects.count() == 300
    odd = Classification.objects.get(zooniverse_id=7)
    assert keys_of(odd, concepts) == {"painting", "map"} and odd.invalid_answers == ["mystery"]
    assert odd.created_at == T0 + timedelta(minutes=7)
    assert Classification.objects.get(zooniverse_id=8).concept_ids == []
    subject = Subject.objects.get(zooniverse_id=9003)
    assert subject.metadata == {"external_id": "x9003", "note": "a\tb\nc\\d"}
    assert subject.retirement_reason == "consensus"
    assert subject.retired_at == datetime(2026, 10, 2, 10, tzinfo=UTC)

    again = ingest(workflow, [big(cid) for cid in range(1, 1501)], batch_size=1500)
    assert (again.created, again.unchanged) == (0, 1500)
    assert Classification.objects.count() == 1500 and Subject.objects.count() == 300


def test_an_unknown_label_or_index_is_kept_invalid_and_counted_b4(workflow, concepts):
    counts = ingest(
        workflow,
        [
            record(1, answers=["Painting", "unknown answer label"]),
            record(2, answers=[0, 9], source="api"),
        ],
    )
    first = Classification.objects.get(zooniverse_id=1)
    assert keys_of(first, concepts) == {"painting"}
    assert first.invalid_answers == ["unknown answer label"]
    assert Classification.objects.get(zooniverse_id=2).invalid_answers == [9]
    assert counts.invalid_answers == 2


def test_an_unknown_version_is_quarantined_once_per_row_and_alerted_once_b3(workflow, caplog):
    report = report_new()
    counts = classifications_ingest(
        records=[record(1, workflow_version="9.9"), record(2, workflow_version="9.9"), record(3)],
        workflow=workflow,
        report=report,
    )
    assert counts.created == 1
    assert counts.unknown_versions == {"9.9": 2}
    assert set(report.rows.values_list("reason", flat=True)) == {"unknown_workflow_version"}
    assert report.rows.count() == 2
    assert "9.9 (2 rows)" in report.message
    assert len([r for r in caplog.records if "unknown versions" in r.getMessage()]) == 1


def test_api_indices_of_an_unknown_version_never_use_the_wildcard(workflow):
    WorkflowVersionFactory(workflow=workflow, version="*", answers=answers_for(["painting"]))
    counts = ingest(
        workflow,
        [
            record(1, workflow_version="9.9", answers=[0], source="api"),
            record(2, workflow_version="9.9", answers=["painting"]),
        ],
    )
    assert counts.quarantined == 1
    assert Classification.objects.get().zooniverse_id == 2


def test_the_same_classification_twice_is_stored_once_b5(workflow):
    counts = ingest(workflow, [record(1), record(1)])
    assert (counts.created, counts.unchanged) == (1, 1)
    again = ingest(workflow, [record(1)])
    assert (again.created, again.unchanged) == (0, 1)
    assert Classification.objects.count() == 1


def test_a_repeat_by_the_same_volunteer_is_flagged_and_the_earliest_kept_b6(workflow):
    later = record(1, subject_ids=[900], user_id=5, created_at=T0 + timedelta(hours=1))
    earlier = record(2, subject_ids=[900], user_id=5, created_at=T0)
    counts = ingest(workflow, [later, earlier])
    assert counts.repeats_flagged == 1
    assert Classification.objects.get(zooniverse_id=2).is_duplicate is False
    assert Classification.objects.get(zooniverse_id=1).is_duplicate is True


def test_repeats_keep_the_earliest_across_two_imports_in_reverse_order(workflow):
    ingest(workflow, [record(1, subject_ids=[900], user_id=5, created_at=T0 + timedelta(hours=1))])
    assert Classification.objects.get(zooniverse_id=1).is_duplicate is False
    item_subject = Subject.objects.get(zooniverse_id=900)
    report = report_new()
    counts = classifications_ingest(
        records=[record(2, subject_ids=[900], user_id=5, created_at=T0)],
        workflow=workflow,
        report=report,
    )
    assert (counts.repeats_flagged, counts.reflagged, report.updated) == (1, 1, 1)
    assert Classification.objects.get(zooniverse_id=1).is_duplicate is True
    assert Classification.objects.get(zooniverse_id=2).is_duplicate is False
    assert item_subject.classifications.filter(is_duplicate=False).count() == 1


def test_a_vote_in_another_workflow_is_not_a_repeat(workflow):
    other = WorkflowFactory(zooniverse_id=8, answers=[])
    first = {"subject_ids": [900], "user_id": 5, "created_at": T0}
    ingest(other, [record(1, workflow_id=8, **first)])
    ingest(workflow, [record(2, subject_ids=[900], user_id=5, created_at=T0 + timedelta(hours=1))])
    assert not Classification.objects.filter(is_duplicate=True).exists()


def test_equal_times_keep_the_smaller_classification_id(workflow):
    ingest(workflow, [record(9, subject_ids=[900], user_id=5, created_at=T0)])
    ingest(workflow, [record(3, subject_ids=[900], user_id=5, created_at=T0)])
    assert Classification.objects.get(zooniverse_id=3).is_duplicate is False
    assert Classification.objects.get(zooniverse_id=9).is_duplicate is True


def test_logged_out_repeats_are_flagged_per_session_never_by_hashed_ip_alone_b7(workflow):
    anon = {"user_id": None, "user_name": "not-logged-in-abc", "subject_ids": [900]}
    ingest(
        workflow,
        [
            record(1, **anon, session="s1", created_at=T0),
            record(2, **anon, session="s1", created_at=T0 + timedelta(minutes=1)),
            record(3, **anon, session="s2", created_at=T0 + timedelta(minutes=2)),
            record(4, **anon, session="", created_at=T0 + timedelta(minutes=3)),
            record(5, **anon, session="", created_at=T0 + timedelta(minutes=4)),
        ],
    )
    flags = dict(Classification.objects.values_list("zooniverse_id", "is_duplicate"))
    assert flags == {1: False, 2: True, 3: False, 4: False, 5: False}
    keys = set(Volunteer.objects.values_list("key", flat=True))  # one per session, or the name
    assert keys == {"anon:not-logged-in-s1", "anon:not-logged-in-s2", "anon:not-logged-in-abc"}


def test_a_classification_of_two_subjects_is_quarantined_never_attributed_b9(workflow):
    report = report_new()
    classifications_ingest(
        records=[record(1, subject_ids=[11, 12], line=2)], workflow=workflow, report=report
    )
    assert not Classification.objects.exists()
    assert not Subject.objects.exists()
    row = report.rows.get()
    assert (row.line, row.record_id, row.field, row.reason) == (
        2,
        "1",
        "subject_ids",
        "multi_subject_unsupported",
    )


def test_a_classification_of_another_workflow_is_counted_and_skipped_never_quarantined(workflow):
    counts = ingest(workflow, [record(1, workflow_id=8), record(2, workflow_id=8), record(3)])
    assert (counts.quarantined, counts.created, counts.other_workflows) == (0, 1, {8: 2})
    assert "skipped 2 rows of workflows 8 (2)" in counts.summary()
    assert not QuarantinedRow.objects.exists()


def test_parser_quarantine_entries_are_stored_with_the_batch(workflow):
    report = report_new()
    classifications_ingest(
        records=[QuarantineEntry(5, "", "row", "column_count: 3 columns, expected 14", "a,b\x00")],
        workflow=workflow,
        report=report,
    )
    row = report.rows.get()
    assert row.line == 5
    assert row.reason == "column_count: 3 columns, expected 14"
    assert row.raw == "a,b\\x00"  # NUL spelled out: PostgreSQL text cannot hold it
    assert report.quarantined == 1
    assert ImportReport.objects.get(pk=report.pk).quarantined == 1


def test_an_unknown_subject_is_matched_to_its_item_by_external_id_then_europeana_id(workflow):
    first = Item.objects.create(external_id="ext-1")
    second = Item.objects.create(external_id="/2058612/abc")
    third = Item.objects.create(external_id="ext-3")
    metadata = {
        901: {"external_id": "ext-1", "europeana_id": "/2058612/abc"},
        902: {"external_id": "not-here", "europeana_id": "2058612/abc"},
        903: {"crowdloop_id": str(third.pk)},
        904: {"retired": None, "objectId": "ZTF"},
    }
    ingest(
        workflow,
        [
            record(i, subject_ids=[zid], subject_metadata={zid: metadata[zid]})
            for i, zid in enumerate(metadata, start=1)
        ],
    )
    links = dict(Subject.objects.values_list("zooniverse_id", "item_id"))
    assert links == {901: first.pk, 902: second.pk, 903: third.pk, 904: None}
    assert Classification.objects.get(zooniverse_id=1).item_id == first.pk
    assert Subject.objects.get(zooniverse_id=904).metadata == {"objectId": "ZTF"}


def test_a_known_subject_without_item_is_linked_when_its_metadata_names_one(workflow):
    ingest(workflow, [record(1, subject_ids=[901])])
    item = Item.objects.create(external_id="ext-1")
    named = {901: {"external_id": "ext-1"}}
    ingest(workflow, [record(2, subject_ids=[901], subject_metadata=named)])
    assert Subject.objects.get(zooniverse_id=901).item_id == item.pk
    assert set(Classification.objects.values_list("item_id", flat=True)) == {item.pk}
    item.refresh_from_db()
    assert item.n_classifications == 2


def test_counters_are_recomputed_from_the_rows(workflow):
    item = Item.objects.create(external_id="ext-1", n_classifications=99)
    meta = {900: {"external_id": "ext-1"}}
    ingest(
        workflow,
        [
            record(1, subject_ids=[900], user_id=5, subject_metadata=meta),
            record(2, subject_ids=[900], user_id=5, subject_metadata=meta),
            record(3, subject_ids=[900], user_id=6, subject_metadata=meta),
        ],
    )
    item.refresh_from_db()
    assert item.n_classifications == 2  # the repeat does not count
    assert Volunteer.objects.get(key=volunteer_key(user_id=5, user_name="")).n_classifications == 2


def test_the_cursor_moves_with_each_committed_batch(workflow):
    seen: list[int | None] = []
    ingest(
        workflow,
        [record(i) for i in (3, 1, 2, 7, 5)],
        batch_size=2,
        cursor=True,
        on_batch_committed=lambda result: seen.append(SyncCursor.objects.get().last_id),
    )
    assert seen == [3, 7, 7]
    ingest(workflow, [record(2)], cursor=True)
    assert SyncCursor.objects.get().last_id == 7  # never backwards


def test_a_failing_batch_rolls_back_with_its_cursor(workflow, monkeypatch):
    from annotate.services import classifications

    ingest(workflow, [record(1)], cursor=True)

    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    for module in (classifications, classifications.store):
        monkeypatch.setattr(module, "counts_recompute", broken)
    with pytest.raises(RuntimeError):
        ingest(workflow, [record(2), record(3)], cursor=True)
    assert SyncCursor.objects.get().last_id == 1
    assert list(Classification.objects.values_list("zooniverse_id", flat=True)) == [1]


def test_queries_per_batch_are_bounded_and_do_not_grow_with_the_batch_size(
    workflow, django_assert_max_num_queries
):
    def batch(offset: int, size: int) -> list[ClassificationRecord]:
        return [
            record(
                offset + i,
                subject_ids=[offset + i],
                user_id=offset + i,
                subject_metadata={offset + i: {"external_id": f"e{offset + i}"}},
                answers=["Painting", "nope"],
            )
            for i in range(size)
        ]

    wanted = [*range(10_000, 10_010), *range(100_000, 100_060)]
    Item.objects.bulk_create([Item(external_id=f"e{i}") for i in wanted])
    used = {}
    for size, offset in ((10, 10_000), (60, 100_000)):
        with django_assert_max_num_queries(20) as queries:
            ingest(workflow, batch(offset, size))
        used[size] = len(queries.captured_queries)
    # Per batch: known ids, volunteers x3, subjects x3, items, repeats, one executemany insert,
    # recount x2, report, savepoint x2; plus the report and two cache reads per ingest. Past
    # SQLite's 999 parameters per statement Django splits the (new) volunteer and subject
    # INSERTs, one more statement per ~100 new subjects; classifications are never split.
    assert used[10] == used[60]
    assert Classification.objects.count() == 70


# --- import_classifications: files end to end -----------------------------------------------


def test_the_reference_export_imports_through_its_workflow_export(db):
    Concept.objects.create(key="yes", label="Yes")
    workflow_configure(
        workflow_id=10, task_key="T0", export_path=reference_path("zooniverse", "wf_export.csv")
    )
    path = reference_path("zooniverse", "cls_export.csv")
    summary = run_import(path, "--workflow-id", "10")
    assert "read 7, created 7, unchanged 0" in summary
    yes = Concept.objects.get(key="yes").pk
    stored = dict(Classification.objects.values_list("zooniverse_id", "concept_ids"))
    assert stored[543695319] == [yes]
    assert Classification.objects.get(zooniverse_id=543695340).invalid_answers == ["No"]
    assert Subject.objects.count() == 7
    volunteer = Volunteer.objects.get()
    assert (volunteer.key, volunteer.logged_in) == (
        "anon:not-logged-in-7a1f4a17d190291faa1824be3b3febf1d8b77a4f2d25dd6f191f76ef335684bf",
        False,
    )
    report = ImportReport.objects.get()
    assert (report.status, report.total, report.created) == ("succeeded", 7, 7)


def test_reimporting_the_same_export_changes_nothing(concepts, tmp_path):
    workflow_configure(workflow_id=7)
    path = write_export(tmp_path / "cls.csv", [export_row(i) for i in range(1, 30)])
    run_import(path, "--workflow-id", "7")
    before = list(Classification.objects.order_by("id").values())
    counters = list(Item.objects.values_list("n_classifications", flat=True))
    summary = run_import(path, "--workflow-id", "7", "--batch-size", "7")
    assert "created 0, unchanged 29" in summary
    assert list(Classification.objects.order_by("id").values()) == before
    assert list(Item.objects.values_list("n_classifications", flat=True)) == counters


def test_repeats_keep_the_earliest_when_two_exports_arrive_in_reverse_order(concepts, tmp_path):
    workflow_configure(workflow_id=7)
    late = export_row(2, subject="900", created_at="2024-03-01 10:00:00 UTC")
    early = export_row(
        5, subject="900", user_id=late["user_id"], created_at="2024-02-01 10:00:00 UTC"
    )
    run_import(write_export(tmp_path / "newer.csv", [late]), "--workflow-id", "7")
    summary = run_import(write_export(tmp_path / "older.csv", [early]), "--workflow-id", "7")
    assert "repeats flagged 1" in summary
    flags = dict(Classification.objects.values_list("zooniverse_id", "is_duplicate"))
    assert flags == {2: True, 5: False}


def test_every_bad_input_is_quarantined_with_its_line_and_the_rest_imports(concepts, tmp_path):
    """B1, B2, B3, B4, B5, B8, B9 in one file: the job succeeds and says what it set aside."""
    WorkflowFactory(zooniverse_id=7, answers=answers_for(["painting"]))
    rows = [
        export_row(1),  # line 2: good ("drawing" is not in this version's answers: B4)
        "2,too,few,columns",  # line 3: B1
        export_row(3, annotations="[{oops"),  # line 4: B2
        export_row(4, workflow_version="99.1"),  # line 5: B3
        export_row(5, subject_ids="abc"),  # line 6: B8
        export_row(6, created_at="yesterday"),  # line 7: B8
        export_row(7, subject_ids="11;12"),  # line 8: B9
        export_row(1),  # line 9: B5, the same id again
        export_row(8),  # line 10: good
    ]
    path = write_export(tmp_path / "cls.csv", rows)
    out, err = io.StringIO(), io.StringIO()
    call_command("import_classifications", str(path), "--workflow-id", "7", stdout=out, stderr=err)
    quarantined = list(QuarantinedRow.objects.values_list("line", "field", "reason"))
    assert [(line, field) for line, field, _ in quarantined] == [
        (3, "row"),
        (4, "annotations"),
        (5, "workflow_version"),
        (6, "subject_ids"),
        (7, "created_at"),
        (8, "subject_ids"),
    ]
    reasons = [reason for _, _, reason in quarantined]
    assert reasons[2] == "unknown_workflow_version"
    assert reasons[5] == "multi_subject_unsupported"
    assert sorted(Classification.objects.values_list("zooniverse_id", flat=True)) == [1, 8]
    assert Classification.objects.get(zooniverse_id=1).invalid_answers == ["drawing"]
    report = ImportReport.objects.get()
    assert (report.status, report.quarantined, report.total) == ("succeeded", 6, 9)
    assert "unknown workflow versions: 99.1 (1 rows)" in report.message
    assert (
        f"{path}:5: classification 4 workflow_version: unknown_workflow_version" in err.getvalue()
    )
    assert out.getvalue().strip() == (
        f"import_classifications {path}: read 9, created 2, unchanged 1, repeats flagged 0, "
        f"invalid answers 2, quarantined 6, answers mapping to no concept: 'drawing' (2), "
        f"subjects matching no item 1 (e.g. 96588101) "
        f"(import report {report.pk})"
    )


def test_wildcam_survey_rows_import_and_their_choices_are_reported_unmapped(concepts):
    """Without the survey's workflow export, its choice codes match no pilot concept."""
    workflow_configure(workflow_id=2649, task_key="T1")
    path = reference_path("zooniverse", "wildcam_gorongosa_sample.csv")
    summary = run_import(path, "--workflow-id", "2649")
    assert "read 20, created 20" in summary and "quarantined 0" in summary
    assert "answers mapping to no concept: " in summary and "'BBN'" in summary


def test_a_version_configured_as_unsupported_quarantines_its_rows(concepts, tmp_path):
    WorkflowFactory(zooniverse_id=7, answers=[], first_version__task_type="text")
    run_import(write_export(tmp_path / "cls.csv", [export_row(1)]), "--workflow-id", "7")
    assert QuarantinedRow.objects.get().reason == "unsupported_task_type:text"


def test_an_unconfigured_workflow_or_missing_file_fails_the_command(concepts, tmp_path):
    with pytest.raises(CommandError, match="configure_workflow"):
        run_import(tmp_path / "cls.csv", "--workflow-id", "7")
    workflow_configure(workflow_id=7)
    with pytest.raises(CommandError, match="No such file"):
        run_import(tmp_path / "missing.csv", "--workflow-id", "7")
    assert ImportReport.objects.get().status == "failed"


def test_a_file_that_is_not_a_classification_export_fails_the_command(concepts, tmp_path):
    workflow_configure(workflow_id=7)
    path = tmp_path / "subjects.csv"
    path.write_text("subject_id,metadata\n1,{}\n")
    with pytest.raises(CommandError, match="lacks column"):
        run_import(path, "--workflow-id", "7")
    assert ImportReport.objects.get().status == "failed"


def test_a_database_error_marks_the_report_failed_and_reraises(concepts, tmp_path, monkeypatch):
    from annotate.services import classifications

    workflow_configure(workflow_id=7)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    for module in (classifications, classifications.store):
        monkeypatch.setattr(module, "counts_recompute", broken)
    with pytest.raises(RuntimeError):
        classifications_import(
            path=write_export(tmp_path / "cls.csv", [export_row(1)]), workflow_id=7
        )
    report = ImportReport.objects.get()
    assert (report.status, report.message) == ("failed", "RuntimeError: disk full")


def _mixed_export(tmp_path: Path) -> Path:
    """Good rows, repeats and bad rows of every kind, over a few subjects and volunteers."""
    rows = [export_row(i, subject=str(900 + i % 4), user_id=str(40 + i % 3)) for i in range(1, 40)]
    rows[5] = "6,too,few,columns"
    rows[9] = export_row(10, annotations="[{oops")
    rows[14] = export_row(15, subject_ids="11;12")
    rows[20] = export_row(21, workflow_version="99.1")
    return write_export(tmp_path / "cls.csv", rows)


def _stored() -> tuple[list, list]:
    classifications = list(
        Classification.objects.order_by("zooniverse_id").values_list(
            "zooniverse_id", "subject__zooniverse_id", "volunteer__key", "concept_ids",
            "is_duplicate", "created_at",
        )
    )  # fmt: skip
    quarantined = list(QuarantinedRow.objects.order_by("line").values_list("line", "reason"))
    return classifications, quarantined


def test_an_export_parsed_in_a_child_process_imports_exactly_as_one_parsed_in_process(
    concepts, tmp_path
):
    workflow_configure(workflow_id=7)
    path = _mixed_export(tmp_path)
    _, here = classifications_import(path=path, workflow_id=7, batch_size=6, parallel=False)
    expected = _stored()
    Classification.objects.all().delete()
    QuarantinedRow.objects.all().delete()
    progress: list[tuple[int, int]] = []
    _, there = classifications_import(
        path=path, workflow_id=7, batch_size=6, parallel=True,
        progress=lambda rows, size: progress.append((rows, size)),
    )  # fmt: skip
    assert _stored() == expected
    assert there.summary() == here.summary()
    assert len(expected[1]) == 3 and there.created == len(expected[0]) > 30
    assert sum(rows for rows, _ in progress) == 39
    assert sum(size for _, size in progress) == path.stat().st_size


def test_a_parser_process_that_fails_or_dies_fails_the_import_and_its_report(
    concepts, tmp_path, monkeypatch
):
    from annotate.services.zooniverse import classification_import

    workflow_configure(workflow_id=7)
    other = tmp_path / "subjects.csv"
    other.write_text("subject_id,metadata\n1,{}\n")
    with pytest.raises(classification_import.ClassificationImportError, match="lacks column"):
        classifications_import(path=other, workflow_id=7, parallel=True)

    def killed(*args) -> None:
        os._exit(3)

    monkeypatch.setattr(classification_import, "_parse_into", killed)
    with pytest.raises(classification_import.ClassificationImportError, match="exit code 3"):
        classifications_import(path=_mixed_export(tmp_path), workflow_id=7, parallel=True)
    assert list(ImportReport.objects.values_list("status", flat=True)) == ["failed", "failed"]
    assert not Classification.objects.exists()


def test_a_failed_import_leaves_counters_true_to_its_stored_rows_and_a_rerun_heals_them(
    concepts, tmp_path, monkeypatch
):
    from annotate.services import classifications as ingest

    workflow_configure(workflow_id=7)
    for subject in range(900, 904):
        Item.objects.create(external_id=f"item-{subject}")
    rows = [export_row(i, subject=str(900 + i % 4)) for i in range(1, 401)]
    path = write_export(tmp_path / "cls.csv", rows)  # blocks of 64 KiB at --batch-size 10

    def counters_true() -> bool:
        items = {i.pk: i.n_classifications for i in Item.objects.all()}
        volunteers = {v.pk: v.n_classifications for v in Volunteer.objects.all()}
        votes = Classification.objects.all()
        return items == {
            pk: votes.filter(item_id=pk, is_duplicate=False).count() for pk in items
        } and volunteers == {pk: votes.filter(volunteer_id=pk).count() for pk in volunteers}

    real = ingest._ingest_batch
    calls: list[int] = []

    def second_batch_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest, "_ingest_batch", second_batch_fails)
    with pytest.raises(RuntimeError, match="disk full"):
        classifications_import(path=path, workflow_id=7, batch_size=10, parallel=False)
    assert 0 < Classification.objects.count() < 400
    assert counters_true() and Item.objects.filter(n_classifications__gt=0).exists()

    Item.objects.update(n_classifications=0)  # counters gone wrong by other means
    Volunteer.objects.update(n_classifications=0)
    monkeypatch.setattr(ingest, "_ingest_batch", real)
    classifications_import(path=path, workflow_id=7, batch_size=10, parallel=False)
    assert Classification.objects.count() == 400
    assert counters_true()


def test_classification_ids_on_sqlite_are_the_plain_rowid_and_still_only_grow(workflow):
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("a SQLite table definition")
    with connection.cursor() as cursor:
        table = cursor.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'annotate_classification'"
        ).fetchone()[0]
    assert '"id" integer NOT NULL PRIMARY KEY' in table and "AUTOINCREMENT" not in table
    ingest(workflow, [record(1), record(2), record(3)])
    first, second, third = Classification.objects.order_by("zooniverse_id")
    assert first.pk < second.pk < third.pk
    first.delete()  # (votes are append-only; a deleted older row leaves the newest id in place)
    ingest(workflow, [record(4)])
    assert Classification.objects.get(zooniverse_id=4).pk == third.pk + 1


@pytest.mark.parametrize("every_s, along_the_way", [(0.0, True), (3600.0, False)])
def test_a_long_import_recounts_counters_along_the_way_not_only_at_the_end(
    concepts, tmp_path, monkeypatch, every_s, along_the_way
):
    from annotate.services import classifications as ingest

    workflow_configure(workflow_id=7)
    items = [Item.objects.create(external_id=f"item-{subject}") for subject in range(900, 904)]
    rows = [
        export_row(i, subject=str(900 + i % 4), user_id=str(2000 + i), user_name=f"v{i}")
        for i in range(1, 1201)
    ]
    path = write_export(tmp_path / "cls.csv", rows)  # blocks of 64 KiB at --batch-size 10
    monkeypatch.setattr(ingest, "COUNTERS_EVERY_S", every_s)
    seen: list[tuple[int, int]] = []  # (votes stored, votes the item counters hold)

    def progress(rows: int, read: int) -> None:
        counted = sum(Item.objects.values_list("n_classifications", flat=True))
        seen.append((Classification.objects.filter(is_duplicate=False).count(), counted))

    classifications_import(
        path=path, workflow_id=7, batch_size=10, parallel=False, progress=progress
    )
    assert len(seen) > 2 and seen[-1][0] == 1200
    mid_import = seen[:-1]
    if along_the_way:
        assert all(stored == counted for stored, counted in mid_import)
    else:
        assert all(counted == 0 for _, counted in mid_import)
    assert [Item.objects.get(pk=i.pk).n_classifications for i in items] == [300] * 4


@pytest.mark.django_db(transaction=True)
def test_sqlite_checks_foreign_keys_again_after_an_import_that_skipped_them_row_by_row(
    concepts, tmp_path, monkeypatch
):
    from django.db import connection

    from annotate.services import classifications as ingest

    if connection.vendor != "sqlite":
        pytest.skip("a SQLite connection setting")

    def foreign_keys() -> int:
        with connection.cursor() as cursor:
            return cursor.execute("PRAGMA foreign_keys").fetchone()[0]

    workflow_configure(workflow_id=7)
    real, seen = ingest.sql.rows_insert, []

    def insert(*args, **kwargs):
        seen.append(foreign_keys())
        return real(*args, **kwargs)

    for module in (ingest.store, ingest.subjects):  # where rows_insert is called
        monkeypatch.setattr(module, "rows_insert", insert)
    classifications_import(path=_mixed_export(tmp_path), workflow_id=7, batch_size=6)
    assert seen and set(seen) == {0}
    assert foreign_keys() == 1
    with connection.cursor() as cursor:
        assert cursor.execute("PRAGMA foreign_key_check").fetchall() == []

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    for module in (ingest.store, ingest.subjects):
        monkeypatch.setattr(module, "rows_insert", broken)
    Classification.objects.all().delete()
    with pytest.raises(RuntimeError, match="disk full"):
        classifications_import(path=_mixed_export(tmp_path), workflow_id=7, batch_size=6)
    assert foreign_keys() == 1


# --- what real projects' exports hold (fixtures in tests/annotate/fixtures/zooniverse) -------

FIXTURES = Path(__file__).parent / "fixtures" / "zooniverse"


def _votes(concepts: list[Concept]) -> dict[int, list[int]]:
    """Classification id -> its row of 0/1 votes, as aggregation reads them."""
    from annotate.services.aggregation.votes import votes_load

    data = votes_load(concepts=concepts)
    item_of = {pk: i for i, pk in enumerate(data.item_ids.tolist())}
    rows: dict[int, list[int]] = {}
    by_item_volunteer = {
        (item_of[item], volunteer): zid
        for zid, item, volunteer in Classification.objects.values_list(
            "zooniverse_id", "item_id", "volunteer_id"
        )
        if item in item_of
    }
    volunteers = data.volunteer_ids.tolist()
    for k in range(len(data.votes.item_idx)):
        key = (int(data.votes.item_idx[k]), volunteers[int(data.votes.worker_idx[k])])
        rows[by_item_volunteer[key]] = data.votes.labels[k].tolist()
    return rows


def _decision_tree_workflow(concepts) -> Workflow:
    workflow = WorkflowFactory(zooniverse_id=7, task_key="T1")
    for subject in (501, 502, 503):
        Item.objects.create(external_id=f"item-{subject}")
    return workflow


def test_a_classification_that_never_showed_the_task_is_stored_but_gives_no_vote(concepts):
    """T1 is asked only after "Yes" to T0: the "No" branch is no "no" to every label."""
    _decision_tree_workflow(concepts)
    summary = run_import(FIXTURES / "decision_tree_export.csv", "--workflow-id", "7")
    assert "created 6" in summary and "quarantined 0" in summary
    assert "task not shown 3 (no vote)" in summary
    shown = dict(Classification.objects.values_list("zooniverse_id", "task_shown"))
    assert shown == {701: True, 702: False, 703: True, 704: False, 705: True, 706: False}
    vocabulary = [concepts[key] for key in WORKFLOW_ANSWERS]
    votes = _votes(vocabulary)
    assert sorted(votes) == [701, 703, 705]
    assert votes[701] == [1, 1, 0, 0] and votes[703] == [0, 0, 0, 0]


@pytest.mark.parametrize("name", ["r_written_export.csv", "pandas_written_export.csv"])
def test_an_export_rewritten_by_r_or_pandas_imports_as_the_original(concepts, name):
    _decision_tree_workflow(concepts)
    summary = run_import(FIXTURES / name, "--workflow-id", "7")
    assert "created 6" in summary and "quarantined 0" in summary
    anonymous = Volunteer.objects.get(logged_in=False)
    assert anonymous.key == "anon:not-logged-in-5e55100a"  # the session's
    assert Volunteer.objects.filter(logged_in=True).count() == 5


def test_a_project_wide_export_imports_its_workflow_and_counts_the_others(workflow, concepts):
    """Workflows 123 (single) and 456 (survey) share the file: skipped, never bad rows."""
    path = FIXTURES / "project_export_three_workflows.csv"
    summary = run_import(path, "--workflow-id", "7")
    assert "read 10, created 5" in summary and "quarantined 0" in summary
    assert "skipped 5 rows of workflows 123 (2), 456 (3)" in summary
    assert not QuarantinedRow.objects.exists()
    report = ImportReport.objects.get()
    assert "skipped 5 rows of workflows 123 (2), 456 (3)" in report.message
    expert = dict(Classification.objects.values_list("zooniverse_id", "expert"))
    assert expert == {801: True, 804: True, 806: True, 808: False, 810: False}


def test_markdown_html_and_emoji_labels_map_and_an_unknown_answer_is_no_vote(db):
    for key in ("ring", "spiral", "elliptical", "merger"):
        Concept.objects.create(key=key, label=key.title())
    workflow_configure(
        workflow_id=7, task_key="T0", export_path=FIXTURES / "markdown_labels_workflow.csv"
    )
    mapped = [a["concept"] for a in WorkflowVersion.objects.get(version="5.2").answers]
    assert mapped == ["ring", "spiral", "elliptical", None]  # "Merger (two galaxies)?" is not
    Item.objects.create(external_id="item-521")
    Item.objects.create(external_id="item-522")
    summary = run_import(FIXTURES / "markdown_labels_export.csv", "--workflow-id", "7")
    assert "created 4" in summary
    assert "answers mapping to no concept: " in summary
    assert "'Star ⭐' (1)" in summary and "(two galaxies)?' (1)" in summary
    keys = {c.pk: c.key for c in Concept.objects.all()}
    stored = {
        zid: [keys[pk] for pk in ids]
        for zid, ids in Classification.objects.values_list("zooniverse_id", "concept_ids")
    }
    assert stored == {901: ["ring", "spiral"], 902: ["elliptical"], 903: [], 904: []}
    known = dict(Classification.objects.values_list("zooniverse_id", "answers_known"))
    # "Star" is no answer of version 5.2: what it meant is unknown, so it is no vote at all.
    # The offered but unmapped "Merger" answer is a vote: no to the other shapes.
    assert known == {901: True, 902: True, 903: False, 904: True}
    assert Classification.objects.get(zooniverse_id=903).invalid_answers == ["Star ⭐"]
    votes = _votes(list(Concept.objects.order_by("key")))
    assert sorted(votes) == [901, 902, 904]


def test_an_import_warns_when_the_task_is_in_none_of_the_first_rows_naming_those_found(concepts):
    """The wrong task configured: every row would be "task not shown", so the import says so."""
    _decision_tree_workflow(concepts)
    Workflow.objects.filter(zooniverse_id=7).update(task_key="T9")
    out, err = io.StringIO(), io.StringIO()
    path = FIXTURES / "decision_tree_export.csv"
    call_command("import_classifications", str(path), "--workflow-id", "7", stdout=out, stderr=err)
    warning = (
        "warning: task T9 is in none of the first 6 rows of workflow 7; tasks found: T0 (6), T1 (3)"
    )
    assert warning in err.getvalue() and warning in out.getvalue()
    assert warning in ImportReport.objects.get().message
    # The right task: no warning.
    Workflow.objects.filter(zooniverse_id=7).update(task_key="T1")
    assert "warning" not in run_import(path, "--workflow-id", "7")


def _single_answer_workflow(concepts) -> Workflow:
    """Workflow 7 at version 16.50 (from its workflow export): one single-answer question."""
    workflow_configure(
        workflow_id=7, task_key="T0", export_path=FIXTURES / "single_answer_workflow.csv"
    )
    for subject in (600, 601):
        Item.objects.create(external_id=f"item-{subject}")
    return Workflow.objects.get(zooniverse_id=7)


def test_a_single_answer_export_votes_yes_for_the_answer_and_a_skip_gives_no_vote(concepts):
    """R wrote version 16.50 as 16.5: it is still version 16.50. The null answer (803) was a
    skip, stored but no vote; "Something else" maps to no concept: a no to every concept."""
    _single_answer_workflow(concepts)
    assert list(WorkflowVersion.objects.values_list("version", flat=True)) == ["16.50"]
    summary = run_import(FIXTURES / "r_written_single_answer_export.csv", "--workflow-id", "7")
    assert "read 5, created 5" in summary and "quarantined 0" in summary
    assert "task skipped 1 (no vote)" in summary
    keys = {c.pk: c.key for c in Concept.objects.all()}
    stored = {
        zid: [keys[pk] for pk in ids]
        for zid, ids in Classification.objects.values_list("zooniverse_id", "concept_ids")
    }
    assert stored == {801: ["painting"], 802: ["drawing"], 803: [], 804: [], 805: ["painting"]}
    known = dict(Classification.objects.values_list("zooniverse_id", "answers_known"))
    assert known == {801: True, 802: True, 803: False, 804: True, 805: True}
    vocabulary = [concepts[key] for key in WORKFLOW_ANSWERS]
    votes = _votes(vocabulary)
    assert sorted(votes) == [801, 802, 804, 805]
    assert votes[801] == [1, 0, 0, 0] and votes[802] == [0, 1, 0, 0] and votes[804] == [0] * 4


def test_a_skipped_single_answer_from_the_api_gives_no_vote(concepts):
    _single_answer_workflow(concepts)
    records = [
        record(1, workflow_version="16.50", answers=[0], subject_ids=[600], source="api"),
        record(2, workflow_version="16.50", answers=None, subject_ids=[601], source="api"),
    ]
    counts = ingest(Workflow.objects.get(), records)
    assert (counts.created, counts.skipped, counts.quarantined) == (2, 1, 0)
    known = dict(Classification.objects.values_list("zooniverse_id", "answers_known"))
    assert known == {1: True, 2: False}
    assert Classification.objects.get(zooniverse_id=1).concept_ids == [concepts["painting"].pk]


def test_a_version_differing_only_by_trailing_zeros_is_not_guessed_when_two_could_match(
    concepts,
):
    workflow = _single_answer_workflow(concepts)
    WorkflowVersionFactory(workflow=workflow, version="16.500", task_type="single", answers=[])
    summary = run_import(FIXTURES / "r_written_single_answer_export.csv", "--workflow-id", "7")
    assert "created 0" in summary and "quarantined 5" in summary
    assert set(QuarantinedRow.objects.values_list("reason", flat=True)) == {
        "unknown_workflow_version"
    }


SPECIES = ["zebra", "baboon", "warthog"]


def _survey_workflow() -> list[Concept]:
    vocabulary = [Concept.objects.create(key=key, label=key.title()) for key in SPECIES]
    workflow_configure(workflow_id=9, task_key="T1", export_path=FIXTURES / "survey_workflow.csv")
    for subject in (700, 701, 702):
        Item.objects.create(external_id=f"item-{subject}")
    return vocabulary


def test_a_survey_export_votes_yes_for_each_species_marked_and_no_for_the_others(db):
    """Nothing here (903) is a no to every species, never a vote of its own; a row without the
    survey (905) and a choice the version does not offer (906) give no vote."""
    vocabulary = _survey_workflow()
    summary = run_import(FIXTURES / "survey_export.csv", "--workflow-id", "9")
    assert "read 6, created 6" in summary and "quarantined 0" in summary
    assert "task not shown 1 (no vote)" in summary
    assert "'NTHNGHR' (1)" in summary and "'LION' (1)" in summary
    votes = _votes(vocabulary)
    assert sorted(votes) == [901, 902, 903, 904]
    assert votes[901] == [1, 1, 0] and votes[902] == [0, 0, 1]
    assert votes[903] == [0, 0, 0] and votes[904] == [1, 0, 0]


def test_survey_classifications_from_the_api_resolve_choice_codes_by_exact_version(db):
    from annotate.services.zooniverse.pull import classification_record

    vocabulary = _survey_workflow()
    payloads = [
        {
            "id": str(cid),
            "created_at": "2024-02-23T17:00:00.000Z",
            "metadata": {"workflow_version": version, "session": f"s{cid}"},
            "annotations": [{"task": "T1", "value": value}],
            "links": {"workflow": "9", "user": str(cid), "subjects": [str(700 + cid % 3)]},
        }
        for cid, version, value in [
            (1, "4.12", [{"choice": "BBN", "answers": {"HWMN": "1"}, "filters": {}}]),
            (2, "4.12", [{"choice": "ZBR", "answers": {}, "filters": {}},
                         {"choice": "WARTHOG", "answers": {}, "filters": {}}]),
            (3, "4.13", [{"choice": "ZBR", "answers": {}, "filters": {}}]),
        ]
    ]  # fmt: skip
    records = [classification_record(p, task_key="T1") for p in payloads]
    counts = ingest(Workflow.objects.get(zooniverse_id=9), records)
    assert (counts.created, counts.quarantined) == (2, 1)
    assert counts.unknown_versions == {"4.13": 1}
    by_id = dict(Classification.objects.values_list("zooniverse_id", "concept_ids"))
    assert by_id == {1: [vocabulary[1].pk], 2: sorted([vocabulary[0].pk, vocabulary[2].pk])}
