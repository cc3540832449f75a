from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotate.models import ImportReport, Item, PriorLabel
from annotate.services.items import ManifestError, items_import
from tests.images import HTML_BYTES, bomb_png_bytes, png_bytes, tiff_bytes, truncated_jpeg_bytes

pytestmark = pytest.mark.django_db


def write_manifest(tmp_path: Path, lines: list[str], name: str = "manifest.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def images_dir(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes((32, 32), (255, 0, 0)))
    (folder / "b.png").write_bytes(png_bytes((48, 32), (0, 255, 0)))
    (folder / "truncated.jpg").write_bytes(truncated_jpeg_bytes())
    (folder / "bomb.png").write_bytes(bomb_png_bytes())
    (folder / "page.png").write_bytes(HTML_BYTES)
    (folder / "scan.tif").write_bytes(tiff_bytes())
    return folder


def test_a_csv_manifest_imports_items_with_local_images_thumbnails_and_prior_labels(
    concepts, tmp_path, images_dir, settings
):
    path = write_manifest(
        tmp_path,
        [
            "external_id,image,title,prior_labels,provider,collection",
            "obj-1,img/a.png,A red square,painting;drawing,Museum A,paintings",
            "obj-2,https://example.org/b.jpg,Remote,,Museum B,",
        ],
    )
    _, counts = items_import(path=path)
    assert (counts.created, counts.quarantined) == (2, 0)

    local = Item.objects.get(external_id="obj-1")
    assert local.image_state == Item.ImageState.OK
    assert (local.image_width, local.image_height) == (32, 32)
    assert (Path(settings.MEDIA_ROOT) / local.thumbnail).exists()
    assert (Path(settings.MEDIA_ROOT) / local.image_file).read_bytes() == (
        images_dir / "a.png"
    ).read_bytes()
    assert local.image_file.startswith("items/") and local.image_sha256 in local.image_file
    assert local.metadata == {"collection": "paintings"}
    assert sorted(local.prior_labels.values_list("concept__key", flat=True)) == [
        "drawing",
        "painting",
    ]

    remote = Item.objects.get(external_id="obj-2")
    assert remote.image_url == "https://example.org/b.jpg"
    assert remote.image_state == Item.ImageState.PENDING  # fetched later by a worker, never here


def test_re_importing_the_same_manifest_changes_nothing(concepts, tmp_path, images_dir):
    path = write_manifest(
        tmp_path,
        [
            "external_id,image,title,prior_labels",
            "obj-1,img/a.png,A,painting",
            "obj-2,img/b.png,B,map",
        ],
    )
    items_import(path=path)
    before = list(Item.objects.order_by("id").values())
    priors = list(PriorLabel.objects.order_by("id").values())

    _, counts = items_import(path=path)

    assert (counts.created, counts.updated, counts.unchanged) == (0, 0, 2)
    assert list(Item.objects.order_by("id").values()) == before
    assert list(PriorLabel.objects.order_by("id").values()) == priors


def test_a_re_import_with_changes_updates_by_external_id_and_never_duplicates(
    concepts, tmp_path, images_dir
):
    first = write_manifest(
        tmp_path, ["external_id,image,title,prior_labels", "obj-1,img/a.png,Old,painting;map"]
    )
    items_import(path=first)
    second = write_manifest(
        tmp_path, ["external_id,image,title,prior_labels", "obj-1,img/b.png,New,map"], name="v2.csv"
    )
    _, counts = items_import(path=second)
    assert (counts.created, counts.updated) == (0, 1)
    item = Item.objects.get()
    assert (item.title, item.image_width) == ("New", 48)
    assert list(item.prior_labels.values_list("concept__key", flat=True)) == ["map"]


def test_a_manifest_with_broken_rows_imports_the_good_ones_and_reports_each_bad_one_by_line(
    concepts, tmp_path, images_dir
):
    path = write_manifest(
        tmp_path,
        [
            "external_id,image,title,prior_labels",  # line 1
            "good-1,img/a.png,Fine,painting",  # 2
            "bad-columns,img/a.png,Too,many,columns",  # 3
            "bad-concept,img/a.png,Unknown,painting;unicorn",  # 4
            "bad-missing,img/nowhere.png,Missing,",  # 5
            "bad-corrupt,img/truncated.jpg,Corrupt,",  # 6
            "bad-bomb,img/bomb.png,Bomb,",  # 7
            ',img/a.png,"No id",',  # 8
            "bad-html,img/page.png,HTML,",  # 9
            "bad-tiff,img/scan.tif,TIFF,",  # 10
            'bad-quote,img/a.png,"Multi',  # 11: the quote runs into line 12 and beyond
            'line title",painting',  # 12
            "bad-scheme,file:///etc/passwd,Scheme,",  # 13
            "good-2,img/b.png,Also fine,map",  # 14
        ],
    )
    report, counts = items_import(path=path)

    reasons = {row.line: row.reason for row in report.rows.all()}
    assert set(reasons) == {3, 4, 5, 6, 7, 8, 9, 10, 13}
    assert "expected 4 columns, found 5" in reasons[3]
    assert "unknown concept(s): unicorn" in reasons[4]
    assert "not found" in reasons[5]
    assert "corrupt" in reasons[6]
    assert "decompression bomb" in reasons[7]
    assert "'external_id' is empty" in reasons[8]
    assert "not an image" in reasons[9]
    assert "allowed formats" in reasons[10]
    assert "scheme 'file' is not allowed" in reasons[13]

    assert set(Item.objects.filter(image_state="ok").values_list("external_id", flat=True)) == {
        "good-1",
        "good-2",
        "bad-quote",
    }
    # Rows whose only fault is the image are kept, with the image state saying what is wrong.
    states = dict(Item.objects.values_list("external_id", "image_state"))
    assert states["bad-missing"] == "missing"
    assert states["bad-corrupt"] == "corrupt"
    assert states["bad-bomb"] == "too_large"
    assert states["bad-html"] == "refused"
    assert "bad-concept" not in states and "bad-columns" not in states
    assert report.status == ImportReport.Status.SUCCEEDED
    assert report.quarantined == counts.quarantined == 9


def test_a_jsonl_manifest_takes_lists_and_reports_invalid_json_by_line(
    concepts, tmp_path, images_dir
):
    path = tmp_path / "items.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps(
                    {
                        "external_id": "j-1",
                        "image": "img/a.png",
                        "prior_labels": ["map", "photograph"],
                        "metadata": {"year": 1910},
                    }
                ),
                "{not json",
                json.dumps(["a", "list"]),
                json.dumps(
                    {"external_id": "j-2", "image": "https://example.org/x.jpg", "title": 5}
                ),
                json.dumps({"external_id": "j-3", "image": "img/a.png", "title": "a\x00b"}),
            ]
        )
    )
    report, counts = items_import(path=path)
    assert counts.created == 2
    assert {r.line for r in report.rows.all()} == {2, 3, 5}
    item = Item.objects.get(external_id="j-1")
    assert item.metadata == {"year": 1910}
    assert sorted(item.prior_labels.values_list("concept__key", flat=True)) == ["map", "photograph"]
    assert Item.objects.get(external_id="j-2").title == "5"


def test_a_manifest_without_an_external_id_column_is_refused_whole(concepts, tmp_path):
    path = write_manifest(tmp_path, ["id,image", "1,a.png"])
    with pytest.raises(ManifestError, match="no 'external_id' column"):
        items_import(path=path)
    assert not ImportReport.objects.exists()


def test_the_command_prints_a_summary_and_the_bad_lines(concepts, tmp_path, images_dir, capsys):
    path = write_manifest(
        tmp_path,
        ["external_id,image,title,prior_labels", "ok,img/a.png,A,", "bad,img/a.png,B,unicorn"],
    )
    call_command("import_items", str(path), verbosity=0)
    out, err = capsys.readouterr()
    assert "1 created" in out and "1 reported" in out
    assert f"{path}:3: unknown concept(s): unicorn" in err


def test_the_command_fails_clearly_on_a_missing_file(concepts, tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        call_command("import_items", str(tmp_path / "nope.csv"))


def test_a_broken_quote_is_reported_and_the_next_rows_still_import(concepts, tmp_path, images_dir):
    path = write_manifest(
        tmp_path,
        [
            "external_id,image,title,prior_labels",
            'broken,img/a.png,"A"B,',
            "after,img/b.png,Fine,",
        ],
    )
    report, counts = items_import(path=path)
    rows = [(r.line, r.reason.startswith("malformed CSV")) for r in report.rows.all()]
    assert rows == [(2, True)]
    assert list(Item.objects.values_list("external_id", flat=True)) == ["after"]
