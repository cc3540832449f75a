"""zooniverse_export downloads a workflow's exports from the sandbox through panoptes-client."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotate.zooniverse.sandbox import SUBJECT_EXPORT_COLUMNS, Sandbox, serve

LABELS = ["painting", "drawing"]
EXPORT = Path(__file__).parent / "fixtures" / "subjects" / "subject_export.csv"


@pytest.fixture
def sandbox(settings):
    sandbox = Sandbox(LABELS, keys=LABELS, retirement_count=2)
    server, _ = serve("127.0.0.1", 0, sandbox=sandbox)
    settings.PANOPTES_ENDPOINT = server.endpoint
    settings.PANOPTES_USERNAME = "crowdloop-bot"
    settings.PANOPTES_PASSWORD = "a-test-password"
    settings.PANOPTES_CLIENT_SECRET = ""
    try:
        yield sandbox
    finally:
        server.shutdown()
        server.server_close()


def _seed(sandbox: Sandbox) -> None:
    set_id = sandbox.create_subject_set("seed")
    for i in range(3):
        sandbox.create_subject(
            {"image/jpeg": f"https://example.org/{i}.jpg"},
            metadata={"!europeana_id": f"/1/{i}", "#truth": [LABELS[i % 2]]},
            subject_set_id=set_id,
        )
    sandbox.link_subject_set(sandbox.workflow_id, set_id)
    sandbox.run_volunteers(sandbox.workflow_id, classifications=6)


def test_the_sandbox_subject_export_has_the_real_columns():
    with EXPORT.open() as handle:
        real = next(csv.reader(handle))
    assert list(SUBJECT_EXPORT_COLUMNS) == real


@pytest.mark.parametrize("kind", ["classifications", "subjects", "workflows"])
def test_each_kind_is_generated_and_downloaded_to_the_path(sandbox, tmp_path, kind):
    _seed(sandbox)
    out = tmp_path / "exports" / f"{kind}.csv"
    stdout = io.StringIO()
    call_command(
        "zooniverse_export", "--kind", kind, "--workflow-id", str(sandbox.workflow_id),
        "--generate", "--out", str(out), stdout=stdout,
    )  # fmt: skip
    rows = list(csv.DictReader(out.open()))
    assert rows, kind
    assert {"subjects": "subject_id", "workflows": "workflow_id"}.get(
        kind, "classification_id"
    ) in rows[0]
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left
    assert f"-> {out}" in stdout.getvalue()


def test_the_downloaded_subject_export_imports(sandbox, tmp_path, db):
    from annotate.models import Item

    _seed(sandbox)
    out = tmp_path / "subjects.csv"
    call_command(
        "zooniverse_export", "--kind", "subjects", "--workflow-id", str(sandbox.workflow_id),
        "--generate", "--out", str(out), stdout=io.StringIO(),
    )  # fmt: skip
    call_command("import_subjects", str(out), "--no-fetch", stdout=io.StringIO())
    assert Item.objects.count() == 3
    assert all(i.metadata["zooniverse"]["hidden_keys"] for i in Item.objects.all())


def test_an_export_stuck_creating_fails_the_command(sandbox, tmp_path):
    sandbox.faults.export_stuck("subjects")
    with pytest.raises(CommandError):
        call_command(
            "zooniverse_export", "--kind", "subjects", "--workflow-id",
            str(sandbox.workflow_id), "--generate", "--deadline", "0.5",
            "--out", str(tmp_path / "s.csv"), stdout=io.StringIO(),
        )  # fmt: skip
    assert not (tmp_path / "s.csv").exists()
