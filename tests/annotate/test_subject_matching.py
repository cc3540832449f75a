"""Subjects find their items as their workflow says, and votes that came first wait for them."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from annotate.models import (
    Classification,
    ImportReport,
    Item,
    Subject,
    Workflow,
)
from annotate.services.classifications import classifications_ingest
from annotate.services.classifications.subjects import subjects_link_pending
from tests.annotate.builders import record, report_new

pytestmark = pytest.mark.django_db


def ingest(workflow: Workflow, records, report: ImportReport | None = None):
    report = report or report_new()
    return classifications_ingest(records=records, workflow=workflow, report=report)


def test_a_named_metadata_key_links_subjects_the_built_in_keys_miss(workflow):
    item = Item.objects.create(external_id="/2058612/abc")
    other = Item.objects.create(external_id="cat_001.jpg")
    meta = {901: {"!europeana_id": "2058612/abc"}, 902: {"Filename": "cat_001.jpg"}}
    records = [record(1, subject_ids=[901], subject_metadata={901: meta[901]})]
    ingest(workflow, records)
    assert Subject.objects.get(zooniverse_id=901).item_id is None  # built-in keys: no match

    workflow.subject_match = "!europeana_id"
    workflow.save()
    ingest(workflow, records)  # a re-import of the same vote links it
    assert Subject.objects.get(zooniverse_id=901).item_id == item.pk
    assert Classification.objects.get(zooniverse_id=1).item_id == item.pk

    workflow.subject_match = "Filename"
    workflow.save()
    ingest(workflow, [record(2, subject_ids=[902], subject_metadata={902: meta[902]})])
    assert Subject.objects.get(zooniverse_id=902).item_id == other.pk


def test_subject_id_matching_needs_no_metadata(workflow):
    workflow.subject_match = Workflow.MATCH_SUBJECT_ID
    workflow.save()
    item = Item.objects.create(external_id="zooniverse-subject-903")
    ingest(workflow, [record(1, subject_ids=[903])])  # an API pull carries no metadata
    assert Subject.objects.get(zooniverse_id=903).item_id == item.pk
    item.refresh_from_db()
    assert item.n_classifications == 1


def test_subjects_matching_nothing_are_counted_and_named_in_the_summary_and_report(workflow):
    report = report_new()
    records = [
        record(i, subject_ids=[800 + i], subject_metadata={800 + i: {"external_id": f"x{i}"}})
        for i in range(1, 8)
    ]
    counts = ingest(workflow, records, report)
    assert counts.unmatched_subjects == 7
    assert counts.unmatched_examples == [801, 802, 803, 804, 805]
    assert "subjects matching no item 7 (e.g. 801, 802, 803, 804, 805)" in counts.summary()
    report.refresh_from_db()
    assert "7 subjects match no item" in report.message
    assert "801, 802, 803, 804, 805" in report.message


def test_a_reimport_links_subjects_whose_items_arrived_after_their_votes(workflow):
    meta = {901: {"external_id": "late-1"}}
    records = [
        record(1, subject_ids=[901], user_id=1, subject_metadata=meta),
        record(2, subject_ids=[901], user_id=2, subject_metadata=meta),
    ]
    ingest(workflow, records)
    item = Item.objects.create(external_id="late-1")
    counts = ingest(workflow, records)  # every classification id is known already
    assert counts.unchanged == 2 and counts.created == 0
    assert counts.unmatched_subjects == 0
    assert Subject.objects.get(zooniverse_id=901).item_id == item.pk
    assert set(Classification.objects.values_list("item_id", flat=True)) == {item.pk}
    item.refresh_from_db()
    assert item.n_classifications == 2


def test_import_items_links_subjects_waiting_for_their_items(workflow, tmp_path):
    workflow.subject_match = "Filename"
    workflow.save()
    meta = {901: {"Filename": "cat_001.jpg"}}
    ingest(workflow, [record(1, subject_ids=[901], subject_metadata=meta)])
    manifest = tmp_path / "items.csv"
    manifest.write_text("external_id,image\ncat_001.jpg,https://images.example.org/cat_001.jpg\n")
    out = io.StringIO()
    call_command("import_items", str(manifest), stdout=out, stderr=io.StringIO(), verbosity=0)
    item = Item.objects.get(external_id="cat_001.jpg")
    assert Subject.objects.get(zooniverse_id=901).item_id == item.pk
    assert Classification.objects.get(zooniverse_id=1).item_id == item.pk
    assert item.n_classifications == 1
    assert "1 items linked to waiting subjects" in out.getvalue()
    assert subjects_link_pending() == []  # nothing left waiting


def test_configure_workflow_match_key_sets_the_field_and_links_waiting_votes(workflow):
    meta = {901: {"!europeana_id": "/1/a"}}
    ingest(workflow, [record(1, subject_ids=[901], subject_metadata=meta)])
    item = Item.objects.create(external_id="/1/a")
    out = io.StringIO()
    call_command(
        "configure_workflow", "--workflow-id", "7", "--match-key", "!europeana_id", stdout=out
    )
    workflow.refresh_from_db()
    assert workflow.subject_match == "!europeana_id"
    assert "1 items got votes that were waiting" in out.getvalue()
    assert Classification.objects.get(zooniverse_id=1).item_id == item.pk
    item.refresh_from_db()
    assert item.n_classifications == 1
