"""The classification import's edge cases: a classification id that comes back with other
content (B5), re-imports that must change nothing, quarantine included (B1, B5), one anonymous
volunteer whichever source brings their votes (B7), and another project's votes (S4)."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import pytest

from annotate.models import (
    Classification,
    ImportReport,
    QuarantinedRow,
    Volunteer,
)
from annotate.services.classifications import classifications_ingest
from tests.annotate.builders import (
    T0,
    export_row,
    ingest,
    record,
    report_new,
    run_import,
    write_export,
)

pytestmark = pytest.mark.django_db


def quarantined() -> list[tuple[int | None, str, str, str]]:
    return list(
        QuarantinedRow.objects.order_by("id").values_list("line", "record_id", "field", "reason")
    )


# --- B5: one id, one classification ---------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"subject_ids": [999]},
        {"answers": ["Drawing"]},
        {"user_id": 77, "user_name": "someone-else"},
    ],
    ids=["another subject", "another annotation", "another volunteer"],
)
def test_an_id_repeated_in_one_file_with_other_content_is_quarantined_and_the_first_kept(
    workflow, change
):
    """Reliability B5: the same id twice is one row; a second copy that says something else is
    bad input, reported with its id and line, and the first copy stays as it was."""
    first = record(1, line=2)
    report = report_new()
    counts = classifications_ingest(
        records=[first, record(2, line=3), record(1, line=4, **change)],
        workflow=workflow,
        report=report,
    )
    stored = Classification.objects.select_related("subject", "volunteer").get(zooniverse_id=1)
    assert stored.subject.zooniverse_id == first.subject_ids[0]
    assert stored.volunteer.zooniverse_user_id == first.user_id
    assert (counts.created, counts.unchanged, counts.quarantined) == (2, 0, 1)
    [(line, record_id, field, reason)] = quarantined()
    assert (line, record_id, field) == (4, "1", "classification_id")
    assert reason.startswith("classification_id_conflict") and "line 2" in reason
    assert ImportReport.objects.get(pk=report.pk).quarantined == 1


def test_an_identical_copy_in_one_file_is_one_row_and_no_quarantine(workflow):
    counts = ingest(workflow, [record(1, line=2), record(1, line=3)])
    assert (counts.created, counts.unchanged, counts.quarantined) == (1, 1, 0)
    assert not QuarantinedRow.objects.exists()


@pytest.mark.parametrize(
    "change",
    [{"subject_ids": [999]}, {"user_id": 77, "user_name": "someone-else"}],
    ids=["another subject", "another volunteer"],
)
def test_an_id_already_stored_coming_back_as_another_vote_is_quarantined(workflow, change):
    """Reliability B5 across imports and syncs: the stored row is the first copy."""
    ingest(workflow, [record(1)])
    counts = ingest(workflow, [record(1, line=7, **change), record(2)])
    assert (counts.created, counts.unchanged, counts.quarantined) == (1, 0, 1)
    [(line, record_id, field, reason)] = quarantined()
    assert (line, record_id, field) == (7, "1", "classification_id")
    assert reason.startswith("classification_id_conflict") and "stored" in reason
    stored = Classification.objects.select_related("subject").get(zooniverse_id=1)
    assert stored.subject.zooniverse_id == record(1).subject_ids[0]


def test_the_same_vote_from_the_api_after_the_export_is_unchanged_not_a_conflict(workflow):
    """An export row and the API's copy differ in how they say it (labels, indices, seconds)."""
    ingest(workflow, [record(1, answers=["Painting"], source="export")])
    counts = ingest(
        workflow,
        [record(1, answers=[0], source="api", created_at=T0 + timedelta(minutes=1, seconds=0.25))],
    )
    assert (counts.created, counts.unchanged, counts.quarantined) == (0, 1, 0)


# --- re-running an import quarantines nothing twice --------------------------------------------


def _bad_classification_export(tmp_path: Path) -> Path:
    return write_export(
        tmp_path / "cls.csv",
        [
            export_row(1),
            "2,too,few,columns",  # a malformed row: no id to go by, only its line
            export_row(3, workflow_version="9.9"),  # an unknown version
            export_row(4, subject_ids="11;12"),  # several subjects
            export_row(1, subject_ids="96588199"),  # the first id again, about another subject
        ],
    )


def test_reimporting_a_classification_export_adds_no_quarantined_row(workflow, tmp_path):
    """Reliability B1, B5: the second run is a no-op, the quarantine table included; its report
    still counts the rows it refused and says they were quarantined before."""
    path = _bad_classification_export(tmp_path)
    run_import(path, "--workflow-id", "7")
    first = quarantined()
    assert [reason.partition(":")[0] for *_, reason in first] == [
        "column_count",
        "unknown_workflow_version",
        "multi_subject_unsupported",
        "classification_id_conflict",
    ]
    summary = run_import(path, "--workflow-id", "7")
    assert "created 0" in summary and "quarantined 4" in summary
    assert quarantined() == first
    again = ImportReport.objects.order_by("-id").first()
    assert again.quarantined == 4 and "4 rows quarantined before" in again.message


def test_a_resync_of_the_same_page_adds_no_quarantined_row(workflow):
    page = [record(1, subject_ids=[11, 12]), record(2, workflow_version="9.9")]
    ingest(workflow, page)
    ingest(workflow, page)
    assert QuarantinedRow.objects.count() == 2


def test_another_file_with_the_same_bad_line_is_quarantined_again(workflow, tmp_path):
    """Rows without an id are known by their file and line: another file is other evidence."""
    rows = [export_row(1), "2,too,few,columns"]
    run_import(write_export(tmp_path / "a.csv", rows), "--workflow-id", "7")
    run_import(write_export(tmp_path / "b.csv", rows), "--workflow-id", "7")
    assert [line for line, *_ in quarantined()] == [3, 3]


def test_reimporting_a_subject_export_adds_no_quarantined_row(concepts):
    from django.core.management import call_command

    export = Path(__file__).parent / "fixtures" / "subjects" / "subject_export.csv"
    for _ in range(2):
        call_command("import_subjects", str(export), "--no-fetch", stdout=io.StringIO(),
                     stderr=io.StringIO())  # fmt: skip
    assert sorted(line for line, *_ in quarantined()) == [6, 7, 8]


def test_reimporting_an_item_manifest_adds_no_quarantined_row(concepts, tmp_path):
    from annotate.services.items import items_import

    path = tmp_path / "manifest.csv"
    lines = ["external_id,image,title,prior_labels", "ok,https://example.org/a.jpg,,"]
    lines += ["bad,https://example.org/b.jpg,,unicorn", ",https://example.org/c.jpg,,"]
    path.write_text("\n".join(lines) + "\n")
    items_import(path=path)
    first = quarantined()
    assert [line for line, *_ in first] == [3, 4]
    _, counts = items_import(path=path)
    assert counts.quarantined == 2
    assert quarantined() == first


# --- B7: one anonymous volunteer, whichever source brings the votes ----------------------------

SESSION = "7a1f4a17d190291faa1824be3b3febf1d8b77a4f2d25dd6f191f76ef335684bf"


def _api_payload(cid: int, *, session: str = SESSION, subject: int = 96588101) -> dict:
    """A classification as the Panoptes API gives it: no user link, the session in metadata."""
    return {
        "id": str(cid),
        "created_at": "2024-02-23T16:30:42.000Z",
        "annotations": [{"task": "T0", "value": [0]}],
        "metadata": {"session": session, "workflow_version": "3.1"},
        "links": {"workflow": "7", "subjects": [str(subject)], "user": None},
    }


def _anonymous_export_row(cid: int, *, session: str = SESSION) -> dict[str, str]:
    return export_row(
        cid,
        user_id="",
        user_name="not-logged-in-b644753d0e3948f81dc2",
        metadata=json.dumps({"source": "api", "session": session}),
    )


def test_an_anonymous_volunteer_is_one_volunteer_in_an_export_and_in_the_api_b7(workflow, tmp_path):
    """Reliability B7: the export names a logged-out volunteer by hashed IP, the API by nothing;
    both carry the browser session, and the session is the key, so the same person's votes
    from either source are one volunteer's."""
    from annotate.services.zooniverse.pull import classification_record

    run_import(write_export(tmp_path / "cls.csv", [_anonymous_export_row(1)]), "--workflow-id", "7")
    ingest(workflow, [classification_record(_api_payload(2), task_key="T0")])
    volunteer = Volunteer.objects.get()
    assert not volunteer.logged_in
    assert sorted(volunteer.classifications.values_list("zooniverse_id", flat=True)) == [1, 2]
    assert volunteer.n_classifications == 2


def test_the_same_anonymous_classification_from_both_sources_is_one_row_of_one_volunteer(
    workflow, tmp_path
):
    """Reliability B5, B7: synced first, then exported: one row, and no conflict."""
    from annotate.services.zooniverse.pull import classification_record

    ingest(workflow, [classification_record(_api_payload(1, subject=96588101), task_key="T0")])
    summary = run_import(
        write_export(tmp_path / "cls.csv", [_anonymous_export_row(1)]), "--workflow-id", "7"
    )
    assert "unchanged 1" in summary and "quarantined 0" in summary
    assert Volunteer.objects.count() == Classification.objects.count() == 1


def test_two_sessions_behind_one_hashed_ip_are_two_volunteers_never_merged_by_ip_b7(
    workflow, tmp_path
):
    rows = [_anonymous_export_row(1, session="s1"), _anonymous_export_row(2, session="s2")]
    run_import(write_export(tmp_path / "cls.csv", rows), "--workflow-id", "7")
    assert Volunteer.objects.count() == 2


def test_without_a_session_an_exported_anonymous_vote_keeps_the_hashed_ip_name(workflow):
    ingest(workflow, [record(1, user_id=None, user_name="not-logged-in-abc", session="")])
    assert Volunteer.objects.get().key == "anon:not-logged-in-abc"


# --- S4: another project's votes --------------------------------------------------------------


def test_another_projects_votes_are_neither_stored_nor_attributed_nor_listed_s4(workflow, people):
    """Reliability S4, as it applies here: a deployment serves one Zooniverse project
    (``PANOPTES_PROJECT_ID``; design.md), so there are no other tenants to hide from users.
    Another project's votes can only arrive mixed into an input, as rows of workflows that are
    not this one's (a project-wide export, a page of another workflow): they are counted and
    skipped, never stored, never attributed to a subject, item or volunteer of ours, so no API
    list shows them and no detail path finds them."""
    from annotate.models import Item, Subject
    from tests.clients import as_user

    item = Item.objects.create(external_id="item-500")
    ours = record(1, subject_ids=[500], subject_metadata={500: {"external_id": "item-500"}})
    theirs = [
        record(cid, workflow_id=99, subject_ids=[500], user_id=7000 + cid, user_name="stranger")
        for cid in (2, 3)
    ]
    counts = ingest(workflow, [theirs[0], ours, theirs[1]])
    assert (counts.created, counts.other_workflows) == (1, {99: 2})
    assert list(Classification.objects.values_list("zooniverse_id", flat=True)) == [1]
    assert not Volunteer.objects.filter(zooniverse_user_id__gte=7000).exists()
    assert Subject.objects.get(zooniverse_id=500).classifications.count() == 1
    item.refresh_from_db()
    assert item.n_classifications == 1

    viewer = as_user(people["viewer"])
    listed = viewer.get("/api/v1/volunteers/").json()["results"]
    assert [v["user_name"] for v in listed] == [ours.user_name]
    assert viewer.get(f"/api/v1/items/{item.pk}/").json()["n_classifications"] == 1
