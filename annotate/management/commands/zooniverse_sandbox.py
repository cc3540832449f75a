"""Run the local Panoptes sandbox with the project's vocabulary as the workflow's answers.

    python manage.py zooniverse_sandbox --port 8765 [--host 127.0.0.1] [--state var/sandbox.json]
        [--volunteers-per-minute 6 --truth var/demo/truth.json --crowd-seed 0 --crowd-size 20
         --crowd hard]

The first lines of output are ``KEY=value`` pairs a shell or a demo script can read:
``PANOPTES_ENDPOINT``, ``PANOPTES_PROJECT_ID`` and ``PANOPTES_WORKFLOW_ID``. The sandbox accepts
any client id, secret, username and password.

``--volunteers-per-minute K`` starts a live crowd that keeps classifying the linked, unretired
subjects at about K a minute (idle while there are none), so a running app sees new votes arrive
by themselves; ``--truth`` is a JSON file ``{external_id: [concept keys]}`` for what its careful
volunteers should see (subjects it does not list fall back to their ``#truth`` metadata); an
entry may be ``{concept key: size}`` instead, each object's side as a share of the image side,
for volunteers who miss small objects. ``--crowd hard`` makes the live crowd ``ml.scenarios``'
hard scenario's (``CrowdConfig.for_scenario``): careful and careless volunteers who miss small
objects, 15% spammers, one to three votes per subject; ``easy`` (the default) is the default
crowd of ``ml.crowd``.
Ctrl-C (or SIGTERM) stops the crowd and the server. Everything else lives in
``annotate.zooniverse.sandbox``.
"""

from __future__ import annotations

import json
import math
import signal
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from annotate.models import Concept
from annotate.zooniverse.sandbox import (
    DEFAULT_RETIREMENT_COUNT,
    CrowdConfig,
    Sandbox,
    SandboxServer,
    serve,
)

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


def truth_load(*, path: Path) -> dict[str, list[str] | dict[str, float | None]]:
    """The live crowd's truth file: ``{external_id: [concept keys]}`` (an entry may also be
    ``{concept key: size or null}``), checked entry by entry."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CommandError(f"--truth {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"--truth {path}: cannot read it ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"--truth {path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise CommandError(
            f"--truth {path}: must hold a JSON object {{external_id: [concept keys]}}, "
            f"not a {type(data).__name__}"
        )
    for external_id, keys in data.items():
        if isinstance(keys, dict):
            sizes = keys.values()
            if all(_is_size(size) for size in sizes):
                continue
        elif isinstance(keys, list) and all(isinstance(k, str) for k in keys):
            continue
        raise CommandError(
            f"--truth {path}: the entry for {external_id!r} must be a list of concept keys, "
            f"or {{concept key: size}} with sizes >= 0 or null, got {keys!r}"
        )
    return data


def _is_size(value: object) -> bool:
    return value is None or (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def wait_until_interrupted(server: SandboxServer, thread: threading.Thread) -> None:
    """Block until Ctrl-C or SIGTERM (tests replace this to stop at once)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # A demo runs the sandbox as a background process and ends it with SIGTERM: take the same
    # clean way out as Ctrl-C. Signal handlers can only be set from the main thread.
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, interrupt) if on_main else None
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


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
        parser.add_argument(
            "--volunteers-per-minute",
            type=float,
            default=0.0,
            metavar="K",
            help="A live crowd classifies about K subjects a minute (default 0: no live crowd).",
        )
        parser.add_argument(
            "--truth",
            type=Path,
            default=None,
            metavar="PATH",
            help="JSON {external_id: [concept keys]}: what the live crowd should see "
            "(default: each subject's #truth metadata).",
        )
        parser.add_argument(
            "--crowd-seed", type=int, default=0, metavar="N", help="The live crowd's seed."
        )
        parser.add_argument(
            "--crowd",
            choices=("easy", "hard"),
            default="easy",
            help="The live crowd's volunteers: the sandbox's own (easy), or ml.scenarios' hard "
            "scenario's, who miss small objects, with 15%% spammers and one to three votes per "
            "subject (hard).",
        )
        parser.add_argument(
            "--crowd-size",
            type=int,
            default=CrowdConfig.n_volunteers,
            metavar="N",
            help=f"Volunteers in the live crowd (default {CrowdConfig.n_volunteers}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        per_minute = options["volunteers_per_minute"]
        if per_minute < 0:
            raise CommandError(f"--volunteers-per-minute must be 0 or more, got {per_minute:g}")
        truth = truth_load(path=options["truth"]) if options["truth"] else None
        crowd = CrowdConfig.for_scenario(
            options["crowd"], n_volunteers=options["crowd_size"], seed=options["crowd_seed"]
        )
        labels, keys = vocabulary_load()
        if truth:
            self._warn_unknown_truth(options["truth"], truth, labels, keys)
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
        try:
            if per_minute > 0:
                try:
                    sandbox.live_crowd_start(per_minute=per_minute, crowd=crowd, truth=truth)
                except ValueError as exc:
                    raise CommandError(f"live crowd: {exc}") from exc
            self.stdout.write(f"PANOPTES_ENDPOINT={server.endpoint}")
            self.stdout.write(f"PANOPTES_PROJECT_ID={sandbox.project_id}")
            self.stdout.write(f"PANOPTES_WORKFLOW_ID={sandbox.workflow_id}")
            self.stdout.write(
                f"# {len(labels)} answers; any client id/secret is accepted. "
                f"Faults: POST {server.endpoint}/_sandbox/faults; crowd: POST "
                f"{server.endpoint}/_sandbox/volunteers. Ctrl-C stops."
            )
            if per_minute > 0:
                source = f"{options['truth']}, else #truth" if truth is not None else "#truth"
                kind = " of the hard scenario's crowd" if options["crowd"] == "hard" else ""
                self.stdout.write(
                    f"# live crowd: {per_minute:g} classifications a minute by "
                    f"{crowd.n_volunteers} volunteers{kind} (seed {crowd.seed}, truth from "
                    f"{source}); "
                    f"status and rate: GET/POST {server.endpoint}/_sandbox/live"
                )
            else:
                self.stdout.write(
                    f"# live crowd: off (--volunteers-per-minute K, or POST "
                    f"{server.endpoint}/_sandbox/live)"
                )
            self.stdout.flush()
            wait_until_interrupted(server, thread)
        finally:
            sandbox.live_crowd_stop()
            server.shutdown()
            server.server_close()

    def _warn_unknown_truth(
        self, path: Path, truth: Mapping[str, Iterable[str]], labels: list[str], keys: list[str]
    ) -> None:
        # The sandbox ignores entries that name no answer, so a truth file written for another
        # vocabulary would quietly make every careful volunteer tick nothing.
        known = {name.lower() for name in [*labels, *keys]}
        unknown = sorted({k for keys_ in truth.values() for k in keys_ if k.lower() not in known})
        if unknown:
            shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            self.stderr.write(
                f"--truth {path}: {len(unknown)} concept key(s) are not answers of the workflow "
                f"and will never be ticked: {shown}"
            )
