"""A Zooniverse export (classifications, subjects, workflows) requested and downloaded to a file."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Literal

from django.conf import settings

from annotate.zooniverse.client import ZooniverseClient, connect

ExportKind = Literal["classifications", "subjects", "workflows"]
EXPORT_KINDS: tuple[str, ...] = ("classifications", "subjects", "workflows")


def zooniverse_export_download(
    *,
    kind: ExportKind,
    workflow_id: int,
    out: Path,
    generate: bool = False,
    client: ZooniverseClient | None = None,
    deadline_s: float = 3600.0,
    poll_s: float = 15.0,
) -> Path:
    """Download the workflow's ``kind`` export to ``out``; with ``generate``, request it first.

    Without ``generate`` the latest export is used if it is at most a day old. The body is
    streamed under a byte cap (``ZOONIVERSE_EXPORT_MAX_BYTES``) next to ``out`` and moved into
    place only when complete, so a failed download never leaves a partial file at ``out``.

    Raises:
        annotate.zooniverse.client.ZooniverseError: the export could not be had.
    """
    if kind not in EXPORT_KINDS:
        raise ValueError(f"unknown export kind {kind!r}: one of {', '.join(EXPORT_KINDS)}")
    client = client if client is not None else connect()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as directory:
        path = client.export_fetch(
            resource="workflows",
            resource_id=workflow_id,
            directory=Path(directory),
            max_bytes=int(settings.ZOONIVERSE_EXPORT_MAX_BYTES),
            export_type=kind,
            generate=generate,
            deadline_s=deadline_s,
            poll_s=poll_s,
        )
        shutil.move(str(path), out)
    return out
