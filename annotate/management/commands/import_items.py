from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from annotate.services.items import ManifestError, items_import


class Command(BaseCommand):
    help = (
        "Import items from a CSV or JSONL manifest: external_id, image (URL or path relative to "
        "the manifest), title, prior_labels (concept keys separated by ';'). Re-importing updates "
        "items by external id; each bad row is reported with its line and the rest imports. "
        "Local images must lie in the manifest's folder or in IMPORT_ROOTS."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument(
            "--encoding",
            default="utf-8",
            help="the manifest's text encoding, e.g. cp1252 (default utf-8; a BOM is fine)",
        )
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--show", type=int, default=20, help="bad rows to print (default 20)")

    def handle(
        self, *args, path: Path, encoding: str, batch_size: int, show: int, **options
    ) -> None:
        bar = tqdm(desc="items", unit=" rows", disable=options["verbosity"] < 1, leave=False)
        try:
            report, counts = items_import(
                path=path, encoding=encoding, batch_size=batch_size, progress=bar.update
            )
        except ManifestError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        for row in report.rows.all()[:show]:
            self.stderr.write(f"{path}:{row.line}: {row.reason}")
        if counts.quarantined > show:
            self.stderr.write(
                f"... and {counts.quarantined - show} more (import report {report.pk})"
            )
        self.stdout.write(f"import_items {path}: {counts.summary()}")
