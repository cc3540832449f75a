from __future__ import annotations

import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from tqdm import tqdm

from annotate.services.demo import demo_accounts, demo_manifest_write, demo_vocabulary
from annotate.services.items import items_import
from annotate.services.vocabulary import vocabulary_load


class Command(BaseCommand):
    help = (
        "Run the crowdloop loop offline, end to end, on the local database: a digits vocabulary, "
        "mosaic images with noisy prior labels, and a curator and an admin account."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--items", type=int, default=400, help="mosaic images to import")
        parser.add_argument("--seed", type=int, default=7)

    def step(self, text: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"==> {text}"))

    def handle(self, *args, items: int, seed: int, **options) -> None:
        started = time.monotonic()
        self.step("database")
        call_command("migrate", interactive=False, verbosity=0)

        self.step("vocabulary: the ten digits")
        result = vocabulary_load(entries=demo_vocabulary())
        self.stdout.write(f"    {result.created} created, {result.unchanged} unchanged")

        self.step(f"images: {items} mosaics of handwritten digits, with noisy prior labels")
        manifest = demo_manifest_write(n=items, seed=seed)
        with tqdm(total=items, desc="    import", unit=" items", leave=False) as bar:
            _, counts = items_import(path=manifest.path, progress=bar.update)
        self.stdout.write(f"    {counts.summary()}")

        self.step("accounts")
        accounts = demo_accounts()
        for account in accounts:
            self.stdout.write(f"    {account.role}: {account.username} / {account.password}")

        port = settings.DEMO_PORT
        self.stdout.write(
            self.style.SUCCESS(f"demo ready in {time.monotonic() - started:.0f} s: ")
            + f"open http://127.0.0.1:{port}/admin/ and log in as one of the accounts above "
            f"(also in {settings.VAR_DIR}/demo/credentials.txt)."
        )
