"""How long a loop step waits for its broker: kombu's filesystem transport beside Redis.

Usage, from the repository root::

    .venv/bin/python bench/broker_latency.py                # 3 runs x 50 requests per transport
    .venv/bin/python bench/broker_latency.py --runs 1 --requests 100 --keep

For each transport it makes a scratch ``CROWDLOOP_VAR_DIR`` under /tmp (its own SQLite database,
migrated; the filesystem broker's folders live there too), starts a real ``celery worker`` for
the ``default`` and ``train`` queues as the embedded stack does, with
``TRAIN_AFTER_NEW_LABELS=0``, and then, from a client process with the same settings, asks
``--requests`` times for the ``train`` step (``loop.services.pipeline.step_request``). With
retraining off the step has nothing to do: the worker claims it, records a ``nothing`` event and
returns, so the time from the request to the event's ``finished_at`` is the pipeline's own
overhead: the request's commit and publish, the broker's delivery, the claim and the record.
Each request waits for the previous one's event (requests in flight would coalesce), after a
random pause of 0.1-0.6 s so requests fall at every phase of the filesystem transport's poll.

The transports:

(a) ``filesystem://``, the embedded default (no ``REDIS_URL``): one file per message under
    ``CELERY_BROKER_DIR``, polled every ``CELERY_BROKER_POLL_S`` (0.5 s);
(b) Redis (``REDIS_URL``, database 14 of the local server by default, emptied before and after);
(c) kombu's SQLAlchemy transport on a SQLite file, only when ``sqlalchemy`` is already
    importable in this interpreter (the bench adds no dependency; it says so when it is absent).

Each of ``--runs`` runs (3) starts a fresh worker and database per transport, (a) then (b)
then (c). Per run and transport it prints the median, p95, min and max of request -> event,
split into the request call (``step_request``: the row update, the commit, the publish),
return -> claim (from the call's return to the worker's claim; it can come out slightly negative,
as the message leaves before the call returns) and claim -> event (the step's work and its
record); then the median of the runs' medians and p95s with their range, and their ratios to
Redis's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CELERY = str(Path(PYTHON).with_name("celery"))
DEFAULT_REDIS = "redis://127.0.0.1:6379/14"
WARMUP = 3  # requests before the timed ones: connections opened, modules imported


def say(text: str) -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------------------------
# The client: runs in a child process with the transport's settings
# --------------------------------------------------------------------------------------------


def client(*, requests: int, seed: int, broker_url: str, timeout_s: float) -> None:
    """Ask for the train step ``WARMUP + requests`` times; print the timings as JSON."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.db.models import Max
    from django.utils import timezone

    from config.celery import app
    from loop.models import LoopEvent, StepName
    from loop.services.pipeline import step_request

    if broker_url:
        sqla_configure(app, broker_url)
    rng = random.Random(seed)
    rows = []
    statuses: dict[str, int] = {}
    summary = ""
    for i in range(WARMUP + requests):
        time.sleep(rng.uniform(0.1, 0.6))
        last = LoopEvent.objects.filter(step=StepName.TRAIN).aggregate(top=Max("pk"))["top"] or 0
        asked = timezone.now()
        sent = step_request(name=StepName.TRAIN, reason=f"bench request {i}")
        published = timezone.now()
        if not sent:
            raise SystemExit(f"request {i}: a message was already on its way (coalesced)")
        deadline = time.monotonic() + timeout_s
        while True:
            event = (LoopEvent.objects.filter(step=StepName.TRAIN, pk__gt=last)
                     .order_by("pk").first())
            if event is not None:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"request {i}: no event after {timeout_s:.0f} s")
            time.sleep(0.01)
        if i < WARMUP:
            continue
        statuses[event.status] = statuses.get(event.status, 0) + 1
        summary = event.summary
        rows.append(
            {
                "total": (event.finished_at - asked).total_seconds(),
                "request": (published - asked).total_seconds(),
                "delivery": (event.started_at - published).total_seconds(),
                "run": (event.finished_at - event.started_at).total_seconds(),
            }
        )
    print(json.dumps({"rows": rows, "statuses": statuses, "summary": summary}))


def sqla_configure(app, broker_url: str) -> None:  # type: ignore[no-untyped-def]
    """Point the app at the SQLAlchemy transport. Its transport options go to
    ``create_engine`` whole, which refuses the filesystem ones from settings, so there are none;
    its poll is set on the transport class instead, to the filesystem's, for a like-for-like
    comparison (kombu's default is 1 s)."""
    from kombu.transport import sqlalchemy as sqla

    app.conf.broker_url = broker_url
    app.conf.broker_transport_options = {}
    sqla.Transport.polling_interval = float(os.environ.get("CELERY_BROKER_POLL_S", "0.5"))


def sqla_worker(*, broker_url: str, argv: list[str]) -> None:
    """A real Celery worker on the SQLAlchemy transport (``celery -b`` keeps the settings'
    transport options, which that transport cannot take)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from config.celery import app

    sqla_configure(app, broker_url)
    app.worker_main(argv)


# --------------------------------------------------------------------------------------------
# The parent: a scratch folder, a migrated database, a worker, the client, and cleanup
# --------------------------------------------------------------------------------------------


def scratch_env(var_dir: Path, *, redis_url: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        CROWDLOOP_VAR_DIR=str(var_dir),
        CELERY_BROKER_DIR=str(var_dir / "broker"),
        TRAIN_AFTER_NEW_LABELS="0",
        DJANGO_SETTINGS_MODULE="config.settings",
        PYTHONUNBUFFERED="1",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def start_worker(env: dict[str, str], log: Path, *, name: str,
                 broker_url: str = "") -> subprocess.Popen[bytes]:
    argv = ([PYTHON, __file__, "sqla-worker", "--broker-url", broker_url, "--"] if broker_url
            else [CELERY, "-A", "config"])
    argv += ["worker", "-Q", "default,train", "--concurrency", "2", "--loglevel", "INFO",
             "--without-mingle", "--without-gossip", "-n", f"{name}@%h"]
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def wait_ready(process: subprocess.Popen[bytes], log: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"the worker exited ({process.returncode}):\n{tail}")
        if " ready." in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:]
    raise SystemExit(f"the worker was not ready after {timeout_s:.0f} s:\n{tail}")


def stop(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM the worker's group (warm shutdown), SIGKILL it if it lingers."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def measure(label: str, *, requests: int, seed: int, keep: bool, redis_url: str = "",
            broker_url: str = "", timeout_s: float = 60.0) -> dict:
    """One transport: scratch folder, migrate, worker, client; the client's JSON."""
    var_dir = Path(tempfile.mkdtemp(prefix=f"crowdloop-broker-{label}-", dir="/tmp"))
    env = scratch_env(var_dir, redis_url=redis_url)
    worker = None
    try:
        subprocess.run([PYTHON, "manage.py", "migrate", "--verbosity", "0"], cwd=REPO, env=env,
                       check=True)
        log = var_dir / "worker.log"
        worker = start_worker(env, log, name=f"bench-{label}", broker_url=broker_url)
        wait_ready(worker, log)
        argv = [PYTHON, __file__, "client", "--requests", str(requests), "--seed", str(seed),
                "--timeout", str(timeout_s)]
        if broker_url:
            argv += ["--broker-url", broker_url]
        done = subprocess.run(argv, cwd=REPO, env=env, check=True, capture_output=True, text=True,
                              timeout=requests * (timeout_s + 1) + 300)
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        if worker is not None:
            stop(worker)
        if keep:
            say(f"    scratch folder kept: {var_dir}")
        else:
            shutil.rmtree(var_dir, ignore_errors=True)


def redis_flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)),
            "min": float(a.min()), "max": float(a.max())}


def ms(x: float) -> str:
    return f"{x * 1000:8.1f}"


def report(label: str, result: dict) -> dict[str, float]:
    rows = result["rows"]
    total = stats([r["total"] for r in rows])
    say(f"  {label}: {len(rows)} requests, events {result['statuses']} "
        f"(\"{result['summary']}\")")
    say(f"    {'ms':<22}{'median':>8} {'p95':>8} {'min':>8} {'max':>8}")
    for part in ("total", "request", "delivery", "run"):
        s = stats([r[part] for r in rows])
        name = {"total": "request -> event", "request": "  request call",
                "delivery": "  return -> claim", "run": "  claim -> event"}[part]
        say(f"    {name:<22}{ms(s['median'])} {ms(s['p95'])} {ms(s['min'])} {ms(s['max'])}")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    client_args = sub.add_parser("client", help="(internal) the timed requests, in a child")
    client_args.add_argument("--requests", type=int, required=True)
    client_args.add_argument("--seed", type=int, default=0)
    client_args.add_argument("--broker-url", default="")
    client_args.add_argument("--timeout", type=float, default=60.0)
    sqla_args = sub.add_parser("sqla-worker",
                               help="(internal) a worker on the SQLAlchemy transport")
    sqla_args.add_argument("--broker-url", required=True)
    sqla_args.add_argument("argv", nargs=argparse.REMAINDER)
    parser.add_argument("--requests", type=int, default=50, help="timed requests per transport")
    parser.add_argument("--runs", type=int, default=3,
                        help="runs per transport, each with a fresh worker and database")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the pauses between requests (run n uses seed + n - 1)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS,
                        help=f"a Redis database the bench may empty ({DEFAULT_REDIS})")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folders")
    args = parser.parse_args()
    if args.command == "client":
        client(requests=args.requests, seed=args.seed, broker_url=args.broker_url,
               timeout_s=args.timeout)
        return
    if args.command == "sqla-worker":
        sqla_worker(broker_url=args.broker_url, argv=[a for a in args.argv if a != "--"])
        return

    import celery
    import kombu

    say(f"broker latency: {args.requests} train-step requests per transport (+{WARMUP} warm-up), "
        f"TRAIN_AFTER_NEW_LABELS=0 (the step returns 'off' at once)")
    say(f"celery {celery.__version__}, kombu {kombu.__version__}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{tuple(round(x, 2) for x in os.getloadavg())}")
    poll = os.environ.get("CELERY_BROKER_POLL_S", "0.5")
    try:
        import sqlalchemy

        sqla_version = sqlalchemy.__version__
    except ImportError:
        sqla_version = ""
    runs: dict[str, list[dict[str, float]]] = {"filesystem": [], "redis": []}
    if sqla_version:
        runs["sqlalchemy"] = []
    for n in range(1, args.runs + 1):
        seed = args.seed + n - 1
        say(f"\nrun {n} of {args.runs} (a fresh worker and database per transport, seed {seed})")
        say(f"(a) filesystem:// (the embedded default), polling every {poll} s, SQLite")
        runs["filesystem"].append(report("filesystem", measure(
            "fs", requests=args.requests, seed=seed, keep=args.keep)))
        say(f"(b) Redis ({args.redis_url}), SQLite")
        redis_flush(args.redis_url)
        try:
            runs["redis"].append(report("redis", measure(
                "redis", requests=args.requests, seed=seed, keep=args.keep,
                redis_url=args.redis_url)))
        finally:
            redis_flush(args.redis_url)
        if not sqla_version:
            say("(c) SQLAlchemy transport: not timed, sqlalchemy is not installed in this "
                "interpreter (the bench adds no dependency)")
            continue
        say(f"(c) SQLAlchemy transport (sqlalchemy {sqla_version}) on a SQLite file, polling "
            f"every {poll} s")
        url_dir = Path(tempfile.mkdtemp(prefix="crowdloop-broker-sqla-db-", dir="/tmp"))
        try:
            runs["sqlalchemy"].append(report("sqlalchemy", measure(
                "sqla", requests=args.requests, seed=seed, keep=args.keep,
                broker_url=f"sqla+sqlite:///{url_dir / 'broker.sqlite3'}")))
        finally:
            shutil.rmtree(url_dir, ignore_errors=True)

    def summary(name: str, key: str) -> tuple[float, str]:
        values = [r[key] * 1000 for r in runs[name]]
        middle = float(np.median(values))
        return middle, f"{middle:6.1f} ms ({min(values):.1f}-{max(values):.1f})"

    say(f"\nrequest -> event recorded over {args.runs} runs of {args.requests} requests: the "
        "median of the runs' figures, their range in brackets; ratios of those medians to Redis's")
    say(f"  {'':<11} {'median':<26}{'p95':<26}{'ratio':>7} {'p95 ratio':>10}")
    redis_median, _ = summary("redis", "median")
    redis_p95, _ = summary("redis", "p95")
    for name in runs:
        median, median_text = summary(name, "median")
        p95, p95_text = summary(name, "p95")
        say(f"  {name:<11} {median_text:<26}{p95_text:<26}{median / redis_median:6.1f}x "
            f"{p95 / redis_p95:9.1f}x")
    if not sqla_version:
        say("  sqlalchemy  not timed: sqlalchemy is not installed in this interpreter")
    say(f"load average at the end: {tuple(round(x, 2) for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
