from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.services.vocabulary import VocabularyError, vocabulary_load


class Command(BaseCommand):
    help = (
        "Load a vocabulary of concepts (CSV or JSON with key, label, uri). With no path, load the "
        "Europeana pilot's 20 concepts. Concepts are matched by key: re-loading changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "path", nargs="?", type=Path, help="CSV or JSON file; default: Europeana"
        )

    def handle(self, *args, path: Path | None = None, **options) -> None:
        try:
            result = vocabulary_load(path=path)
        except (VocabularyError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"vocabulary: {result.created} created, {result.updated} updated, "
            f"{result.unchanged} unchanged"
        )
