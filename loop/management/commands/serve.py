"""Serve crowdloop with the loop running by itself: the web server, a Celery worker and beat.

    python manage.py serve [--port 8000] [--no-worker]

Without REDIS_URL the worker and beat talk through the filesystem broker (config/settings.py);
with it, through Redis. Ctrl-C (or SIGTERM) stops every process this command started.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from loop.services.processes import Supervisor, embedded_specs


class Command(BaseCommand):
    help = "Serve the web UI beside a Celery worker and beat, so the loop runs by itself."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=settings.DEMO_PORT)
        parser.add_argument(
            "--no-worker",
            action="store_true",
            help="only the web server (workers and beat run elsewhere, e.g. with Redis)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        specs = embedded_specs(port=options["port"])
        if options["no_worker"]:
            specs = specs[:1]

        def out(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        supervisor = Supervisor(out=out)
        with supervisor.running():
            for spec in specs:
                supervisor.start(spec)
            broker = "Redis" if settings.REDIS_URL else f"files under {settings.CELERY_BROKER_DIR}"
            self.stdout.write(
                self.style.SUCCESS(f"Serving on http://127.0.0.1:{options['port']}/")
                + f" with {', '.join(s.name for s in specs)} (broker: {broker}). Ctrl-C stops all."
            )
            reason = supervisor.wait()
            self.stdout.write(f"stopping ({reason})")
