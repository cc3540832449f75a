"""Run the local Panoptes sandbox with the project's vocabulary as the workflow's answers.

    python manage.py zooniverse_sandbox --port 8765 [--host 127.0.0.1] [--state var/sandbox.json]

The first lines of output are ``KEY=value`` pairs a shell or a demo script can read:
``PANOPTES_ENDPOINT``, ``PANOPTES_PROJECT_ID`` and ``PANOPTES_WORKFLOW_ID``. The sandbox accepts
any client id, secret, username and password. Everything else lives in
``annotate.zooniverse.sandbox``.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from annotate.models import Concept
from annotate.zooniverse.sandbox import DEFAULT_RETIREMENT_COUNT, Sandbox, SandboxServer, serve

DEFAULT_VOCABULARY_FILE = Path(__file__).resolve().parents[2] / "data" / "europeana_vocabulary.json"


def vocabulary_load(*, path: Path | None = None) -> tuple[list[str], list[str]]:
    """Answer labels and concept keys, in order: the active Concepts, else the shipped file."""
    try:
        concepts = list(Concept.objects.filter(active=True).order_by("position", "key"))
    except DatabaseError:
        # A fresh checkout without migrations can still run the sandbox on the shipped file.
        concepts = []
    if concepts:
        return [c.label for c in concepts], [c.key for c in concepts]
    path = path or DEFAULT_VOCABULARY_FILE
    if not path.exists():
        raise CommandError(
            f"No active concepts in the database and no vocabulary file at {path}; "
            "load the vocabulary first."
        )
    entries = json.loads(path.read_text())
    if not isinstance(entries, list) or not entries:
        raise CommandError(f"{path} must hold a non-empty JSON list of {{key, label, uri}}")
    return [str(e["label"]) for e in entries], [str(e.get("key") or e["label"]) for e in entries]


def wait_until_interrupted(server: SandboxServer, thread: threading.Thread) -> None:
    """Block until Ctrl-C (tests replace this to stop at once)."""
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        pass


class Command(BaseCommand):
    help = "Serve a local Panoptes (Zooniverse) sandbox whose workflow asks for the vocabulary."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8765, help="0 picks a free port.")
        parser.add_argument("--host", default="127.0.0.1", help="Loopback only.")
        parser.add_argument("--state", default=None, help="JSON file to keep state across runs.")
        parser.add_argument(
            "--retirement-count",
            type=int,
            default=DEFAULT_RETIREMENT_COUNT,
            help="Classifications before a subject retires (Panoptes default 15).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        labels, keys = vocabulary_load()
        try:
            sandbox = Sandbox(
                labels,
                keys=keys,
                state_path=options["state"],
                retirement_count=options["retirement_count"],
            )
            server, thread = serve(options["host"], options["port"], sandbox=sandbox)
        except (ValueError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"PANOPTES_ENDPOINT={server.endpoint}")
        self.stdout.write(f"PANOPTES_PROJECT_ID={sandbox.project_id}")
        self.stdout.write(f"PANOPTES_WORKFLOW_ID={sandbox.workflow_id}")
        self.stdout.write(
            f"# {len(labels)} answers; any client id/secret is accepted. "
            f"Faults: POST {server.endpoint}/_sandbox/faults; crowd: POST "
            f"{server.endpoint}/_sandbox/volunteers. Ctrl-C stops."
        )
        self.stdout.flush()
        try:
            wait_until_interrupted(server, thread)
        finally:
            server.shutdown()
            server.server_close()
