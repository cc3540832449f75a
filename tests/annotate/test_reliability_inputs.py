"""Bad input the matrix lists, through the paths that meet it in production (reliability B3,
B11-B15, B17, B18): unknown workflow versions over many batches, hostile image bytes served by a
real HTTP server to the worker's fetch, GIF bombs, formats refused before Pillow opens them, and
text too long or too strange for a title."""

from __future__ import annotations

import io
import logging
import re
import struct
from pathlib import Path

import pytest
from django.urls import reverse
from PIL import Image

from annotate.models import Classification, ImportReport, Item, QuarantinedRow
from annotate.services.image_fetch import item_image_fetch
from annotate.services.items import items_import
from annotate.services.zooniverse.classification_import import classifications_import
from ml import images
from tests.annotate.builders import export_row, write_export
from tests.factories import WorkflowFactory, answers_for
from tests.images import (
    HTML_BYTES,
    SVG_BYTES,
    bomb_png_bytes,
    png_bytes,
    tiff_bytes,
    truncated_jpeg_bytes,
)
from tests.invariants import invariants_check

pytestmark = pytest.mark.django_db


# --- B3: one alert per unknown version, however many rows and batches -----------------------------


def test_b3_unknown_versions_over_many_batches_quarantine_each_row_and_alert_once(
    concepts, tmp_path, caplog
):
    WorkflowFactory(zooniverse_id=7, answers=answers_for(["painting"]))
    rows = [export_row(cid, workflow_version="99.1") for cid in range(1, 13)]
    rows += [export_row(cid, workflow_version="98.0") for cid in range(13, 18)]
    rows += [export_row(cid) for cid in range(18, 21)]
    path = write_export(tmp_path / "cls.csv", rows)
    with caplog.at_level(logging.WARNING, logger="annotate.services.classifications"):
        _, counts = classifications_import(path=path, workflow_id=7, batch_size=4, parallel=False)

    reasons = list(QuarantinedRow.objects.values_list("reason", flat=True))
    assert reasons == ["unknown_workflow_version"] * 17
    assert counts.quarantined == 17 and Classification.objects.count() == 3
    alerts = [r for r in caplog.records if "unknown versions" in r.getMessage()]
    assert len(alerts) == 1
    assert "98.0 (5 rows), 99.1 (12 rows)" in alerts[0].getMessage()
    report = ImportReport.objects.get()
    assert report.message.count("unknown workflow versions") == 1
    assert (report.status, report.quarantined) == ("succeeded", 17)
    invariants_check()


# --- B11-B15: what a remote image server may send the fetch worker --------------------------------


def gif_bytes(width: int, height: int, frames: int) -> bytes:
    """A GIF of ``frames`` one-pixel frames on a ``width`` x ``height`` screen: a few bytes a
    frame, whatever the size it declares."""
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = (
        b"\x21\xf9\x04\x00\x00\x00\x00\x00"  # graphic control extension
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
        + b"\x02\x02\x44\x01\x00"  # LZW: clear, pixel 0, end
    )
    return b"GIF89a" + screen + frame * frames + b"\x3b"


def fits_bytes() -> bytes:
    return (b"SIMPLE  =                    T" + b" " * 50).ljust(2880, b" ")


POLYGLOT_HTML = HTML_BYTES + png_bytes((4, 4))  # a page carrying an image inside it
POLYGLOT_GIF = b"GIF89a/*<script>alert(1)</script>*/=1;"  # GIF magic, script body


@pytest.mark.parametrize(
    ("case", "body", "state"),
    [
        ("B11 truncated JPEG", truncated_jpeg_bytes(), "corrupt"),
        ("B12 HTML", HTML_BYTES, "refused"),
        ("B12 empty", b"", "invalid"),
        ("B12 HTML around a PNG", POLYGLOT_HTML, "refused"),
        ("B12 GIF magic around a script", POLYGLOT_GIF, "corrupt"),
        ("B13 PNG declaring 50,000 x 50,000", bomb_png_bytes(50_000), "too_large"),
        ("B13 GIF screen of 50,000 x 50,000", gif_bytes(50_000, 50_000, 1), "too_large"),
        ("B13 GIF of 2,000 frames", gif_bytes(4_000, 4_000, 2_000), "too_large"),
        ("B14 FITS", fits_bytes(), "refused"),
        ("B14 TIFF", tiff_bytes(), "refused"),
        ("B14 SVG", SVG_BYTES, "refused"),
    ],
)
def test_b11_b14_a_bad_remote_image_ends_in_its_state_and_nothing_is_stored(
    server,  # noqa: F811
    loopback_allowed,  # noqa: F811
    settings,
    case,
    body,
    state,
    monkeypatch,
):
    """Served over HTTP to the worker's fetch: the item records why, no file lands in the media
    folder, no pixel buffer is ever loaded, and the next call leaves the item alone."""
    state_of_server, port = server
    state_of_server.routes["/image"] = (200, {"Content-Type": "image/jpeg"}, body)
    item = Item.objects.create(external_id="x", image_url=f"http://127.0.0.1:{port}/image")

    def no_load(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")

    if state != "corrupt":  # a corrupt file is found out by decoding it, under the limits
        monkeypatch.setattr(Image.Image, "load", no_load)
        monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_load)

    assert item_image_fetch(item_id=item.pk) == state, case
    item.refresh_from_db()
    assert (item.image_state, item.image_file, item.thumbnail) == (state, "", "")
    assert item.image_error
    assert not list(Path(settings.MEDIA_ROOT).rglob("*.*"))
    hits = len(state_of_server.hits)
    assert item_image_fetch(item_id=item.pk) == ""  # not pending any more: not fetched again
    assert len(state_of_server.hits) == hits


def test_b12_b14_refused_formats_never_reach_pillow(monkeypatch):
    opened: list[object] = []

    def recorder(*args, **kwargs):
        opened.append(args)
        raise AssertionError("Pillow was asked to open the file")

    monkeypatch.setattr(images.Image, "open", recorder)
    for data in (fits_bytes(), tiff_bytes(), SVG_BYTES, HTML_BYTES, POLYGLOT_HTML):
        with pytest.raises(images.FormatNotAllowed):
            images.inspect_image(data)
    assert opened == []


def test_b15_a_download_without_a_length_past_the_cap_is_too_large_and_not_read_on(
    server,  # noqa: F811
    loopback_allowed,  # noqa: F811
    settings,
):
    state_of_server, port = server
    settings.IMAGE_MAX_BYTES = 64 * 1024
    big = png_bytes((32, 32)) + b"\0" * (2 * 1024 * 1024)
    state_of_server.routes["/big"] = (200, {"Transfer-Encoding": "chunked"}, big)
    item = Item.objects.create(external_id="big", image_url=f"http://127.0.0.1:{port}/big")

    assert item_image_fetch(item_id=item.pk) == "too_large"
    item.refresh_from_db()
    assert item.image_state == "too_large" and item.image_file == ""
    assert not list(Path(settings.MEDIA_ROOT).rglob("*.*"))


def test_b13_a_gif_bomb_is_refused_by_the_loader_before_any_frame_is_decoded(monkeypatch):
    def no_load(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_load)
    for data in (gif_bytes(50_000, 50_000, 1), gif_bytes(4_000, 4_000, 2_000)):
        assert len(data) < 50_000
        with pytest.raises(images.ImageTooLarge, match="decompression bomb"):
            images.load_image(data)
    # A small, honest GIF of a few frames still loads.
    monkeypatch.undo()
    out = io.BytesIO()
    frames = [Image.new("RGB", (8, 8), color) for color in ("red", "blue", "green")]
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:])
    assert images.load_image(out.getvalue()).size == (8, 8)


# --- B17: NUL, right-to-left override, 5,000 characters -------------------------------------------


def test_b17_a_manifest_refuses_nul_and_overlong_titles_and_keeps_strange_text_as_data(
    concepts, tmp_path, curator_client
):
    import json

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(png_bytes())
    rtl = "invoice\u202egnp.exe <b>bold</b>"
    lines = [
        {"external_id": "nul", "image": "img/a.png", "title": "a\x00b"},
        {"external_id": "long", "image": "img/a.png", "title": "t" * 5000},
        {"external_id": "rtl", "image": "img/a.png", "title": rtl},
        {"external_id": "fine", "image": "img/a.png", "title": "t" * 1000},
    ]
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    report, counts = items_import(path=path)

    refused = {row.line: row.reason for row in report.rows.all()}
    assert set(refused) == {1, 2}
    assert "NUL" in refused[1] and "longer than 1000" in refused[2]
    assert sorted(Item.objects.values_list("external_id", flat=True)) == ["fine", "rtl"]
    stored = Item.objects.get(external_id="rtl")
    assert stored.title == rtl  # kept as it came, never mangled

    page = curator_client.get(reverse("review:item", args=[stored.pk])).content.decode()
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page


# --- B18: nothing to aggregate or export ---------------------------------------------------


def test_b18_votes_that_are_all_invalid_aggregate_to_no_consensus_without_error(concepts):
    from annotate.services.aggregation import labels_aggregate
    from tests.factories import Crowd

    crowd = Crowd(concepts)
    item = crowd.item("only-bad-votes")
    crowd.vote(item, "u1", [], answers_known=False)
    crowd.vote(item, "u2", [], task_shown=False)
    crowd.vote(item, "u3", [], answers_known=False)
    for method in ("majority", "dawid_skene"):
        summary = labels_aggregate(method=method)
        item.refresh_from_db()
        assert item.consensus == "none", method
        assert summary.confident_items == 0
        assert not item.aggregated_labels.exists()


# --- B10: a subject deleted upstream -----------------------------------------------------------


def test_b10_a_subject_deleted_upstream_keeps_its_votes_but_they_no_longer_count(
    env,  # noqa: F811
):
    from annotate.models import AggregatedLabel, Round, Subject
    from annotate.services.aggregation import labels_aggregate
    from annotate.services.zooniverse.pull import classifications_pull
    from annotate.services.zooniverse.push import round_push
    from tests.annotate.sync_env import pushed_and_classified

    pushed_and_classified(env, n_items=4, n_classifications=30)
    classifications_pull(workflow=env.workflow, client=env.client(), page_size=10)
    labels_aggregate(method="majority")
    gone = max(Subject.objects.all(), key=lambda s: s.classifications.count())
    votes = sorted(gone.classifications.values_list("zooniverse_id", flat=True))
    assert votes and AggregatedLabel.objects.filter(item=gone.item).exists()

    env.sandbox.delete_subject(gone.zooniverse_id)
    round_push(round=Round.objects.get(number=1), items=list(Item.objects.order_by("pk")),
               client=env.client())  # fmt: skip

    gone.refresh_from_db()
    assert gone.upstream_state == Subject.Upstream.DELETED
    assert sorted(gone.classifications.values_list("zooniverse_id", flat=True)) == votes
    summary = labels_aggregate(method="majority")
    assert not AggregatedLabel.objects.filter(item=gone.item).exists()
    gone.item.refresh_from_db()
    assert gone.item.consensus == Item.Consensus.NONE
    assert (
        summary.n_classifications
        == Classification.objects.exclude(subject=gone)
        .filter(is_duplicate=False, task_shown=True, answers_known=True)
        .count()
    )
    invariants_check()


def _isolated(page: str, char: str = "\u202e") -> bool:
    """Every occurrence of ``char`` sits inside a <bdi> element (or is not there at all)."""
    for found in re.finditer(char, page):
        before = page[: found.start()]
        if before.rfind("<bdi") <= before.rfind("</bdi>"):
            return False
    return True


def test_b17_a_right_to_left_override_in_a_title_is_isolated_on_the_review_screens(
    concepts, curator_client
):
    item = Item.objects.create(external_id="rtl", title="invoice\u202egnp.exe", image_url="")
    queue = reverse("review:queue") + "?votes=all"  # the item has no votes yet
    for url in (reverse("review:item", args=[item.pk]), queue):
        page = curator_client.get(url).content.decode()
        assert "\u202e" in page or "&#8238;" in page
        assert _isolated(page), url
