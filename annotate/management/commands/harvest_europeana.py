from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from annotate.services.europeana import HarvestError, europeana_harvest


class Command(BaseCommand):
    help = (
        "Harvest items with images from the Europeana Search API, per concept "
        '(qf=skos_concept:"<URI>", media=true, cursor paging). '
        "The key comes from EUROPEANA_API_KEY. "
        "Each item gets the concept as a prior label (source 'europeana')."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concept", nargs="+", required=True, metavar="KEY")
        parser.add_argument("--limit", type=int, default=100, help="items per concept")

    def handle(self, *args, concept: list[str], limit: int, **options) -> None:
        if limit < 1:
            raise CommandError("--limit must be at least 1")
        bar = tqdm(desc="harvest", unit=" records", disable=options["verbosity"] < 1, leave=False)
        try:
            report, counts = europeana_harvest(
                concept_keys=concept, limit=limit, progress=bar.update
            )
        except HarvestError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        for row in report.rows.all()[:20]:
            self.stderr.write(f"record {row.line} ({row.record_id or 'no id'}): {row.reason}")
        self.stdout.write(f"harvest_europeana: {counts.summary()}")
