from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from annotate.services.zooniverse.classification_import import (
    ClassificationImportError,
    classifications_import,
)


class Command(BaseCommand):
    help = (
        "Import a Zooniverse classification export CSV for a configured workflow, streamed in "
        "batches (one transaction each). Subjects not known yet are matched to items by subject "
        "metadata external_id, then europeana_id. Re-importing is a no-op; each bad row is "
        "quarantined with its line and reason and the rest imports."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--workflow-id", type=int, required=True)
        parser.add_argument(
            "--batch-size", type=int, default=60_000, help="rows per transaction (default 60,000)"
        )
        parser.add_argument("--show", type=int, default=20, help="bad rows to print (default 20)")

    def handle(
        self, *args, path: Path, workflow_id: int, batch_size: int, show: int, **options
    ) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        size = path.stat().st_size if path.is_file() else None
        # tqdm writes to stderr, so the summary line on stdout stays machine-readable.
        bar = tqdm(
            total=size,
            desc="classifications",
            unit="B",
            unit_scale=True,
            disable=options["verbosity"] < 1,
            leave=False,
        )
        rows = 0

        def progress(read: int, nbytes: int) -> None:
            nonlocal rows
            rows += read
            bar.set_postfix_str(f"{rows} rows", refresh=False)
            bar.update(nbytes)

        try:
            report, counts = classifications_import(
                path=path, workflow_id=workflow_id, batch_size=batch_size, progress=progress
            )
        except ClassificationImportError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        for warning in counts.warnings:
            self.stderr.write(warning)
        for row in report.rows.all()[:show]:
            where = f"{path}:{row.line}" if row.line else str(path)
            ident = f" classification {row.record_id}" if row.record_id else ""
            self.stderr.write(f"{where}:{ident} {row.field}: {row.reason}")
        if counts.quarantined > show:
            self.stderr.write(
                f"... and {counts.quarantined - show} more (import report {report.pk})"
            )
        self.stdout.write(
            f"import_classifications {path}: {counts.summary()} (import report {report.pk})"
        )
