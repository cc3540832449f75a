"""``export_dataset --out``: a folder, a missing parent, or a path through a file.

A folder given to a one-file format receives the file under the name a release gives it; missing
parents are created; a path that cannot be a file (a file where a folder should be) is refused
with a message naming the path, never a traceback.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError


def export(*args: str) -> str:
    out = io.StringIO()
    call_command("export_dataset", *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("csv", "labels.csv"), ("jsonl", "labels.jsonl"), ("webannotation", "annotations.jsonld")],
)
def test_a_folder_given_as_out_receives_the_file_under_the_release_name(db, tmp_path, fmt, name):
    folder = tmp_path / "exports"
    folder.mkdir()

    printed = export("--format", fmt, "--out", str(folder))

    assert (folder / name).is_file()
    assert json.loads((folder / f"{name}.manifest.json").read_text())["n_items"] == 0
    assert str(folder / name) in printed


def test_missing_parent_folders_of_out_are_created(db, tmp_path):
    target = tmp_path / "not" / "there" / "yet.csv"

    export("--format", "csv", "--out", str(target))

    assert target.is_file() and target.with_name("yet.csv.manifest.json").is_file()


def test_an_out_path_through_a_file_is_refused_with_a_message_naming_it(db, tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")

    with pytest.raises(CommandError, match=r"notes\.txt is a file, not a folder"):
        export("--format", "csv", "--out", str(blocker / "sub" / "x.csv"))

    assert blocker.read_text() == "keep me"


def test_an_existing_file_given_as_an_imagefolder_out_is_refused_and_kept(db, tmp_path):
    blocker = tmp_path / "images"
    blocker.write_text("keep me")

    with pytest.raises(CommandError, match=r"images is a file: imagefolder writes a folder"):
        export("--format", "imagefolder", "--out", str(blocker))

    assert blocker.read_text() == "keep me"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_folder_that_cannot_be_created_is_a_command_error_naming_it(db):
    # /proc refuses new folders even to root, as a read-only mount or a permission would.
    with pytest.raises(CommandError, match=r"cannot write the export to /proc/crowdloop-nowhere"):
        export("--format", "csv", "--out", "/proc/crowdloop-nowhere/x.csv")
