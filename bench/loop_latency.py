"""How long the demo loop takes, on this machine: a vote upstream -> its label, and the vote that
settled a subject -> the subject's retirement upstream.

Usage, from the repository root::

    .venv/bin/python bench/loop_latency.py                     # 3 runs x 5 live minutes, 30 s pulls
    .venv/bin/python bench/loop_latency.py --runs 1 --minutes 20 --sync-interval 300

Each run starts the real stack as ``make demo`` does, in a scratch ``CROWDLOOP_VAR_DIR`` under
/tmp (its own SQLite database and filesystem broker; ``DATABASE_URL`` and ``REDIS_URL`` are
dropped from the environment)::

    manage.py demo --reset --serve --port P --sandbox-port S --volunteers-per-minute K

with ``ZOONIVERSE_SYNC_INTERVAL`` set to ``--sync-interval``. The demo runs its scripted rounds,
then serves: the web server, a Celery worker, beat and the Zooniverse stand-in as child processes,
and the stand-in's live crowd classifying ``--per-minute`` times a minute. The bench lets the crowd
run ``--minutes``, stops it (``DELETE /_sandbox/live``), waits ``--drain`` seconds (one sync
interval and 30 s by default) so the last votes are pulled, labelled and their subjects retired,
then stops the demo with SIGINT (which stops its children) and reads the database:

- every vote pulled during the live phase (``imported_at`` after the live crowd started):
  t_upstream = ``Classification.created_at`` (the stand-in's clock is this machine's),
  t_label = ``finished_at`` of the first aggregate ``LoopEvent`` (by ``finished_at``) whose
  ``detail["watermark"]`` is at least the vote's id. Split: waiting for the pull
  (``imported_at - created_at``, bounded by the sync interval plus the pull's own time) and
  pull -> label (``t_label - imported_at``: the aggregation's ``LOOP_AGGREGATE_DELAY_S``, the
  broker, the aggregation itself);
- every subject the loop retired during the live phase (``retired_at`` after the live crowd
  started, ``retirement_reason`` "consensus"): t_settled = ``created_at`` of the last vote on it
  made before ``retired_at`` and pulled by then (a vote still upstream cannot have settled it),
  latency = ``retired_at - t_settled`` (``retired_at`` is stamped once Zooniverse has answered the
  retire call). Split: waiting for the pull, and pull -> retired (delay, aggregation, the retire
  step and its call upstream).

It prints count, median, p95, min and max of each per run, then the median of the runs' medians
(and p95s) with their range. When ``--sync-interval`` is not ``--expect-interval`` (300 s, the
production default), it also prints the figures EXPECTED at that interval, computed (not
measured): each measured pull -> label (or retired) time plus a wait drawn uniformly from
[0, interval), as votes arriving at a steady pace wait for a pull on a fixed schedule.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
#: Variables that would point the demo away from its scratch folder or override its settings.
DROPPED = (
    "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_DIR", "MEDIA_ROOT", "STATIC_ROOT",
    "ARTIFACT_ROOT", "PUBLIC_MEDIA_BASE_URL", "TRAIN_AFTER_NEW_LABELS", "TRAINING_EPOCHS",
    "ROUND_NEXT_SIZE", "AGGREGATION_FULL_EVERY_S", "LOOP_AGGREGATE_DELAY_S", "AUTO_ROUNDS",
    "CELERY_BROKER_POLL_S",
)
METRICS = ("vote_label", "vote_wait", "vote_rest", "retire", "retire_wait", "retire_rest")
NAMES = {
    "vote_label": "vote -> label",
    "vote_wait": "  waiting for the pull",
    "vote_rest": "  pull -> label",
    "retire": "settling vote -> retired",
    "retire_wait": "  waiting for the pull",
    "retire_rest": "  pull -> retired",
}


class RunFailed(Exception):
    """A run that did not get through: the demo failed to start its live phase, or died."""


def say(text: str = "") -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------------------------
# Reading the database: runs in a child process with the run's settings
# --------------------------------------------------------------------------------------------


def read(*, since: datetime) -> dict:
    """The latencies of the live phase (from ``since``), as JSON-ready lists of seconds."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from annotate.models import Classification, Round, Subject
    from loop.models import LoopEvent, StepName
    from training.models import TrainingRun

    # The first aggregation covering a vote: the first event, by finish, whose watermark (or an
    # earlier event's) reaches the vote's id; the running maximum makes that a bisection.
    events = [
        (e.finished_at, int(e.detail["watermark"]))
        for e in LoopEvent.objects.filter(step=StepName.AGGREGATE).order_by("finished_at", "pk")
        if isinstance(e.detail, dict) and "watermark" in e.detail
    ]
    reach: list[int] = []
    for _, mark in events:
        reach.append(max(mark, reach[-1] if reach else 0))
    out: dict[str, list[float]] = {m: [] for m in METRICS}
    unlabelled = 0
    votes = Classification.objects.filter(imported_at__gte=since).values_list(
        "pk", "created_at", "imported_at"
    )
    early = 0
    for pk, created, imported in votes:
        if created < since:
            early += 1  # made before the live crowd started: not part of the live phase
            continue
        i = bisect.bisect_left(reach, pk)
        if i == len(reach):
            unlabelled += 1
            continue
        labelled = events[i][0]
        out["vote_label"].append((labelled - created).total_seconds())
        out["vote_wait"].append((imported - created).total_seconds())
        out["vote_rest"].append((labelled - imported).total_seconds())

    no_live_vote = 0
    retired = Subject.objects.filter(retirement_reason="consensus", retired_at__gte=since)
    for subject in retired:
        last = (
            Classification.objects.filter(
                subject=subject,
                created_at__lt=subject.retired_at,
                imported_at__lte=subject.retired_at,
            )
            .order_by("-created_at", "-pk")
            .values_list("created_at", "imported_at")
            .first()
        )
        if last is None or last[0] < since:
            no_live_vote += 1  # settled by a pass over older votes, not by a live one
            continue
        created, imported = last
        out["retire"].append((subject.retired_at - created).total_seconds())
        out["retire_wait"].append((imported - created).total_seconds())
        out["retire_rest"].append((subject.retired_at - imported).total_seconds())

    def live(step: str):  # type: ignore[no-untyped-def]
        return LoopEvent.objects.filter(step=step, finished_at__gte=since)

    aggregations = [e.detail for e in live(StepName.AGGREGATE).filter(status="done")]
    return {
        **out,
        "unlabelled": unlabelled,
        "early": early,
        "no_live_vote": no_live_vote,
        "pulls": live(StepName.PULL).count(),
        "pulls_with_votes": live(StepName.PULL).filter(status="done").count(),
        "aggregations": len(aggregations),
        "incremental": sum(1 for d in aggregations if d.get("incremental")),
        "aggregation_s": [float(d.get("seconds", 0.0)) for d in aggregations],
        "retire_steps": live(StepName.RETIRE).filter(status="done").count(),
        "trainings": TrainingRun.objects.filter(created_at__gte=since).count(),
        "rounds": Round.objects.filter(created_at__gte=since).count(),
    }


# --------------------------------------------------------------------------------------------
# One run: the demo as a child process, the live phase, the stop
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str) -> dict:
    import requests

    response = requests.request(method, url, timeout=30)
    response.raise_for_status()
    return response.json() if response.content else {}


def pids_with_var_dir(var_dir: Path) -> list[int]:
    """Processes whose environment names this run's scratch folder: the demo's children."""
    marker = f"CROWDLOOP_VAR_DIR={var_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def stop_demo(process: subprocess.Popen[str], var_dir: Path) -> str:
    """SIGINT the demo (it stops its children), then make sure nothing of this run is left."""
    note = ""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            note = "the demo did not stop within 90 s of SIGINT: terminated"
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    left = pids_with_var_dir(var_dir)
    if left:
        note += f"; {len(left)} child processes outlived the demo: stopped" if note else (
            f"{len(left)} child processes outlived the demo: stopped")
        for pid in left:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(5)
        for pid in pids_with_var_dir(var_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return note


def run_once(n: int, args: argparse.Namespace) -> dict:
    """One run in a fresh scratch folder, removed afterwards (unless ``--keep``)."""
    var_dir = Path(tempfile.mkdtemp(prefix="crowdloop-loop-latency-", dir="/tmp"))
    try:
        return run_in(n, args, var_dir)
    finally:
        if args.keep:
            say(f"  scratch folder kept: {var_dir}")
        else:
            shutil.rmtree(var_dir, ignore_errors=True)


def run_in(n: int, args: argparse.Namespace, var_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in DROPPED and not k.startswith("PANOPTES_")}
    env.update(
        CROWDLOOP_VAR_DIR=str(var_dir),
        ZOONIVERSE_SYNC_INTERVAL=f"{args.sync_interval:g}",
        DJANGO_SETTINGS_MODULE="config.settings",
        PYTHONUNBUFFERED="1",
    )
    port, sandbox_port = free_port(), free_port()
    while sandbox_port == port:
        sandbox_port = free_port()
    argv = [PYTHON, "manage.py", "demo", "--reset", "--serve", "--port", str(port),
            "--sandbox-port", str(sandbox_port), "--volunteers-per-minute", f"{args.per_minute:g}"]
    sandbox = f"http://127.0.0.1:{sandbox_port}/_sandbox/live"
    log_path = var_dir / "bench-demo.log"
    live = threading.Event()
    lines: list[str] = []
    started = time.monotonic()
    say(f"run {n}: {' '.join(argv[1:])}  (CROWDLOOP_VAR_DIR={var_dir}, "
        f"ZOONIVERSE_SYNC_INTERVAL={args.sync_interval:g})")
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                               bufsize=1, start_new_session=True)

    def relay() -> None:
        assert process.stdout is not None
        with log_path.open("w") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                lines.append(line.rstrip())
                if "live crowd:" in line:
                    live.set()

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    note = ""
    try:
        while not live.wait(1.0):
            if process.poll() is not None or time.monotonic() - started > args.demo_timeout:
                tail = "\n".join(lines[-12:])
                raise RunFailed(f"the demo did not reach its live phase:\n{tail}")
        status = http("GET", sandbox)
        since = datetime.fromisoformat(status["started_at"].replace("Z", "+00:00"))
        scripted_s = time.monotonic() - started
        say(f"  scripted rounds and start-up: {scripted_s:.0f} s; live crowd since "
            f"{since:%H:%M:%S} UTC; running {args.minutes:g} min")
        deadline = time.monotonic() + args.minutes * 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RunFailed("the demo exited during the live phase:\n"
                                + "\n".join(lines[-12:]))
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        before = http("GET", sandbox)
        http("DELETE", sandbox)
        crowd = http("GET", sandbox)
        drain = args.drain if args.drain is not None else args.sync_interval + 30
        say(f"  crowd stopped: {crowd['classifications']} live classifications, "
            f"{crowd['retired']} subjects retired upstream by count or request, idle at the "
            f"stop: {before['idle_reason'] or 'no'}; draining {drain:g} s")
        time.sleep(drain)
    finally:
        note = stop_demo(process, var_dir)
        reader.join(timeout=10)
        if note:
            say(f"  note: {note}")
    done = subprocess.run([PYTHON, __file__, "read", "--since", since.isoformat()], cwd=REPO,
                          env=env, check=True, capture_output=True, text=True, timeout=600)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["scripted_s"] = scripted_s
    return result


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, dtype=float)
    return {"n": int(a.size), "median": float(np.median(a)), "p95": float(np.percentile(a, 95)),
            "min": float(a.min()), "max": float(a.max())}


def table(rows: list[tuple[str, dict[str, float] | None]]) -> None:
    say(f"    {'seconds':<28}{'n':>6} {'median':>8} {'p95':>8} {'min':>8} {'max':>8}")
    for name, s in rows:
        if s is None:
            say(f"    {name:<28}{0:>6}")
            continue
        say(f"    {name:<28}{s['n']:>6} {s['median']:8.1f} {s['p95']:8.1f} "
            f"{s['min']:8.1f} {s['max']:8.1f}")


def report_run(n: int, result: dict) -> dict[str, dict[str, float] | None]:
    agg = result["aggregation_s"]
    say(f"  run {n}: {len(result['vote_label'])} live votes labelled "
        f"({result['unlabelled']} pulled but unlabelled at the stop, {result['early']} older "
        f"votes pulled late); {len(result['retire'])} subjects retired by the loop "
        f"({result['no_live_vote']} more without a live vote on them)")
    say(f"    steps in the live phase: {result['pulls']} pulls ({result['pulls_with_votes']} "
        f"with new votes), {result['aggregations']} aggregations ({result['incremental']} "
        f"incremental, median {np.median(agg) if agg else 0:.2f} s, max "
        f"{max(agg) if agg else 0:.2f} s), {result['retire_steps']} retire steps, "
        f"{result['trainings']} training runs, {result['rounds']} new rounds")
    figures = {m: stats(result[m]) for m in METRICS}
    table([(NAMES[m], figures[m]) for m in METRICS])
    return figures


def expected(results: list[dict], interval: float, seed: int = 0) -> None:
    """The figures at another sync interval: measured pull -> X plus a uniform wait."""
    rng = np.random.default_rng(seed)
    say(f"\nEXPECTED at ZOONIVERSE_SYNC_INTERVAL={interval:g} s (computed, not measured): the "
        "measured pull -> label / retired times of all runs plus a wait drawn from "
        f"U(0, {interval:g}) s")
    rows = []
    for total, rest in (("vote_label", "vote_rest"), ("retire", "retire_rest")):
        measured = np.concatenate([np.asarray(r[rest], dtype=float) for r in results])
        if measured.size == 0:
            continue
        draws = np.repeat(measured, 200) + rng.uniform(0, interval, measured.size * 200)
        s = stats(list(draws))
        assert s is not None
        s["n"] = int(measured.size)
        s["min"] = float(measured.min())
        s["max"] = float(interval + measured.max())
        rows.append((NAMES[total], s))
    table(rows)
    say(f"    (min: the measured rest alone; max: the bound, a full {interval:g} s wait plus the "
        "slowest measured rest. A longer interval makes each pull bigger, "
        f"about {interval:g} s of votes, so its aggregation is somewhat slower than measured "
        "here)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    read_args = sub.add_parser("read", help="(internal) read one run's database, print JSON")
    read_args.add_argument("--since", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=5.0, help="live phase of each run")
    parser.add_argument("--per-minute", type=float, default=90.0,
                        help="the live crowd's classifications a minute (the demo's default)")
    parser.add_argument("--sync-interval", type=float, default=30.0,
                        help="ZOONIVERSE_SYNC_INTERVAL, seconds (the demo's 30; production 300)")
    parser.add_argument("--drain", type=float, default=None,
                        help="seconds between stopping the crowd and stopping the stack "
                             "(default: the sync interval + 30)")
    parser.add_argument("--expect-interval", type=float, default=300.0,
                        help="also print the figures computed for this interval (0: no)")
    parser.add_argument("--demo-timeout", type=float, default=1200.0,
                        help="seconds the scripted rounds may take")
    parser.add_argument("--max-failures", type=int, default=2,
                        help="failed runs (the demo not reaching its live phase) replaced by "
                             "another before giving up")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folders")
    args = parser.parse_args()
    if args.command == "read":
        print(json.dumps(read(since=datetime.fromisoformat(args.since).astimezone(UTC))))
        return

    say(f"loop latency: {args.runs} runs of the demo loop, {args.minutes:g} live minutes each at "
        f"{args.per_minute:g} classifications a minute, ZOONIVERSE_SYNC_INTERVAL="
        f"{args.sync_interval:g} s (SQLite, filesystem broker, as make demo)")
    say(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{tuple(round(x, 2) for x in os.getloadavg())}")
    results, per_run, failed = [], [], 0
    attempt = 0
    while len(results) < args.runs and attempt < args.runs + args.max_failures:
        attempt += 1
        try:
            result = run_once(attempt, args)
        except RunFailed as exc:
            failed += 1
            say(f"  run {attempt} FAILED, not counted: {exc}")
            continue
        results.append(result)
        per_run.append(report_run(attempt, result))
        say(f"    load average: {tuple(round(x, 2) for x in os.getloadavg())}")
    if not results:
        raise SystemExit("no run got through")

    say(f"\nover {len(results)} runs ({failed} failed, not counted): the median of the runs' "
        "figures, their range in brackets, seconds")
    say(f"    {'':<28}{'votes':>6}  {'median':<22}{'p95':<22}")
    for m in METRICS:
        figures = [r[m] for r in per_run if r[m] is not None]
        if not figures:
            say(f"    {NAMES[m]:<28}{0:>6}")
            continue
        n_total = sum(f["n"] for f in figures)
        cells = []
        for key in ("median", "p95"):
            values = [f[key] for f in figures]
            cells.append(f"{np.median(values):6.1f} ({min(values):.1f}-{max(values):.1f})")
        say(f"    {NAMES[m]:<28}{n_total:>6}  {cells[0]:<22}{cells[1]:<22}")
    if args.expect_interval and args.expect_interval != args.sync_interval:
        expected(results, args.expect_interval)
    say(f"\nload average at the end: {tuple(round(x, 2) for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
