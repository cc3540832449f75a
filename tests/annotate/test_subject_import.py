"""import_subjects brings a running project's subjects in as items, and their votes then count."""

from __future__ import annotations

import io
from pathlib import Path

import PIL.Image
import pytest
from django.core.management import CommandError, call_command

from annotate.models import Classification, ImportReport, Item, QuarantinedRow, Subject, Workflow
from annotate.security import FetchError, UnsafeURLError
from annotate.services import image_fetch
from annotate.services.image_fetch import item_images_fetch
from annotate.services.zooniverse.subject_import import subjects_import

pytestmark = pytest.mark.django_db


FIXTURES = Path(__file__).parent / "fixtures" / "subjects"
EXPORT = FIXTURES / "subject_export.csv"
VOTES = FIXTURES / "votes_before_items.csv"


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_subjects", *args, "--no-fetch", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_each_subject_becomes_one_item_with_its_first_location_and_marked_hidden_keys():
    out, err = run(str(EXPORT))
    assert sorted(Item.objects.values_list("external_id", flat=True)) == [
        "zooniverse-subject-101",
        "zooniverse-subject-102",
        "zooniverse-subject-103",
    ]
    item = Item.objects.get(external_id="zooniverse-subject-101")
    assert item.image_url.endswith("/a1.jpeg")  # the first of its two locations
    assert item.image_state == Item.ImageState.PENDING and item.image_file == ""
    assert item.metadata["!europeana_id"] == "/2058612/a1"
    assert item.metadata["zooniverse"]["hidden_keys"] == ["!europeana_id", "#priority"]
    assert len(item.metadata["zooniverse"]["locations"]) == 2
    assert Item.objects.get(external_id="zooniverse-subject-102").metadata["zooniverse"][
        "hidden_keys"
    ] == ["!europeana_id", "//note"]
    subject = Subject.objects.get(zooniverse_id=101)
    assert subject.item_id == item.pk
    assert subject.retirement_reason == "classification_count"
    assert subject.retired_at is not None
    assert Subject.objects.get(zooniverse_id=102).retired_at is None
    # Bad rows are reported by line; the rest imported.
    lines = sorted(QuarantinedRow.objects.values_list("line", "field"))
    assert lines == [(6, "locations"), (7, "subject_id"), (8, "metadata")]
    assert f"{EXPORT}:6: subject 104 locations: no_location" in err
    assert "7 rows, 3 subjects: 3 items created" in out
    assert "1 repeated rows" in out


def test_a_second_run_changes_nothing():
    run(str(EXPORT))
    before = list(Item.objects.order_by("pk").values())
    out, _ = run(str(EXPORT))
    assert list(Item.objects.order_by("pk").values()) == before
    assert Subject.objects.count() == 3
    assert "0 items created, 0 updated, 3 unchanged, 0 subjects created" in out


def test_the_external_id_can_come_from_a_metadata_key_and_rows_can_be_one_workflows():
    run(str(EXPORT), "--external-id-key", "Filename", "--workflow-id", "7")
    # 103's only row is of an unlinked set (no workflow): not workflow 7's.
    assert sorted(Item.objects.values_list("external_id", flat=True)) == ["a1.jpg", "a2.jpg"]
    assert Subject.objects.get(zooniverse_id=101).item.external_id == "a1.jpg"


def test_a_subject_already_linked_to_a_pushed_item_keeps_it():
    pushed = Item.objects.create(external_id="item-1")
    Subject.objects.create(zooniverse_id=101, item=pushed)
    out, _ = run(str(EXPORT))
    assert Subject.objects.get(zooniverse_id=101).item_id == pushed.pk
    assert not Item.objects.filter(external_id="zooniverse-subject-101").exists()
    assert "1 already linked to another item" in out


def test_votes_imported_before_their_subjects_count_once_the_subjects_arrive(workflow):
    call_command(
        "import_classifications", str(VOTES), "--workflow-id", "7",
        stdout=io.StringIO(), stderr=io.StringIO(),
    )  # fmt: skip
    report = ImportReport.objects.get(kind=ImportReport.Kind.CLASSIFICATIONS)
    assert "2 subjects match no item" in report.message
    assert "101, 102" in report.message
    assert Classification.objects.filter(item__isnull=True).count() == 4

    out, _ = run(str(EXPORT))
    assert "2 waiting subjects linked" in out
    first = Item.objects.get(external_id="zooniverse-subject-101")
    assert Classification.objects.filter(item__isnull=True).count() == 0
    assert first.n_classifications == 2
    assert Item.objects.get(external_id="zooniverse-subject-102").n_classifications == 2


def test_votes_first_then_import_items_by_a_named_key(workflow):
    workflow.subject_match = "Filename"
    workflow.save()
    call_command(
        "import_classifications", str(VOTES), "--workflow-id", "7",
        stdout=io.StringIO(), stderr=io.StringIO(),
    )  # fmt: skip
    manifest = FIXTURES.parent / "subjects" / "items_by_filename.csv"
    call_command(
        "import_items", str(manifest), stdout=io.StringIO(), stderr=io.StringIO(), verbosity=0
    )
    assert Item.objects.get(external_id="a1.jpg").n_classifications == 2
    assert Item.objects.get(external_id="a2.jpg").n_classifications == 2


def test_subject_id_matching_links_votes_pulled_after_import_subjects(workflow):
    workflow.subject_match = Workflow.MATCH_SUBJECT_ID
    workflow.save()
    run(str(EXPORT))
    Subject.objects.all().delete()  # as if the subjects came only as items (import_items)
    call_command(
        "import_classifications", str(VOTES), "--workflow-id", "7",
        stdout=io.StringIO(), stderr=io.StringIO(),
    )  # fmt: skip
    assert Item.objects.get(external_id="zooniverse-subject-101").n_classifications == 2


def test_a_file_that_is_not_a_subject_export_fails_the_command(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(CommandError):
        run(str(bad))
    with pytest.raises(CommandError):
        run(str(tmp_path / "missing.csv"))


def test_the_import_queues_the_fetch_and_never_downloads(monkeypatch, settings):
    called: list[str] = []
    monkeypatch.setattr(image_fetch, "fetch_image", lambda url, **kw: called.append(url))
    monkeypatch.setattr("annotate.tasks.fetch_item_images.delay", lambda **kw: called.append("q"))
    report, counts = subjects_import(path=EXPORT)
    assert called == ["q"]  # queued once, nothing fetched during the import
    assert "queued for fetching" in report.message


def test_the_fetch_goes_through_the_guard_and_records_each_failure(monkeypatch, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    run(str(EXPORT))
    buffer = io.BytesIO()
    PIL.Image.new("RGB", (40, 30), "red").save(buffer, "PNG")

    def fake_fetch(url: str, **kwargs):
        if url.endswith("a1.jpeg"):
            raise UnsafeURLError("refused: private address")
        if url.endswith("a2.png"):
            return type("R", (), {"data": buffer.getvalue()})()
        raise FetchError("HTTP 404")

    monkeypatch.setattr(image_fetch, "fetch_image", fake_fetch)
    counts = item_images_fetch(limit=10)
    states = dict(Item.objects.values_list("external_id", "image_state"))
    assert states["zooniverse-subject-101"] == "refused"
    assert states["zooniverse-subject-102"] == "ok"
    assert Item.objects.get(external_id="zooniverse-subject-102").image_width == 40
    assert (counts.fetched, counts.failed) == (1, 2)
    assert states["zooniverse-subject-103"] == "unreachable"
    assert Item.objects.get(external_id="zooniverse-subject-103").image_error == "HTTP 404"
    assert counts.more is False
    assert item_images_fetch(limit=10).fetched == 0  # nothing pending is tried twice
