"""Item manifests from strangers: image paths stay inside the manifest's folder or IMPORT_ROOTS,
only regular files are read and never past the byte cap, deep JSON, foreign encodings and
non-finite numbers are reported by line while the rest of the file imports.

Reliability B19, B20, B21, B24, S20.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotate.models import Item
from annotate.services.items import ManifestError, item_row_parse, items_import
from annotate.zooniverse.classification_records import QuarantineEntry
from annotate.zooniverse.export_csv.subjects import SUBJECT_COLUMNS, parse_subject_export
from ml import images, safe_json
from tests.annotate.builders import export_row, export_text, parse
from tests.images import png_bytes
from tests.settings_env import settings_in_subprocess

pytestmark = pytest.mark.django_db

DEEP = "[" * 100_000


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail the test instead of hanging when a read blocks (a FIFO without a writer)."""

    def _expired(signum, frame):  # type: ignore[no-untyped-def]
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def media_files(settings) -> set[bytes]:
    """The contents of every image stored under MEDIA_ROOT/items."""
    root = Path(settings.MEDIA_ROOT) / "items"
    return {p.read_bytes() for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """A manifest folder with one good image, and a secret image in a folder beside it."""
    manifest_dir = tmp_path / "batch"
    (manifest_dir / "img").mkdir(parents=True)
    good = manifest_dir / "img" / "good.png"
    good.write_bytes(png_bytes((24, 24), (0, 0, 255)))
    secret_dir = tmp_path / "secretdir"
    secret_dir.mkdir()
    secret = secret_dir / "x.png"
    secret.write_bytes(png_bytes((16, 16), (255, 255, 0)))
    return {"dir": manifest_dir, "good": good, "secret_dir": secret_dir, "secret": secret}


def write_csv(folder: Path, rows: list[str], name: str = "manifest.csv") -> Path:
    path = folder / name
    path.write_text("\n".join(["external_id,image,title,prior_labels", *rows]) + "\n")
    return path


def reasons_by_line(report) -> dict[int, str]:  # type: ignore[no-untyped-def]
    return {row.line: row.reason for row in report.rows.all()}


# -- S20: confinement -------------------------------------------------------------------------


def test_image_paths_leading_out_of_the_manifest_folder_read_like_missing_files(
    concepts, layout, settings
):
    """Reliability S20."""
    folder = layout["dir"]
    (folder / "img" / "link.png").symlink_to(layout["secret"])
    path = write_csv(
        folder,
        [
            "good,img/good.png,Good,",  # 2
            "climb,../secretdir/x.png,Climb,",  # 3
            f"absolute,{layout['secret']},Absolute,",  # 4
            "link,img/link.png,Link,",  # 5
            "passwd,/etc/passwd,Passwd,",  # 6
            "missing,img/nowhere.png,Missing,",  # 7
            "after,img/good.png,After,",  # 8
        ],
    )
    report, counts = items_import(path=path)

    reasons = reasons_by_line(report)
    assert set(reasons) == {3, 4, 5, 6, 7}
    assert reasons[7] == "image file not found or not allowed: img/nowhere.png"
    # The same words whether the file is missing, outside, or a system file that exists.
    written = {3: "../secretdir/x.png", 4: str(layout["secret"]), 5: "img/link.png"}
    written[6] = "/etc/passwd"
    for line, image in written.items():
        assert reasons[line] == reasons[7].replace("img/nowhere.png", image)
    states = dict(Item.objects.values_list("external_id", "image_state"))
    assert states == {
        "good": "ok",
        "after": "ok",
        "climb": "missing",
        "absolute": "missing",
        "link": "missing",
        "passwd": "missing",
        "missing": "missing",
    }
    errors = set(Item.objects.exclude(image_state="ok").values_list("image_error", flat=True))
    assert all(e.startswith("image file not found or not allowed: ") for e in errors)
    assert media_files(settings) == {layout["good"].read_bytes()}
    assert counts.image_problems == 5


def test_a_folder_named_in_import_roots_may_hold_the_images_by_relative_or_absolute_path(
    concepts, layout, settings
):
    """Reliability S20."""
    settings.IMPORT_ROOTS = [str(layout["secret_dir"])]
    path = write_csv(
        layout["dir"],
        [
            "good,img/good.png,Good,",
            "climb,../secretdir/x.png,Climb,",
            f"absolute,{layout['secret']},Absolute,",
            "passwd,/etc/passwd,Passwd,",
        ],
    )
    report, _ = items_import(path=path)

    assert set(reasons_by_line(report)) == {5}
    assert set(Item.objects.filter(image_state="ok").values_list("external_id", flat=True)) == {
        "good",
        "climb",
        "absolute",
    }
    assert media_files(settings) == {layout["good"].read_bytes(), layout["secret"].read_bytes()}


def test_import_roots_must_be_absolute_folders_other_than_the_file_system_root():
    """Reliability S20: a root allowing everything or depending on the working folder is refused."""
    for value in ("relative/images", "/data/images,/"):
        result = settings_in_subprocess({"IMPORT_ROOTS": value}, ["IMPORT_ROOTS"])
        assert result.returncode != 0
        assert "ImproperlyConfigured" in result.stderr and "IMPORT_ROOTS" in result.stderr
    result = settings_in_subprocess({"IMPORT_ROOTS": "/data/images, /srv/scans"}, ["IMPORT_ROOTS"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"IMPORT_ROOTS": ["/data/images", "/srv/scans"]}


# -- B19: only regular files, read with a cap --------------------------------------------------


def test_a_directory_a_fifo_or_a_device_as_image_is_reported_and_the_rest_imports(
    concepts, layout, settings
):
    """Reliability B19: no traceback, no hang, no unbounded read."""
    settings.IMPORT_ROOTS = ["/dev"]
    folder = layout["dir"]
    (folder / "img" / "adir.png").mkdir()
    os.mkfifo(folder / "img" / "pipe.png")
    path = write_csv(
        folder,
        [
            "good,img/good.png,Good,",  # 2
            "directory,img/adir.png,Directory,",  # 3
            "fifo,img/pipe.png,FIFO,",  # 4
            "zero,/dev/zero,Zero,",  # 5
            "folder,img,Folder,",  # 6
            "after,img/good.png,After,",  # 7
        ],
    )
    with deadline(30):
        report, counts = items_import(path=path)

    reasons = reasons_by_line(report)
    assert set(reasons) == {3, 4, 5, 6}
    assert reasons[4] == "image file not found or not allowed: img/pipe.png"
    assert reasons[5] == "image file not found or not allowed: /dev/zero"
    assert set(Item.objects.filter(image_state="ok").values_list("external_id", flat=True)) == {
        "good",
        "after",
    }
    assert counts.created == 6


def test_an_image_over_the_byte_cap_is_refused_by_line_and_the_rest_imports(
    concepts, layout, settings
):
    """Reliability B19: the cap is the IMAGE_MAX_BYTES setting."""
    small = layout["dir"] / "img" / "small.png"
    small.write_bytes(png_bytes((2, 2), (1, 2, 3)))
    settings.IMAGE_MAX_BYTES = len(small.read_bytes())
    assert layout["good"].stat().st_size > settings.IMAGE_MAX_BYTES
    path = write_csv(layout["dir"], ["big,img/good.png,Big,", "small,img/small.png,Small,"])

    report, _ = items_import(path=path)

    assert reasons_by_line(report) == {
        2: f"image img/good.png: more than the {settings.IMAGE_MAX_BYTES}-byte cap"
    }
    assert dict(Item.objects.values_list("external_id", "image_state")) == {
        "big": "too_large",
        "small": "ok",
    }


def test_the_capped_reader_reads_one_byte_past_the_cap_whatever_size_the_file_reports(tmp_path):
    """Reliability B19: a file whose reported size is wrong (as in /proc) is still capped."""
    status = Path("/proc/self/status")
    assert status.stat().st_size == 0 and len(status.read_bytes()) > 20
    with pytest.raises(images.ImageTooLarge, match="more than the 10-byte cap"):
        images.read_file_capped(status, max_bytes=10)
    assert images.read_file_capped(status, max_bytes=1_000_000).startswith(b"Name:")
    with pytest.raises(images.FileNotReadable):
        images.read_file_capped(Path("/dev/zero"), max_bytes=10)
    link = tmp_path / "link"
    link.symlink_to(status)
    assert images.read_file_capped(link, max_bytes=1_000_000).startswith(b"Name:")
    with pytest.raises(images.FileNotReadable):
        images.read_file_capped(link, max_bytes=1_000_000, follow_symlinks=False)


# -- B20: deep nesting -------------------------------------------------------------------------


def test_one_deeply_nested_jsonl_line_is_reported_and_the_rest_imports(concepts, layout):
    """Reliability B20."""
    path = layout["dir"] / "items.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"external_id": "a", "image": "img/good.png"}),
                DEEP,
                '{"external_id": "deep", "image": "img/good.png", "metadata": {"x": ' + DEEP + "}",
                json.dumps({"external_id": "b", "image": "img/good.png"}),
            ]
        )
        + "\n"
    )
    report, counts = items_import(path=path)

    reasons = reasons_by_line(report)
    assert set(reasons) == {2, 3}
    assert all("nested more than" in r for r in reasons.values())
    assert sorted(Item.objects.values_list("external_id", flat=True)) == ["a", "b"]
    assert counts.total == 4


def test_a_deeply_nested_locations_cell_in_a_subject_export_is_refused_with_its_line():
    """Reliability B20: an export cell."""
    out = io.StringIO()
    out.write(",".join(SUBJECT_COLUMNS) + "\n")
    for subject_id, locations in ((1, DEEP), (2, '{"0": "https://example.org/a.jpg"}')):
        cells = {c: "" for c in SUBJECT_COLUMNS}
        cells.update(subject_id=str(subject_id), metadata="{}", locations=locations)
        quoted = ['"' + cells[c].replace('"', '""') + '"' for c in SUBJECT_COLUMNS]
        out.write(",".join(quoted) + "\n")

    rows = list(parse_subject_export(io.BytesIO(out.getvalue().encode())))

    (entry,) = [r for r in rows if isinstance(r, QuarantineEntry)]
    assert (entry.line, entry.field) == (2, "locations")
    assert "nested more than" in entry.reason
    assert [r.subject_id for r in rows if not isinstance(r, QuarantineEntry)] == [2]


@pytest.mark.parametrize("column", ["annotations", "metadata", "subject_data"])
def test_a_deeply_nested_classification_export_cell_is_refused_with_its_line(column):
    """Reliability B20: an export cell."""
    items = parse(export_text([export_row(1, **{column: DEEP}), export_row(2)]))
    refused = [q for q in items if isinstance(q, QuarantineEntry)]
    assert [(q.line, q.field) for q in refused] == [(2, column)]
    assert [r.zooniverse_id for r in items if not isinstance(r, QuarantineEntry)] == [2]


# -- B21: encodings ----------------------------------------------------------------------------


def test_a_windows_1252_csv_reports_each_line_that_is_not_utf8_and_mangles_nothing(
    concepts, layout
):
    """Reliability B21."""
    path = layout["dir"] / "manifest.csv"
    path.write_bytes(
        "external_id,image,title,prior_labels\n"
        "plain,img/good.png,Plain title,\n"
        "cafe,img/good.png,Café Müller,\n"
        '"quoted","img/good.png","Two\nlines: Zoë",\n'
        "after,img/good.png,After,\n".encode("cp1252")
    )
    report, counts = items_import(path=path)

    reasons = reasons_by_line(report)
    assert set(reasons) == {3, 4}
    assert reasons[3].startswith("line 3 is not valid UTF-8 (byte 0xE9)")
    assert "--encoding" in reasons[3]
    assert reasons[4].startswith("line 5 is not valid UTF-8 (byte 0xEB)")
    assert "Caf\\xe9 M\\xfcller" in report.rows.get(line=3).raw
    assert sorted(Item.objects.values_list("title", flat=True)) == ["After", "Plain title"]
    assert counts.quarantined == 2


def test_the_encoding_option_reads_a_windows_1252_manifest(concepts, layout, capsys):
    """Reliability B21."""
    path = layout["dir"] / "manifest.csv"
    path.write_bytes(
        "external_id,image,title,prior_labels\ncafe,img/good.png,Café Müller – “quoted”,\n".encode(
            "cp1252"
        )
    )
    call_command("import_items", str(path), encoding="cp1252", verbosity=0)

    assert Item.objects.get().title == "Café Müller – “quoted”"
    assert "1 created" in capsys.readouterr().out


def test_an_unknown_encoding_is_refused_before_anything_imports(concepts, layout):
    """Reliability B21."""
    path = write_csv(layout["dir"], ["a,img/good.png,A,"])
    with pytest.raises(CommandError, match="unknown encoding 'klingon'"):
        call_command("import_items", str(path), encoding="klingon", verbosity=0)
    assert not Item.objects.exists()


@pytest.mark.parametrize("name", ["manifest.csv", "items.jsonl"])
def test_a_utf8_manifest_with_a_byte_order_mark_imports_whole(concepts, layout, name):
    """Reliability B21."""
    path = layout["dir"] / name
    if name.endswith(".csv"):
        text = "external_id,image,title,prior_labels\ncafe,img/good.png,Café Müller,\n"
    else:
        text = json.dumps({"external_id": "cafe", "image": "img/good.png", "title": "Café Müller"})
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())

    report, _ = items_import(path=path)

    assert not report.rows.exists()
    assert Item.objects.get(external_id="cafe").title == "Café Müller"


def test_a_jsonl_line_that_is_not_utf8_is_reported_and_the_rest_imports(concepts, layout):
    """Reliability B21."""
    path = layout["dir"] / "items.jsonl"
    path.write_bytes(
        b'{"external_id": "a", "image": "img/good.png"}\n'
        b'{"external_id": "cafe", "image": "img/good.png", "title": "Caf\xe9"}\n'
        b'{"external_id": "b", "image": "img/good.png"}\n'
    )
    report, _ = items_import(path=path)

    assert list(report.rows.values_list("line", flat=True)) == [2]
    assert report.rows.get().reason.startswith("line 2 is not valid UTF-8 (byte 0xE9)")
    assert sorted(Item.objects.values_list("external_id", flat=True)) == ["a", "b"]


# -- B24: non-finite numbers -------------------------------------------------------------------


def test_non_finite_numbers_in_a_jsonl_manifest_are_refused_naming_the_field(concepts, layout):
    """Reliability B24."""
    path = layout["dir"] / "items.jsonl"
    good = '{"external_id": "%s", "image": "img/good.png", "title": %s}'
    path.write_text(
        "\n".join(
            [
                good % ("ok", '"Fine"'),  # 1
                good % ("big", "1e309"),  # 2
                good % ("nan", "NaN"),  # 3
                good % ("inf", "Infinity"),  # 4
                good % ("ninf", "-Infinity"),  # 5
                '{"external_id": "meta", "image": "img/good.png", "metadata": {"year": NaN}}',
                '{"external_id": "col", "image": "img/good.png", "depth": [1, 2e400]}',  # 7
                good % ("number", "1.5e3"),  # 8
            ]
        )
        + "\n"
    )
    report, _ = items_import(path=path)

    reasons = reasons_by_line(report)
    assert reasons == {
        2: "'title' is not a finite number: 1e309",
        3: "'title' is not a finite number: NaN",
        4: "'title' is not a finite number: Infinity",
        5: "'title' is not a finite number: -Infinity",
        6: "'metadata.year' is not a finite number: NaN",
        7: "'depth[1]' is not a finite number: 2e400",
    }
    assert {r.field for r in report.rows.all()} == {"title", "metadata", "depth"}
    assert dict(Item.objects.values_list("external_id", "title")) == {
        "ok": "Fine",
        "number": "1500.0",
    }


def test_a_csv_title_that_looks_like_a_non_finite_number_is_kept_as_text(concepts, layout):
    """Reliability B24: CSV cells are text."""
    path = write_csv(layout["dir"], ["a,img/good.png,1e309,", "b,img/good.png,NaN,"])
    items_import(path=path)
    assert dict(Item.objects.values_list("external_id", "title")) == {"a": "1e309", "b": "NaN"}


def test_a_record_handed_over_with_non_finite_floats_is_refused_naming_the_field(tmp_path):
    """Reliability B24: a record from any reader, not only the manifest's."""
    parse_row = {"base_dir": tmp_path, "concept_keys": set()}
    record = {"external_id": "x", "image": "https://example.org/x.jpg"}
    with pytest.raises(ValueError, match="'title' is not a finite number") as title:
        item_row_parse(1, {**record, "title": float("inf")}, **parse_row)
    assert title.value.field == "title"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="'metadata.scores\\[0\\]' is not a finite number"):
        item_row_parse(1, {**record, "metadata": {"scores": [float("nan")]}}, **parse_row)
    with pytest.raises(ValueError, match="'weight' is not a finite number"):
        item_row_parse(1, {**record, "weight": float("-inf")}, **parse_row)


def test_safe_json_keeps_ordinary_json_and_names_the_path_to_a_bad_number():
    """Reliability B20, B24."""
    assert safe_json.loads('{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    with pytest.raises(safe_json.JSONValueError) as caught:
        safe_json.loads('{"a": {"b": [0, NaN]}}')
    assert (str(caught.value), caught.value.path) == (
        "'a.b[1]' is not a finite number: NaN",
        "a.b[1]",
    )
    with pytest.raises(safe_json.JSONValueError, match="nested more than 1024 levels"):
        safe_json.loads(DEEP)
    with pytest.raises(safe_json.JSONValueError, match="^invalid JSON"):
        safe_json.loads("{not json")


# -- the manifest itself -----------------------------------------------------------------------


def test_the_command_fails_clearly_on_a_folder(concepts, tmp_path):
    with pytest.raises(CommandError, match="not a regular file"):
        call_command("import_items", str(tmp_path), verbosity=0)


def test_a_fifo_as_manifest_is_refused_without_waiting_for_a_writer(concepts, tmp_path):
    """Reliability B19."""
    fifo = tmp_path / "manifest.csv"
    os.mkfifo(fifo)
    with deadline(30), pytest.raises(ManifestError, match="not a regular file"):
        items_import(path=fifo)


def test_nul_characters_in_a_jsonl_row_are_reported_by_line_and_the_rest_imports(concepts, layout):
    """Reliability B20: PostgreSQL stores no NUL in text or JSON, so such a row would take the
    batch down with it."""
    path = layout["dir"] / "items.jsonl"
    path.write_bytes(
        b'{"external_id": "a", "image": "img/good.png"}\n'
        b'{"external_id": "raw", "image": "img/good.png"\x00}\n'
        b'{"external_id": "meta", "image": "img/good.png", "metadata": {"k": ["a\\u0000b"]}}\n'
        b'{"external_id": "key", "image": "img/good.png", "note\\u0000": 1}\n'
        b'{"external_id": "b", "image": "img/good.png"}\n'
    )
    report, _ = items_import(path=path)

    reasons = reasons_by_line(report)
    assert set(reasons) == {2, 3, 4}
    assert reasons[2].startswith("invalid JSON")
    assert "\x00" not in report.rows.get(line=2).raw
    assert reasons[3] == "'metadata.k[0]' contains a NUL character"
    assert reasons[4] == "'note\\x00' contains a NUL character"
    assert sorted(Item.objects.values_list("external_id", flat=True)) == ["a", "b"]
