from __future__ import annotations

import logging
import shutil
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from loop.services.demo import DemoLoopConfig, demo_accounts, demo_loop


class Command(BaseCommand):
    help = (
        "Run the crowdloop loop offline, end to end, on the local database and a Panoptes sandbox: "
        "digit mosaics with noisy priors, a cold-start round pushed to the sandbox, simulated "
        "volunteers, pull, aggregation and retirement, curator corrections, training, a second "
        "round chosen by the model, retraining, and a dataset release."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--items", type=int, default=600, help="mosaic images to import")
        parser.add_argument("--first-round", type=int, default=150)
        parser.add_argument(
            "--next-round",
            type=int,
            action="append",
            default=None,
            help="size of each later round (repeatable; default one of 120)",
        )
        parser.add_argument("--votes", type=int, default=5, help="classifications per subject")
        parser.add_argument("--epochs", type=int, default=8)
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument(
            "--reset",
            action="store_true",
            help="start from an empty database and artifact folder (what make demo does)",
        )

    def handle(self, *args, **options) -> None:
        started = time.monotonic()

        def say(text: str) -> None:
            stamp = f"[{time.monotonic() - started:5.0f} s]"
            if text.startswith("  "):
                self.stdout.write(f"{stamp}     {text.strip()}")
            else:
                self.stdout.write(self.style.MIGRATE_HEADING(f"{stamp} ==> {text}"))
            self.stdout.flush()

        # The steps speak for themselves; the services' INFO logs would drown them.
        logging.getLogger().setLevel(logging.WARNING)
        if settings.PRODUCTION:
            raise CommandError("the demo fills the database with made-up data: not in production")
        say("database")
        call_command("migrate", interactive=False, verbosity=0)
        if options["reset"]:
            call_command("flush", interactive=False, verbosity=0)
            shutil.rmtree(settings.ARTIFACT_ROOT, ignore_errors=True)
        accounts = demo_accounts()
        from loop.services.demo import DEMO_TRAIN_PARAMS

        config = DemoLoopConfig(
            items=options["items"],
            seed=options["seed"],
            first_round=options["first_round"],
            next_rounds=tuple(options["next_round"] or (120,)),
            votes_per_subject=options["votes"],
            train_params={**DEMO_TRAIN_PARAMS, "epochs": options["epochs"]},
        )
        demo_loop(config=config, say=say)

        port = settings.DEMO_PORT
        self.stdout.write("")
        for account in accounts:
            self.stdout.write(f"    {account.role}: {account.username} / {account.password}")
        self.stdout.write(
            self.style.SUCCESS(f"demo ready in {time.monotonic() - started:.0f} s. ")
            + f"Open http://127.0.0.1:{port}/admin/ (dashboard: /review/dashboard/, review queue: "
            f"/review/) and log in as one of the accounts above (also in "
            f"{settings.VAR_DIR}/demo/credentials.txt)."
        )
