"""The offline demo: the scripted rounds, then the loop running by itself while it is served.

    python manage.py demo --reset [--serve] [--port 8000] [--sandbox-port 8765]

It starts the Zooniverse stand-in (``zooniverse_sandbox``) and a Celery worker as child
processes and runs the scripted rounds against them (this process pushes, asks the simulated
volunteers and pulls; the worker aggregates, retires, trains and writes the release). With
``--serve`` it then starts the web server, beat and a worker with ``AUTO_ROUNDS=1`` and turns on
the stand-in's live crowd, so the loop goes on by itself; ``--scenario hard`` takes the items and
the volunteers from ``ml.scenarios``' hard scenario. Ctrl-C stops every process it started. What
a run shows: README.md, "The loop, and what ``make demo`` shows".
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from typing import Any

import requests
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from loop.services.demo import (
    DEMO_PROJECT_ID,
    DEMO_TRAIN_PARAMS,
    DEMO_WORKFLOW_ID,
    DemoLoopConfig,
    demo_accounts,
    demo_crowd,
    demo_crowd_text,
    demo_dir,
    demo_loop,
    demo_prepare,
)
from loop.services.processes import ProcessSpec, Supervisor, celery, embedded_specs, manage


def demo_environment(*, port: int, sandbox_port: int, epochs: int) -> dict[str, str]:
    """The settings the demo's processes run with; a variable already set wins."""
    wanted = {
        "PANOPTES_ENDPOINT": f"http://127.0.0.1:{sandbox_port}",
        "PANOPTES_PROJECT_ID": str(DEMO_PROJECT_ID),
        "PANOPTES_CLIENT_ID": "crowdloop-demo",
        "PANOPTES_CLIENT_SECRET": "demo",
        "PUBLIC_MEDIA_BASE_URL": f"http://127.0.0.1:{port}/media",
        "ZOONIVERSE_SYNC_INTERVAL": "30",
        "TRAIN_AFTER_NEW_LABELS": "40",
        "TRAINING_EPOCHS": str(epochs),
        "ROUND_NEXT_SIZE": "60",
        "AGGREGATION_FULL_EVERY_S": "120",
        "LOOP_AGGREGATE_DELAY_S": "2",
        "AUTO_ROUNDS": "1",
    }
    return {key: os.environ.get(key) or value for key, value in wanted.items()}


class Command(BaseCommand):
    help = (
        "Run the crowdloop loop offline, end to end: digit mosaics with noisy priors, rounds "
        "pushed to a Zooniverse stand-in, simulated volunteers, aggregation, retirement, "
        "curator corrections, training and a release in a Celery worker; with --serve, then "
        "the web UI while the loop runs by itself."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--items", type=int, default=600, help="mosaic images to import")
        parser.add_argument("--first-round", type=int, default=150)
        parser.add_argument(
            "--next-round",
            type=int,
            action="append",
            default=None,
            help="size of each later scripted round (repeatable; default one of 120)",
        )
        parser.add_argument(
            "--votes",
            type=int,
            default=5,
            help="classifications per subject: the workflow's retirement count (the hard "
            "scenario's crowd gives one to three, at most this)",
        )
        parser.add_argument("--epochs", type=int, default=8)
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument(
            "--scenario",
            choices=("easy", "hard"),
            default="easy",
            help="the items and the crowd: digit mosaics and the stand-in's default volunteers "
            "(easy), or ml.scenarios' hard scenario and its noisier crowd (hard)",
        )
        parser.add_argument(
            "--reset",
            action="store_true",
            help="start from an empty database and artifact folder (what make demo does)",
        )
        parser.add_argument(
            "--serve",
            action="store_true",
            help="then serve the web UI with beat, a worker and the live crowd until Ctrl-C",
        )
        parser.add_argument("--port", type=int, default=settings.DEMO_PORT)
        parser.add_argument("--sandbox-port", type=int, default=8765)
        parser.add_argument(
            "--volunteers-per-minute",
            type=float,
            default=90.0,
            help="the live crowd's pace once served (0: no live crowd)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        if options["serve"] and options["port"] == options["sandbox_port"]:
            raise CommandError(
                f"--port {options['port']} is the Zooniverse stand-in's port: pick another "
                "(or move the stand-in with --sandbox-port)"
            )

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
        env = demo_environment(port=options["port"], sandbox_port=options["sandbox_port"],
                               epochs=options["epochs"])
        self._apply(env)
        say("database")
        call_command("migrate", interactive=False, verbosity=0)
        if options["reset"]:
            call_command("flush", interactive=False, verbosity=0)
            for folder in (settings.ARTIFACT_ROOT, settings.CELERY_BROKER_DIR / "queue"):
                shutil.rmtree(folder, ignore_errors=True)
            (settings.CELERY_BROKER_DIR / "queue").mkdir(parents=True, exist_ok=True)
            for stale in ("celerybeat-schedule", "celerybeat-schedule.db"):
                (settings.VAR_DIR / stale).unlink(missing_ok=True)
        accounts = demo_accounts()
        config = DemoLoopConfig(
            items=options["items"],
            seed=options["seed"],
            first_round=options["first_round"],
            next_rounds=tuple(options["next_round"] or (120,)),
            votes_per_subject=options["votes"],
            scenario=options["scenario"],
            train_params={**DEMO_TRAIN_PARAMS, "epochs": options["epochs"]},
        )
        manifest = demo_prepare(config=config, say=say)

        log = demo_dir() / "processes.log"
        handle = log.open("a")

        def out(line: str) -> None:
            handle.write(line + "\n")
            handle.flush()

        supervisor = Supervisor(out=out)
        endpoint = env["PANOPTES_ENDPOINT"]
        with supervisor.running():
            say(f"starting the Zooniverse stand-in and a worker (their logs: {log})")
            supervisor.start(ProcessSpec("sandbox", manage(
                "zooniverse_sandbox", "--port", str(options["sandbox_port"]),
                "--retirement-count", str(options["votes"]),
            ), env))
            scripted_worker = ProcessSpec("worker", celery(
                "worker", "-Q", "default,train", "--concurrency", "2", "--loglevel", "INFO",
                "--without-mingle", "--without-gossip", "-n", "demo-scripted@%h",
            ), {**env, "AUTO_ROUNDS": "0"})  # the scripted rounds choose their own
            supervisor.start(scripted_worker)
            self._wait_for_sandbox(endpoint)
            demo_loop(config=config, manifest=manifest, endpoint=endpoint, say=say)
            if not options["serve"]:
                say(f"demo done in {time.monotonic() - started:.0f} s")
                return
            self._serve(supervisor, env, options, manifest.crowd_truth(), config, accounts, say)

    @staticmethod
    def _apply(env: dict[str, str]) -> None:
        """The demo's settings, for this process (already configured) and its children."""
        from config.settings import env_bool

        os.environ.update(env)
        for key, value in env.items():
            current = getattr(settings, key, None)
            if isinstance(current, bool):
                setattr(settings, key, env_bool(key))
            elif isinstance(current, int | float):
                setattr(settings, key, type(current)(value))
            else:
                setattr(settings, key, value)

    @staticmethod
    def _wait_for_sandbox(endpoint: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if requests.get(f"{endpoint}/_sandbox/live", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise CommandError(f"the Zooniverse stand-in did not answer at {endpoint}")
            time.sleep(0.3)

    def _serve(self, supervisor: Supervisor, env: dict[str, str], options: dict[str, Any],
               truth: dict[str, Any], config: DemoLoopConfig, accounts: list,
               say: Any) -> None:
        port = options["port"]
        say("the loop now runs by itself: web server, beat and a worker with AUTO_ROUNDS=1")
        # The scripted rounds' worker (AUTO_ROUNDS=0) makes way for the served one: a warm
        # shutdown, then a kill if it is still busy after a minute (its tasks are idempotent).
        worker = supervisor.children.pop("worker")
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        call_command("collectstatic", interactive=False, verbosity=0)
        for spec in embedded_specs(port=port, env=env):
            supervisor.start(spec)
        rate = options["volunteers_per_minute"]
        if rate > 0:
            requests.post(
                f"{env['PANOPTES_ENDPOINT']}/_sandbox/live",
                json={"per_minute": rate, "crowd": {**demo_crowd(config), "seed": 11},
                      "truth": truth, "workflow_id": DEMO_WORKFLOW_ID},
                timeout=60,
            ).raise_for_status()
            say(f"  live crowd: {rate:g} classifications a minute on the stand-in, by "
                f"{demo_crowd_text(config)}")
        self.stdout.write("")
        for account in accounts:
            self.stdout.write(f"    {account.role}: {account.username} / {account.password}")
        self.stdout.write(
            self.style.SUCCESS(f"Serving on http://127.0.0.1:{port}/")
            + f" (dashboard: /review/dashboard/, loop as JSON: /api/v1/loop/, review queue: "
            "/review/, the model against the crowd: /review/?flag=model, decisions and their "
            "undo: /review/decisions/, staff actions: /admin/loop/loopstep/actions/, admin: "
            f"/admin/). Accounts also in {settings.VAR_DIR}/demo/credentials.txt."
            " Ctrl-C stops every process."
        )
        self.stdout.flush()
        reason = supervisor.wait()
        self.stdout.write(f"stopping ({reason})")
