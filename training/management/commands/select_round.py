from __future__ import annotations

import csv
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.security import csv_escape
from annotate.services.rounds import RoundPublishError, round_publish
from ml.acquisition import list_strategies
from training.services.selection import SelectionError, round_select


class Command(BaseCommand):
    help = (
        "Choose the next round: the items the active model is least sure of (default strategy: "
        "ACQUISITION_STRATEGY), a random control share, and contested items that need another "
        "vote. --push sends it to Zooniverse with #priority by rank."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--size", type=int, required=True)
        parser.add_argument("--strategy", choices=list_strategies(), default=None)
        parser.add_argument("--random-share", type=float, default=None)
        relabel = parser.add_mutually_exclusive_group()
        relabel.add_argument("--relabel", dest="relabel", action="store_true", default=None,
                             help="let contested items compete for places")
        relabel.add_argument("--no-relabel", dest="relabel", action="store_false",
                             help="new items only (default: ACQUISITION_RELABEL)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--push", action="store_true", help="push the round to Zooniverse")
        parser.add_argument("--out", type=Path, help="write the picks as CSV")

    def handle(self, *args, **options) -> None:
        try:
            result = round_select(
                size=options["size"],
                strategy=options["strategy"],
                random_share=options["random_share"],
                relabel=options["relabel"],
                seed=options["seed"],
            )
        except SelectionError as exc:
            raise CommandError(str(exc)) from exc
        if options["out"]:
            with options["out"].open("w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["rank", "external_id", "score", "reason"])
                for pick in result.round.picks.select_related("item").order_by("rank"):
                    row = [pick.rank, pick.item.external_id, pick.score, pick.reason]
                    writer.writerow([csv_escape(cell) for cell in row])
        self.stdout.write(f"select_round {result.summary()}")
        if options["push"]:
            try:
                self.stdout.write(f"pushed: {round_publish(round=result.round)}")
            except RoundPublishError as exc:
                raise CommandError(str(exc)) from exc
