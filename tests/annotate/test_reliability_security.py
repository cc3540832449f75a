"""Security cases of the matrix checked end to end (reliability S11, S12, S16, S17): hostile paths
in item data never name a file we read or write, no code path can unpickle a checkpoint, a new
account without a role sees nothing, and files we serve are attachments or checked images."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from annotate.models import AggregatedLabel, DatasetRelease, Item
from annotate.services.media import image_path, image_store
from annotate.services.releases import release_file_path, release_request
from tests.clients import as_user
from tests.images import HTML_BYTES, SVG_BYTES, png_bytes

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
HOSTILE_PATHS = [
    "../../etc/passwd",
    "/etc/passwd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "items/../../../etc/passwd",
    "items/link.png",  # a symlink to /etc/passwd, made below
]


@pytest.fixture
def hostile_items(concepts):
    media = Path(settings.MEDIA_ROOT)
    (media / "items").mkdir(parents=True, exist_ok=True)
    (media / "items" / "link.png").symlink_to("/etc/passwd")
    good = image_store(data=png_bytes())
    items = [
        Item.objects.create(
            external_id=f"../../etc/{n}",
            title="../../etc/passwd",
            image_file=path,
            image_state="ok",
            metadata={"locations": ["/etc/passwd", "%2e%2e%2f"], "file_name": "../../x.png"},
        )
        for n, path in enumerate([*HOSTILE_PATHS, good.image_file])
    ]
    for item in items:
        AggregatedLabel.objects.create(
            item=item, concept=concepts["painting"], posterior=0.97, votes_for=5, votes_against=0,
            method="majority",
        )  # fmt: skip
    return items


@pytest.mark.parametrize("relative", HOSTILE_PATHS[:4] + ["items/link.png"])
def test_s11_a_stored_path_that_would_leave_the_media_folder_is_refused(relative):
    media = Path(settings.MEDIA_ROOT)
    (media / "items").mkdir(parents=True, exist_ok=True)
    if relative == "items/link.png":
        (media / "items" / "link.png").symlink_to("/etc/passwd")
    if relative.startswith("%2e"):
        # Percent-escapes are not decoded: the name stays inside, as a file that does not exist.
        assert image_path(relative).is_relative_to(media.resolve())
        assert not image_path(relative).exists()
        return
    with pytest.raises(ValueError, match="leaves the media root"):
        image_path(relative)


def test_s11_a_release_names_its_files_from_our_ids_and_never_copies_from_outside(
    hostile_items, admin_user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        release = release_request(user=admin_user)
    release.refresh_from_db()
    assert release.status == DatasetRelease.Status.SUCCEEDED, release.error

    ids = {item.pk for item in hostile_items}
    with zipfile.ZipFile(release_file_path(release, "imagefolder")) as zf:
        names = zf.namelist()
        images = [n for n in names if not n.endswith("metadata.jsonl")]
        assert images and all(
            re.fullmatch(r"(train|validation|test)/(\d+)\.(png|jpg|webp|gif)", n) for n in images
        ), names
        assert {int(re.search(r"/(\d+)\.", n).group(1)) for n in images} <= ids
        assert len(images) == 1  # only the item whose image really is ours
        passwd = Path("/etc/passwd").read_bytes()
        assert all(zf.read(n) != passwd for n in images)
    release_root = release_file_path(release, "manifest").parent
    for path in release_root.rglob("*"):
        assert path.resolve().is_relative_to(release_root.resolve())


def test_s12_no_code_path_can_turn_the_safe_loader_off_or_call_torch_load_without_it():
    sources = [
        path
        for package in ("annotate", "config", "loop", "ml", "review", "training", "broker")
        for path in (ROOT / package).rglob("*.py")
    ]
    sources += list((ROOT / "bench").glob("*.py"))
    assert len(sources) > 50
    for source in sources:
        text = source.read_text()
        assert "weights_only=" + "False" not in text, source
        for call in re.finditer(r"torch\.load\(", text):
            statement = text[call.start() : text.find(")", call.end()) + 1]
            assert "weights_only=True" in statement, (source, statement)


def test_s16_a_fresh_account_gets_no_role_and_reaches_nothing(people, django_user_model):
    fresh = django_user_model.objects.create_user("newcomer", password="a-long-test-password")
    assert not fresh.groups.exists() and not fresh.is_staff
    assert not fresh.get_all_permissions()
    client = as_user(fresh)
    for path in ("/api/v1/items/", "/api/v1/labels/", "/api/v1/volunteers/",
                 "/api/v1/training-runs/", "/api/v1/model-versions/", "/api/v1/loop/",
                 "/api/v1/releases/"):  # fmt: skip
        assert client.get(path).status_code == 403, path
    browser = Client()
    browser.force_login(fresh)
    assert browser.get("/admin/").status_code == 302  # to the login page: not staff
    assert browser.get(reverse("review:queue")).status_code in (302, 403)


def test_s17_the_admin_download_is_an_attachment_never_sniffed(
    hostile_items, django_user_model, django_capture_on_commit_callbacks
):
    boss = django_user_model.objects.create_superuser("boss", "boss@example.org")
    with django_capture_on_commit_callbacks(execute=True):
        release = release_request(user=boss)
    client = Client()
    client.force_login(boss)
    for what in ("csv", "jsonl", "webannotation", "imagefolder", "manifest"):
        url = reverse("admin:annotate_datasetrelease_download", args=[release.pk, what])
        response = client.get(url)
        assert response.status_code == 200, what
        assert response["Content-Disposition"].startswith("attachment;"), what
        assert response["X-Content-Type-Options"] == "nosniff"
        assert not response["Content-Type"].startswith(("text/html", "image/svg"))
    traversal = reverse("admin:annotate_datasetrelease_download", args=[release.pk, "passwd"])
    assert client.get(traversal).status_code == 404


@pytest.mark.parametrize("data", [SVG_BYTES, HTML_BYTES, b"<svg onload=alert(1)>" + png_bytes()])
def test_s17_svg_and_html_are_never_stored_so_never_served(data):
    from ml import images

    with pytest.raises(images.ImageError):
        image_store(data=data)
    assert not [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]


def test_s17_stored_images_are_served_under_their_checked_type_with_nosniff(rf):
    """Media responses pass the security middleware, which marks every response nosniff; the
    stored names carry the extension of the format that was checked, never the sender's."""
    from django.middleware.security import SecurityMiddleware
    from django.views.static import serve

    stored = image_store(data=png_bytes())
    assert re.fullmatch(r"items/[0-9a-f]{2}/[0-9a-f]{64}\.png", stored.image_file)
    assert re.fullmatch(r"thumbs/[0-9a-f]{2}/[0-9a-f]{64}\.jpg", stored.thumbnail)
    for relative, kind in ((stored.image_file, "image/png"), (stored.thumbnail, "image/jpeg")):
        view = SecurityMiddleware(
            lambda request, relative=relative: serve(
                request, relative, document_root=settings.MEDIA_ROOT
            )
        )
        response = view(rf.get(f"/media/{relative}"))
        assert response.status_code == 200
        assert response["Content-Type"] == kind
        assert response["X-Content-Type-Options"] == "nosniff"


DANGEROUS = ['=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0", "-1+1", "@SUM(1)",
             "\t=1"]  # fmt: skip


def _cells(path: Path) -> list[str]:
    import csv

    with path.open(newline="") as fh:
        return [cell for row in csv.reader(fh) for cell in row]


def test_s10_every_text_field_of_an_export_is_escaped_in_csv_and_raw_in_jsonl(concepts, tmp_path):
    import json

    from annotate.services.datasets.export import dataset_export

    for n, text in enumerate(DANGEROUS):
        item = Item.objects.create(
            external_id=f"{text}#{n}", title=text, provider=text, rights=text,
            metadata={"item_uri": text},
        )  # fmt: skip
        AggregatedLabel.objects.create(
            item=item, concept=concepts["painting"], posterior=0.95, votes_for=4, votes_against=0,
            method="majority",
        )  # fmt: skip
    dataset_export(fmt="csv", out=tmp_path / "labels.csv")
    dataset_export(fmt="jsonl", out=tmp_path / "labels.jsonl")

    cells = _cells(tmp_path / "labels.csv")
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r", "\0"))]
    for text in DANGEROUS:
        assert "'" + text in cells
    lines = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert sorted(line["external_id"] for line in lines) == sorted(
        f"{text}#{n}" for n, text in enumerate(DANGEROUS)
    )


def test_s10_the_round_picks_csv_of_select_round_escapes_item_ids(db, tmp_path):
    from django.core.management import call_command

    from tests.training.builders import write_mosaic_items

    mosaic = write_mosaic_items(12)
    for n, pk in enumerate(mosaic.item_ids):
        Item.objects.filter(pk=pk).update(external_id=f"{DANGEROUS[n % len(DANGEROUS)]}#{n}")
    out = tmp_path / "picks.csv"
    call_command("select_round", "--size", "6", "--out", str(out), stdout=io.StringIO())

    cells = _cells(out)
    assert len(cells) >= 4 * 7
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r", "\0"))]
    assert any(c.startswith("'") and c.lstrip("'").startswith(tuple(d[0] for d in DANGEROUS))
               for c in cells)  # fmt: skip
