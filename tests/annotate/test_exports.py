"""Exports and releases: every format valid, filters honoured, releases immutable, edges empty."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotate.models import (
    AggregatedLabel,
    DatasetRelease,
    Item,
    ReleaseImmutableError,
    Review,
    Subject,
)
from annotate.services.datasets.export import dataset_export
from annotate.services.datasets.records import ExportFilters, export_records, item_uri, split_of
from annotate.services.datasets.writers import W3C_CONTEXT
from annotate.services.releases import (
    release_build,
    release_file_path,
    release_request,
    release_verify,
)
from tests.annotate.export_pool import label, read_jsonl

pytestmark = pytest.mark.django_db


def test_jsonl_lines_have_the_contract_shape_and_final_labels(pool, tmp_path):
    result = dataset_export(fmt="jsonl", out=tmp_path / "labels.jsonl")
    lines = {line["external_id"]: line for line in read_jsonl(tmp_path / "labels.jsonl")}
    assert set(lines) == {"/2021672/resource_a", "local-b", "local-c"}  # rejected, unvoted out
    a = lines["/2021672/resource_a"]
    assert set(a) >= {"external_id", "image", "labels", "scores", "source", "n_classifications"}
    assert a["labels"] == ["painting"]
    assert a["scores"] == {"painting": 0.98, "photograph": 0.01}
    assert (a["source"], a["n_classifications"]) == ("crowd", 5)
    assert lines["local-b"]["labels"] == ["painting"]
    assert lines["local-b"]["image"] == "https://images.example.org/b.jpg"
    assert (lines["local-c"]["labels"], lines["local-c"]["source"]) == (["map"], "curator")
    assert result.n_items == 3
    assert result.counts == {"map": 1, "painting": 2}


def test_s10_jsonl_keeps_formula_like_text_raw_while_csv_escapes_it(concepts, tmp_path):
    item = Item.objects.create(external_id="@SUM(1)", image_url="https://x.example/=1.png")
    label(item, concepts["painting"], 0.9)
    dataset_export(fmt="jsonl", out=tmp_path / "l.jsonl")
    dataset_export(fmt="csv", out=tmp_path / "l.csv")
    assert read_jsonl(tmp_path / "l.jsonl")[0]["external_id"] == "@SUM(1)"
    [row] = list(csv.DictReader((tmp_path / "l.csv").open(newline="")))
    assert row["external_id"] == "'@SUM(1)"


def test_csv_round_trips_and_escapes_formula_cells(pool, tmp_path):
    dataset_export(fmt="csv", out=tmp_path / "labels.csv")
    with (tmp_path / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_id = {r["external_id"]: r for r in rows}
    assert (
        by_id["/2021672/resource_a"]["title"] == "'" + '=HYPERLINK("http://evil.example","click")'
    )
    assert by_id["local-c"]["title"] == "'-1+1"
    assert by_id["/2021672/resource_a"]["painting"] == "0.98"
    assert by_id["local-c"]["labels"] == "map"
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r", "\0"))


def test_web_annotations_carry_the_w3c_context_and_types(pool, concepts, tmp_path):
    dataset_export(fmt="webannotation", out=tmp_path / "a.jsonld")
    annotations = json.loads((tmp_path / "a.jsonld").read_text())
    assert len(annotations) == 3  # one per item x concept of the final labels
    for annotation in annotations:
        assert annotation["@context"] == W3C_CONTEXT
        assert annotation["type"] == "Annotation"
        assert annotation["motivation"] == "tagging"
        assert annotation["creator"]["type"] == "Software"
        assert annotation["generator"]["name"] == "crowdloop"
    targets = {a["target"]: a["body"] for a in annotations}
    assert targets["http://data.europeana.eu/item/2021672/resource_a"] == concepts["painting"].uri
    assert targets["https://collection.example.org/b"] == concepts["painting"].uri
    assert targets["urn:crowdloop:item:local-c"] == concepts["map"].uri


def test_imagefolder_metadata_references_files_that_exist(pool, tmp_path):
    out = tmp_path / "folder"
    result = dataset_export(fmt="imagefolder", out=out)
    assert result.skipped_images == 2  # b and c have no stored image
    lines = []
    for split in ("train", "validation", "test"):
        meta = out / split / "metadata.jsonl"
        assert meta.exists()
        for line in read_jsonl(meta):
            assert (out / split / line["file_name"]).is_file()
            assert line["file_name"] == f"{pool['a'].pk}.png"
            lines.append(line)
    assert len(lines) == 1
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["files"]:
        assert hashlib.sha256((out / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]


def test_filters_reviewed_only_min_confidence_and_concepts(pool, tmp_path):
    reviewed = list(export_records(ExportFilters(reviewed_only=True)))
    assert [r.external_id for r in reviewed] == ["local-c"]
    confident = list(export_records(ExportFilters(min_confidence=0.9)))
    assert [r.external_id for r in confident] == ["/2021672/resource_a", "local-c"]
    maps = list(export_records(ExportFilters(concepts=("map",))))
    assert {r.external_id: r.labels for r in maps} == {
        "/2021672/resource_a": [],
        "local-b": [],
        "local-c": ["map"],
    }
    assert all(set(r.scores) <= {"map"} for r in maps)
    with pytest.raises(ValueError, match="unknown concepts"):
        list(export_records(ExportFilters(concepts=("nope",))))
    with pytest.raises(ValueError):
        ExportFilters(min_confidence=0.2)


def test_items_whose_subjects_were_deleted_upstream_are_left_out(pool):
    Subject.objects.create(zooniverse_id=1, item=pool["b"], upstream_state="deleted")
    assert "local-b" not in [r.external_id for r in export_records(ExportFilters())]


def test_the_export_reads_a_few_queries_per_chunk_not_per_item(
    concepts, django_assert_max_num_queries
):
    items = Item.objects.bulk_create(Item(external_id=f"i{i}") for i in range(60))
    AggregatedLabel.objects.bulk_create(
        AggregatedLabel(item=i, concept=concepts["painting"], posterior=0.9, method="m")
        for i in items
    )
    with django_assert_max_num_queries(2 + 4 * 4):
        records = list(export_records(ExportFilters(), chunk_size=20))
    assert len(records) == 60


def test_the_split_is_stable_and_agrees_with_the_training_split():
    pytest.importorskip("torch")
    from ml.splits import stable_split

    ids = [f"/9200/item_{i}" for i in range(500)]
    names = {"train": "train", "val": "validation", "test": "test"}
    assert [split_of(i) for i in ids] == [names[s] for s in stable_split(ids)]


def test_item_uris_prefer_metadata_then_europeana_then_our_own_urn():
    assert item_uri("x", {"item_uri": "https://a.example/x"}) == "https://a.example/x"
    assert item_uri("/1/abc", {}) == "http://data.europeana.eu/item/1/abc"
    assert item_uri("../../etc/passwd", {"item_uri": "javascript:alert(1)"}).startswith(
        "urn:crowdloop:item:..%2F"
    )


def test_an_empty_pool_gives_valid_empty_files_and_a_manifest(db, tmp_path):
    for fmt, name in (("csv", "e.csv"), ("jsonl", "e.jsonl"), ("webannotation", "e.jsonld")):
        result = dataset_export(fmt=fmt, out=tmp_path / name)
        assert result.n_items == 0
        manifest = json.loads((tmp_path / f"{name}.manifest.json").read_text())
        assert manifest["n_items"] == 0 and manifest["counts"] == {}
    assert json.loads((tmp_path / "e.jsonld").read_text()) == []
    assert (tmp_path / "e.jsonl").read_text() == ""
    assert len(list(csv.reader((tmp_path / "e.csv").open()))) == 1  # the header
    dataset_export(fmt="imagefolder", out=tmp_path / "f")
    assert (tmp_path / "f" / "train" / "metadata.jsonl").read_text() == ""
    assert json.loads((tmp_path / "f" / "manifest.json").read_text())["n_items"] == 0


def test_the_command_follows_the_contract_and_prints_one_line(pool, tmp_path):
    out = io.StringIO()
    call_command(
        "export_dataset",
        "--format",
        "jsonl",
        "--out",
        str(tmp_path / "x.jsonl"),
        "--reviewed-only",
        stdout=out,
    )
    assert out.getvalue().count("\n") == 1 and "exported 1 items" in out.getvalue()
    with pytest.raises(CommandError):
        call_command("export_dataset", "--format", "jsonl")
    with pytest.raises(CommandError):
        call_command(
            "export_dataset", "--format", "csv", "--out", str(tmp_path / "y"), "--concepts", "nope"
        )


# --- releases -------------------------------------------------------------------------------------


def test_a_release_is_built_in_all_formats_with_a_manifest_whose_hashes_match(
    pool, admin_user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        release = release_request(user=admin_user, note="first")
    release.refresh_from_db()
    assert release.status == DatasetRelease.Status.SUCCEEDED, release.error
    assert (release.version, release.n_items, release.created_by) == (1, 3, admin_user)
    assert release.counts == {"map": 1, "painting": 2}
    assert release.lineage["aggregation_methods"] == ["dawid_skene"]
    assert len(release.content_hash) == 64
    assert release_verify(release) == []
    names = {f["path"] for f in release.manifest["files"]}
    assert names == {"labels.csv", "labels.jsonl", "annotations.jsonld", "imagefolder.zip"}
    with zipfile.ZipFile(release_file_path(release, "imagefolder")) as zf:
        members = set(zf.namelist())
        assert {
            "train/metadata.jsonl",
            "validation/metadata.jsonl",
            "test/metadata.jsonl",
        } <= members
        for split in ("train", "validation", "test"):
            for line in zf.read(f"{split}/metadata.jsonl").decode().splitlines():
                assert f"{split}/{json.loads(line)['file_name']}" in members
    manifest = json.loads(release_file_path(release, "manifest").read_text())
    assert manifest["content_hash"] == release.content_hash


def test_a_written_release_never_changes(pool, admin_user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        release = release_request(user=admin_user)
    release.refresh_from_db()
    release.note = "rewritten"
    with pytest.raises(ReleaseImmutableError):
        release.save()
    with pytest.raises(ReleaseImmutableError):
        release.delete()
    # Running the job again is a no-op.
    outcome = release_build(release_id=release.pk)
    assert (outcome.built, outcome.status) == (False, "succeeded")


def test_a_second_release_gets_the_next_version_and_the_same_content_hash(
    pool, admin_user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = release_request(user=admin_user)
        second = release_request(user=admin_user, formats=["csv"])
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.version, second.version) == (1, 2)
    assert first.content_hash == second.content_hash
    assert {f["path"] for f in second.manifest["files"]} == {"labels.csv"}
    with pytest.raises(FileNotFoundError):
        release_file_path(second, "jsonl")


def test_a_release_of_an_empty_pool_is_valid(db, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        release = release_request(user=None)
    release.refresh_from_db()
    assert (release.status, release.n_items) == ("succeeded", 0)
    assert release_verify(release) == []


def test_downloads_cannot_leave_the_release_folder(
    pool, admin_user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        release = release_request(user=admin_user)
    release.refresh_from_db()
    for what in ("../../etc/passwd", "/etc/passwd", "%2e%2e%2f", "labels.csv", ""):
        with pytest.raises(FileNotFoundError):
            release_file_path(release, what)


def test_a_release_that_fails_is_marked_failed(
    pool, admin_user, monkeypatch, django_capture_on_commit_callbacks
):
    from annotate.services import releases

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(releases, "_zip_folder", boom)
    with django_capture_on_commit_callbacks(execute=True):
        release = release_request(user=admin_user)
    release.refresh_from_db()
    assert release.status == "failed" and "disk full" in release.error
    assert not list(releases.releases_root().glob(".*tmp"))


def test_the_command_makes_a_release(pool, django_capture_on_commit_callbacks):
    out = io.StringIO()
    # Outside a test transaction the build starts as soon as the row commits (eager without Redis).
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "export_dataset", "--release", "--format", "jsonl", "--format", "csv", stdout=out
        )
    assert out.getvalue().startswith("export_dataset release 1")
    release = DatasetRelease.objects.get()
    assert (release.status, release.n_items, release.formats) == ("succeeded", 3, ["jsonl", "csv"])


def test_a_curator_decision_lands_in_the_next_export(pool, admin_user, tmp_path):
    from annotate.services.review import review_record

    review_record(item=pool["b"], curator=admin_user, action="edit", concepts=["map"])
    lines = {r.external_id: r for r in export_records(ExportFilters())}
    assert (lines["local-b"].labels, lines["local-b"].source) == (["map"], "curator")
    assert Review.objects.count() == 1


# --- the admin ------------------------------------------------------------------------------------


def admin_client_for(role: str, django_user_model):
    from django.contrib.auth.models import Group
    from django.test import Client

    from annotate.roles import roles_setup

    roles_setup()
    user = django_user_model.objects.create_user(f"{role}-user", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def assert_admin_downloads_match_the_manifest(client, release: DatasetRelease) -> None:
    """Every format and the manifest download from the release's admin page, as attachments, and
    each file's sha256 is the one the downloaded manifest states."""
    page = client.get(f"/admin/annotate/datasetrelease/{release.pk}/change/").content.decode()
    names = {
        "csv": "labels.csv",
        "jsonl": "labels.jsonl",
        "webannotation": "annotations.jsonld",
        "imagefolder": "imagefolder.zip",
        "manifest": "manifest.json",
    }
    bodies = {}
    for what in names:
        url = f"/admin/annotate/datasetrelease/{release.pk}/download/{what}/"
        assert url in page, what
        response = client.get(url)
        assert response.status_code == 200, what
        assert response["Content-Disposition"].startswith("attachment;")
        assert response["X-Content-Type-Options"] == "nosniff"
        bodies[what] = b"".join(response.streaming_content)
    manifest = json.loads(bodies.pop("manifest"))
    hashes = {f["path"]: f["sha256"] for f in manifest["files"]}
    assert set(hashes) == {names[what] for what in bodies}
    for what, body in bodies.items():
        assert hashlib.sha256(body).hexdigest() == hashes[names[what]], what
    assert manifest == release.manifest
    bad = client.get(f"/admin/annotate/datasetrelease/{release.pk}/download/passwd/")
    assert bad.status_code == 404


def test_a_release_made_from_the_admin_downloads_in_all_four_formats(
    pool, django_user_model, django_capture_on_commit_callbacks
):
    client = admin_client_for("staff", django_user_model)
    assert client.get("/admin/annotate/datasetrelease/add/").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/admin/annotate/datasetrelease/add/",
            {
                "release_formats": ["csv", "jsonl", "webannotation", "imagefolder"],
                "concepts": ["painting", "map"],
                "note": "from the admin",
            },
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    release = DatasetRelease.objects.get()
    assert release.status == "succeeded", release.error
    assert sorted(release.filters["concepts"]) == ["map", "painting"]
    assert_admin_downloads_match_the_manifest(client, release)


def test_a_release_made_by_the_admin_action_downloads_in_all_four_formats(
    pool, django_user_model, django_capture_on_commit_callbacks
):
    client = admin_client_for("staff", django_user_model)
    with django_capture_on_commit_callbacks(execute=True):
        first = release_request(user=None, reviewed_only=True)  # every format
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/admin/annotate/datasetrelease/",
            {"action": "release_again", "_selected_action": [first.pk]},
        )
    assert response.status_code == 302
    again = DatasetRelease.objects.get(version=2)
    assert again.status == "succeeded", again.error
    assert (again.filters["reviewed_only"], again.n_items) == (True, 1)
    assert sorted(again.formats) == ["csv", "imagefolder", "jsonl", "webannotation"]
    assert_admin_downloads_match_the_manifest(client, again)


def test_a_curator_cannot_make_a_release_in_the_admin(pool, django_user_model):
    client = admin_client_for("curator", django_user_model)
    assert client.get("/admin/annotate/datasetrelease/add/").status_code == 403
    response = client.post(
        "/admin/annotate/datasetrelease/add/", {"release_formats": ["csv"], "note": "x"}
    )
    assert response.status_code == 403
    assert DatasetRelease.objects.count() == 0


def test_the_admin_action_repeats_a_release_with_its_filters(
    pool, django_user_model, django_capture_on_commit_callbacks
):
    client = admin_client_for("staff", django_user_model)
    with django_capture_on_commit_callbacks(execute=True):
        first = release_request(user=None, reviewed_only=True, formats=["jsonl"])
        response = client.post(
            "/admin/annotate/datasetrelease/",
            {"action": "release_again", "_selected_action": [first.pk]},
        )
    assert response.status_code == 302
    second = DatasetRelease.objects.get(version=2)
    assert (second.filters["reviewed_only"], second.formats) == (True, ["jsonl"])
    assert second.status == "succeeded" and second.n_items == 1


def test_a_release_whose_build_cannot_be_queued_says_so(
    pool, monkeypatch, django_capture_on_commit_callbacks
):
    from kombu.exceptions import OperationalError

    from annotate import tasks

    def down(**kwargs):
        raise OperationalError("Error 111 connecting to redis:6379. Connection refused.")

    monkeypatch.setattr(tasks.release_build_task, "delay", down)
    with django_capture_on_commit_callbacks(execute=True):
        release = release_request(user=None)
    release.refresh_from_db()
    assert release.status == "failed" and "unreachable" in release.error
