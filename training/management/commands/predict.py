from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from training.services.scoring import predictions_export


class Command(BaseCommand):
    help = (
        "Write model scores as JSONL {external_id, scores{key: p}}: stored predictions, and "
        "items not scored yet scored now. Default: the active version, every item in the pool."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument(
            "--items", type=Path, default=None,
            help="External ids to score: JSONL or CSV with external_id, or one id a line.",
        )
        parser.add_argument("--model-version", type=int, default=None, dest="model_version")

    def handle(self, *args, out: Path, items: Path | None, model_version: int | None,
               **options) -> None:
        if items is not None and not items.is_file():
            raise CommandError(f"no such file: {items}")
        try:
            result = predictions_export(out=out, items_path=items, model_version_id=model_version)
        except (ValueError, KeyError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"predict: {result['written']} items written to {out} with model "
            f"v{result['model_version']}; {result['refused']} images refused, "
            f"{result['unknown']} unknown ids"
        )
