from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from annotate.services.aggregation import labels_aggregate


class Command(BaseCommand):
    help = (
        "Aggregate the volunteers' votes into labels per item and concept, with volunteer skills "
        "(two-coin Dawid-Skene by default), and find the subjects settled enough to retire."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--method", choices=["dawid_skene", "majority"], default=None)
        parser.add_argument("--confidence", type=float, default=None, help="RETIRE_CONFIDENCE")

    def handle(self, *args, method: str | None, confidence: float | None, **options) -> None:
        verbose = options["verbosity"] >= 2
        summary = labels_aggregate(
            method=method,
            confidence=confidence,
            progress=(lambda text: self.stderr.write(f"  {text}")) if verbose else None,
        )
        self.stdout.write(f"aggregate {summary.summary()}")
