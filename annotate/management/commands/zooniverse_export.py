from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.services.zooniverse.export_download import (
    EXPORT_KINDS,
    ExportKind,
    zooniverse_export_download,
)
from annotate.zooniverse.client import ZooniverseError


class Command(BaseCommand):
    help = (
        "Download a workflow's Zooniverse export (classifications, subjects or workflows) "
        "through panoptes-client; --generate requests a fresh one first and waits for it. "
        "Feed the file to import_classifications, import_subjects or configure_workflow."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kind", choices=EXPORT_KINDS, required=True)
        parser.add_argument("--workflow-id", type=int, required=True)
        parser.add_argument("--generate", action="store_true", help="request a fresh export")
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("--deadline", type=float, default=3600.0, help="seconds to wait")

    def handle(self, *args, kind: ExportKind, workflow_id: int, out: Path, **options) -> None:
        try:
            path = zooniverse_export_download(
                kind=kind,
                workflow_id=workflow_id,
                out=out,
                generate=options["generate"],
                deadline_s=options["deadline"],
            )
        except ZooniverseError as exc:
            raise CommandError(f"zooniverse_export: {exc}") from exc
        self.stdout.write(f"zooniverse_export: {kind} of workflow {workflow_id} -> {path}")
