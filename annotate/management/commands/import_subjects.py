from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.services.zooniverse.subject_import import SubjectExportError, subjects_import


class Command(BaseCommand):
    help = (
        "Import a Zooniverse subject export: one item per subject (its first location as the "
        "image, its metadata kept, hidden keys marked), the subject linked to it with its "
        "retirement. The item's external id is 'zooniverse-subject-<id>' unless --external-id-key "
        "names a metadata key. Nothing is downloaded here: the fetch_item_images task fetches "
        "the images. Re-running changes nothing; bad rows are reported by line."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--workflow-id", type=int, default=None, help="only this workflow")
        parser.add_argument("--external-id-key", default="", help="metadata key of the item id")
        parser.add_argument("--batch-size", type=int, default=5000)
        parser.add_argument("--no-fetch", action="store_true", help="do not queue image fetches")
        parser.add_argument("--show", type=int, default=20, help="bad rows to print (default 20)")

    def handle(self, *args, path: Path, show: int, **options) -> None:
        try:
            report, counts = subjects_import(
                path=path,
                workflow_id=options["workflow_id"],
                external_id_key=options["external_id_key"],
                batch_size=options["batch_size"],
                fetch_images=not options["no_fetch"],
            )
        except SubjectExportError as exc:
            raise CommandError(str(exc)) from exc
        for row in report.rows.all()[:show]:
            self.stderr.write(
                f"{path}:{row.line}: subject {row.record_id} {row.field}: {row.reason}"
            )
        if counts.quarantined > show:
            self.stderr.write(
                f"... and {counts.quarantined - show} more (import report {report.pk})"
            )
        self.stdout.write(f"import_subjects {path}: {report.message}")
