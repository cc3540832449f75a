"""Run the embedded stack's processes side by side and stop them all together.

``manage.py serve`` and ``manage.py demo`` start the web server, a Celery worker and beat (and,
for the demo, the Zooniverse stand-in) as child processes, each in its own process group, with
their output prefixed by name. Ctrl-C or SIGTERM, or any child exiting, stops every one of them:
SIGTERM to each group, SIGKILL to whatever still runs after a grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def manage(*args: str) -> list[str]:
    """argv for ``manage.py`` with this interpreter."""
    return [sys.executable, str(BASE_DIR / "manage.py"), *args]


def celery(*args: str) -> list[str]:
    """argv for the ``celery`` command beside this interpreter."""
    return [str(Path(sys.executable).with_name("celery")), "-A", "config", *args]


def embedded_specs(*, port: int, web_workers: int = 2, worker_concurrency: int = 2,
                   env: dict[str, str] | None = None) -> list[ProcessSpec]:
    """The web server, one worker for both queues, and beat: the loop running by itself."""
    env = env or {}
    var = os.environ.get("CROWDLOOP_VAR_DIR", str(BASE_DIR / "var"))
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    return [
        ProcessSpec(
            "web",
            [gunicorn, "config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers",
             str(web_workers), "--threads", "4", "--access-logfile", "-", "--log-level",
             "warning"],
            env,
        ),
        ProcessSpec(
            "worker",
            celery("worker", "-Q", "default,train", "--concurrency", str(worker_concurrency),
                   "--loglevel", "INFO", "--without-mingle", "--without-gossip",
                   "-n", "embedded@%h"),
            # Stopping the embedded worker waits for its running task, as a warm shutdown does:
            # there is no other worker to hand it to (CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT is for
            # deployments with several, config/celery.py).
            {"CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT": "0", **env},
        ),
        ProcessSpec(
            "beat",
            celery("beat", "--loglevel", "INFO", "--schedule",
                   str(Path(var) / "celerybeat-schedule")),
            env,
        ),
    ]


class Supervisor:
    """Child processes started together, watched together, stopped together."""

    def __init__(self, *, out: Callable[[str], None] | None = None) -> None:
        self.out = out or (lambda line: print(line, flush=True))
        self.children: dict[str, subprocess.Popen[str]] = {}
        self._threads: list[threading.Thread] = []

    def start(self, spec: ProcessSpec) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            spec.argv,
            cwd=BASE_DIR,
            env={**os.environ, **spec.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own group: Ctrl-C reaches us, we stop it
        )
        self.children[spec.name] = process
        thread = threading.Thread(
            target=self._relay, args=(spec.name, process), daemon=True, name=f"relay-{spec.name}"
        )
        thread.start()
        self._threads.append(thread)
        return process

    def _relay(self, name: str, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.out(f"{name:>8} | {line.rstrip()}")

    def wait(self, *, poll_s: float = 0.5) -> str:
        """Block until a child exits, Ctrl-C or SIGTERM; the reason."""
        stop = threading.Event()
        reason = {"why": ""}

        def on_term(signum, frame):
            reason["why"] = "SIGTERM"
            stop.set()

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            while not stop.is_set():
                for name, process in self.children.items():
                    if process.poll() is not None:
                        return f"{name} exited with status {process.returncode}"
                stop.wait(poll_s)
        except KeyboardInterrupt:
            return "Ctrl-C"
        finally:
            signal.signal(signal.SIGTERM, previous)
        return reason["why"]

    def stop(self, *, grace_s: float = 10.0) -> None:
        """SIGTERM every child's group, then SIGKILL what is left after ``grace_s``.

        A second Ctrl-C meanwhile is ignored: the children are already being stopped, and
        leaving now would orphan them.
        """
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._stop(grace_s)
        finally:
            signal.signal(signal.SIGINT, previous)

    def _stop(self, grace_s: float) -> None:
        for process in self.children.values():
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace_s
        for process in self.children.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()

    @contextmanager
    def running(self) -> Iterator[Supervisor]:
        try:
            yield self
        finally:
            self.stop()
