"""Which images are shown to people, and an item's identity.

Reliability S13: an ``<img>`` only for an https source on a host of IMAGE_HOSTS, else the stored
copy or nothing; the Content-Security-Policy's img-src lists exactly the same hosts.
Reliability S8 (display side): an internal address (169.254.169.254, 127.0.0.1:6379) never
reaches a browser as an image source.
Reliability S21: an item's identity cannot be edited in the admin, and a re-import that changes it
is audited with the old and the new value.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.urls import reverse

from annotate.models import ImportReport, Item, ItemIdentityChange
from annotate.services.item_images import item_image_src
from annotate.services.items import items_import
from tests.factories import item_with_labels
from tests.images import png_bytes
from tests.settings_env import settings_in_subprocess

pytestmark = pytest.mark.django_db

ALLOWED = ("images.example.org", "*.museum.example")
UNSAFE_SOURCES = (
    "http://169.254.169.254/latest/meta-data/x.png",
    "https://169.254.169.254/latest/meta-data/x.png",
    "http://127.0.0.1:6379/x.png",
    "https://127.0.0.1:6379/x.png",
    "https://[::ffff:127.0.0.1]/x.png",
    "http://images.example.org/x.png",  # plain http, even on an allowed host
    "https://images.example.org:8443/x.png",  # another port than the policy allows
    "https://images.example.org@evil.example/x.png",
    "https://evil.example/images.example.org/x.png",
    "https://images.example.org.evil.example/x.png",
    "https://museum.example/x.png",  # the wildcard names subdomains only, as in a CSP
    "https://evilmuseum.example/x.png",
    "javascript:alert(1)",
)


def img_sources(html: str) -> list[str]:
    return re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", html)


# --- item_image_src ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://images.example.org/full/1.jpg",
        "https://IMAGES.example.org/full/1.jpg",
        "https://a.museum.example/1.jpg",
        "https://a.b.museum.example:443/1.jpg",
    ],
)
def test_an_https_image_on_an_allowed_host_is_shown_from_its_source(settings, url):
    settings.IMAGE_HOSTS = ALLOWED
    item = Item(external_id="x", image_url=url)
    assert item_image_src(item) == url
    assert item_image_src(item, large=True) == url


@pytest.mark.parametrize("url", UNSAFE_SOURCES)
def test_an_image_on_any_other_host_or_scheme_is_not_shown_until_it_is_stored(settings, url):
    settings.IMAGE_HOSTS = ALLOWED
    item = Item(external_id="x", image_url=url)
    assert item_image_src(item) == ""
    assert item_image_src(item, large=True) == ""


def test_without_image_hosts_no_remote_image_is_shown(settings):
    settings.IMAGE_HOSTS = ()
    item = Item(external_id="x", image_url="https://images.example.org/full/1.jpg")
    assert item_image_src(item) == "" and item_image_src(item, large=True) == ""


@pytest.mark.parametrize("url", [*UNSAFE_SOURCES, "https://images.example.org/full/1.jpg"])
def test_the_stored_copy_is_shown_whatever_the_source(settings, url):
    settings.IMAGE_HOSTS = ALLOWED
    both = Item(external_id="x", image_url=url, image_file="items/ab/a.jpg", thumbnail="t/a.jpg")
    assert item_image_src(both) == "/media/t/a.jpg"
    assert item_image_src(both, large=True) == "/media/items/ab/a.jpg"
    only_file = Item(external_id="y", image_url=url, image_file="items/ab/a.jpg")
    assert item_image_src(only_file) == "/media/items/ab/a.jpg"


# --- the screens -------------------------------------------------------------------------------


@pytest.fixture
def unsafe_items(concepts):
    return [
        item_with_labels(concepts, f"unsafe-{n}", {"painting": 0.6}, image_url=url)
        for n, url in enumerate(
            [
                "http://169.254.169.254/latest/meta-data/x.png",
                "http://127.0.0.1:6379/x.png",
                "https://not-allowed.example/x.png",
            ]
        )
    ]


def assert_only_allowed_images(html: str) -> None:
    sources = img_sources(html)
    bad = [s for s in sources if "://" in s and not s.startswith("https://images.example.org/")]
    assert bad == [], bad


def test_no_screen_shows_an_image_from_a_host_not_allowed(
    settings, admin_client, curator_client, concepts, unsafe_items
):
    settings.IMAGE_HOSTS = ("images.example.org",)
    allowed = item_with_labels(
        concepts, "allowed", {"painting": 0.6}, image_url="https://images.example.org/a.jpg"
    )
    pages = [
        admin_client.get(reverse("admin:annotate_item_changelist")),
        curator_client.get(reverse("review:queue")),
        curator_client.get(reverse("review:queue") + "?view=grid"),
    ]
    pages += [
        client.get(reverse(name, args=[item.pk]))
        for item in unsafe_items
        for client, name in (
            (admin_client, "admin:annotate_item_change"),
            (curator_client, "review:item"),
        )
    ]
    for page in pages:
        assert page.status_code == 200
        html = page.content.decode()
        assert_only_allowed_images(html)
        assert "169.254.169.254/latest" not in "".join(img_sources(html))
        assert "no image" in html
    listing = pages[0].content.decode()
    assert "https://images.example.org/a.jpg" in img_sources(listing)
    item_page = curator_client.get(reverse("review:item", args=[allowed.pk])).content.decode()
    assert "https://images.example.org/a.jpg" in img_sources(item_page)


def test_the_api_gives_no_image_for_a_host_not_allowed(settings, people, unsafe_items):
    from rest_framework.test import APIClient

    settings.IMAGE_HOSTS = ("images.example.org",)
    client = APIClient()
    client.force_authenticate(people["curator"])
    body = client.get(reverse("api:item-detail", args=[unsafe_items[0].pk])).json()
    assert body["image"] is None or body["image"] == ""
    assert body["thumbnail"] is None or body["thumbnail"] == ""


# --- the Content-Security-Policy ---------------------------------------------------------------


def img_src(policy: str) -> list[str]:
    (directive,) = [d.split() for d in policy.split(";") if d.split()[0] == "img-src"]
    return directive[1:]


def test_the_policy_allows_images_from_the_site_and_exactly_the_allowed_hosts(
    settings, curator_client, concepts
):
    item = item_with_labels(concepts, "a", {"painting": 0.6})
    settings.IMAGE_HOSTS = ALLOWED
    for url in (reverse("review:item", args=[item.pk]), reverse("admin:annotate_item_changelist")):
        policy = curator_client.get(url)["Content-Security-Policy"]
        assert img_src(policy) == [
            "'self'",
            "https://images.example.org",
            "https://*.museum.example",
        ]
    settings.IMAGE_HOSTS = ()
    policy = curator_client.get(reverse("review:queue"))["Content-Security-Policy"]
    assert img_src(policy) == ["'self'"]


def test_an_image_hosts_value_is_read_and_checked(settings):
    result = settings_in_subprocess(
        {"IMAGE_HOSTS": " Images.Example.org, *.museum.example "}, ["IMAGE_HOSTS"]
    )
    assert result.returncode == 0, result.stderr
    assert '"IMAGE_HOSTS": ["images.example.org", "*.museum.example"]' in result.stdout
    result = settings_in_subprocess({}, ["IMAGE_HOSTS"])
    assert '"IMAGE_HOSTS": []' in result.stdout


@pytest.mark.parametrize(
    "value",
    [
        "https://images.example.org",
        "images.example.org:8443",
        "169.254.169.254",
        "*",
        "*.org",
        "localhost",
        "images.example.org/path",
        "[::1]",
    ],
)
def test_a_malformed_image_host_is_refused_naming_the_variable(value):
    result = settings_in_subprocess({"IMAGE_HOSTS": f"images.example.org,{value}"}, ["IMAGE_HOSTS"])
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "IMAGE_HOSTS" in result.stderr
    assert repr(value.lower()) in result.stderr


# --- an item's identity ------------------------------------------------------------------------


def test_an_admin_post_cannot_change_an_items_identity(admin_client):
    item = Item.objects.create(
        external_id="eu-1",
        image_url="https://images.example.org/1.jpg",
        image_file="items/ab/a.jpg",
        image_sha256="a" * 64,
        title="t",
    )
    admin_client.post(
        reverse("admin:annotate_item_change", args=[item.pk]),
        {"external_id": "eu-2", "image_url": "http://169.254.169.254/latest/x.png",
         "image_file": "../../etc/passwd", "image_sha256": "b" * 64, "title": "new title",
         "image_state": "ok", "metadata": "{}",
         "prior_labels-TOTAL_FORMS": "0", "prior_labels-INITIAL_FORMS": "0",
         "aggregated_labels-TOTAL_FORMS": "0", "aggregated_labels-INITIAL_FORMS": "0"},
    )  # fmt: skip
    item.refresh_from_db()
    assert item.title == "new title"
    assert (item.external_id, item.image_url, item.image_file, item.image_sha256) == (
        "eu-1", "https://images.example.org/1.jpg", "items/ab/a.jpg", "a" * 64
    )  # fmt: skip
    assert Item.objects.count() == 1


def manifest(tmp_path: Path, name: str, rows: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(["external_id,image,title", *rows]) + "\n")
    return path


def test_a_re_import_that_changes_an_image_url_is_audited_and_the_old_copy_is_not_shown(
    concepts, tmp_path, admin_client
):
    items_import(path=manifest(tmp_path, "v1.csv", ["obj-1,https://a.example/1.jpg,One"]))
    item = Item.objects.get()
    # The worker fetched and stored the first image.
    Item.objects.filter(pk=item.pk).update(
        image_file="items/ab/old.jpg", thumbnail="thumbs/ab/old.jpg", image_sha256="a" * 64,
        image_width=10, image_height=10, image_state="ok",
    )  # fmt: skip
    report, counts = items_import(
        path=manifest(tmp_path, "v2.csv", ["obj-1,https://b.example/2.jpg,One"])
    )

    assert counts.updated == 1 and Item.objects.count() == 1
    item.refresh_from_db()
    assert item.image_url == "https://b.example/2.jpg"
    # The new image is fetched again; the old file is no longer this item's image.
    assert (item.image_state, item.image_file, item.thumbnail, item.image_sha256) == (
        "pending", "", "", ""
    )  # fmt: skip
    assert item_image_src(item) == ""
    (change,) = ItemIdentityChange.objects.filter(item=item)
    assert (change.field, change.before, change.after, change.report) == (
        "image_url", "https://a.example/1.jpg", "https://b.example/2.jpg", report
    )  # fmt: skip

    page = admin_client.get(reverse("admin:annotate_item_change", args=[item.pk])).content
    assert b"https://a.example/1.jpg" in page and f"import {report.pk}".encode() in page

    # The same manifest again changes nothing and records nothing.
    items_import(path=manifest(tmp_path, "v2b.csv", ["obj-1,https://b.example/2.jpg,One"]))
    assert ItemIdentityChange.objects.count() == 1


def test_a_re_import_with_another_local_file_audits_the_image_change(concepts, tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes((32, 32), (255, 0, 0)))
    (folder / "b.png").write_bytes(png_bytes((32, 32), (0, 0, 255)))
    items_import(path=manifest(tmp_path, "v1.csv", ["obj-1,img/a.png,One"]))
    before = Item.objects.get().image_sha256
    report, _ = items_import(path=manifest(tmp_path, "v2.csv", ["obj-1,img/b.png,One"]))
    after = Item.objects.get().image_sha256
    assert before and after and before != after
    (change,) = ItemIdentityChange.objects.all()
    assert (change.field, change.before, change.after, change.report) == (
        "image_sha256", before, after, report
    )  # fmt: skip
    assert ImportReport.objects.count() == 2


def test_a_subject_export_that_moves_a_subjects_image_is_audited(concepts, tmp_path):
    from annotate.services.zooniverse.subject_import import subjects_import

    export = Path(__file__).parent / "fixtures" / "subjects" / "subject_export.csv"
    subjects_import(path=export, fetch_images=False)
    moved = tmp_path / "moved.csv"
    moved.write_text(export.read_text().replace("subject_location/a2.png", "moved/a2.png"))
    report, _ = subjects_import(path=moved, fetch_images=False)

    item = Item.objects.get(external_id="zooniverse-subject-102")
    (change,) = ItemIdentityChange.objects.all()
    assert (change.item, change.field, change.report) == (item, "image_url", report)
    assert change.before.endswith("/subject_location/a2.png")
    assert change.after == item.image_url and item.image_url.endswith("/moved/a2.png")


# --- remote images are fetched by themselves ---------------------------------------------------


def test_the_beat_schedule_fetches_pending_remote_images_a_slice_a_tick(settings, monkeypatch):
    from annotate import tasks
    from annotate.services.image_fetch import FetchCounts
    from config.celery import app

    (entry,) = [
        e
        for e in settings.CELERY_BEAT_SCHEDULE.values()
        if e["task"] == "annotate.tasks.fetch_item_images"
    ]
    assert entry["task"] in app.tasks and 0 < entry["options"]["expires"] < entry["schedule"]

    sent = []
    monkeypatch.setattr(
        "annotate.services.image_fetch.item_images_fetch",
        lambda limit: FetchCounts(fetched=limit, more=True),
    )
    monkeypatch.setattr(tasks.fetch_item_images, "delay", lambda **kw: sent.append(kw))
    assert tasks.fetch_item_images(limit=2, **entry.get("kwargs", {}))["fetched"] == 2
    assert sent == []  # a tick fetches one slice; the next tick the next
    tasks.fetch_item_images(limit=2)
    assert sent == [{"limit": 2}]  # after an import, the slices follow each other
