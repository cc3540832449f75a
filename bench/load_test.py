"""Load test: gunicorn on the benchmark database, 20 concurrent curators on the busiest pages.

Usage, from the repository root, after ``bench/load_data.py fill`` (the database it writes)::

    .venv/bin/python bench/load_test.py                      # wrk if installed, else Python
    .venv/bin/python bench/load_test.py --duration 20 --clients 20 --workers 4 --threads 2
    .venv/bin/python bench/load_test.py --tool python        # the thread-pool client instead

It starts ``gunicorn config.wsgi`` on 127.0.0.1 (never another host) against the benchmark
database, logs in through the admin's login form as the curator ``load_data.py`` created, and
loads each route in turn for ``--duration`` seconds with ``--clients`` concurrent connections,
each request carrying the session cookie:

- ``review_queue``   ``/review/``                 the curator's queue, most in need first
- ``review_item``    ``/review/item/<pk>/``       a random item of the 100,000 per request
- ``admin_items``    ``/admin/annotate/item/``    the admin's item changelist
- ``api_items``      ``/api/v1/items/``           the REST item list (page 1, 50 per page)
- ``api_labels``     ``/api/v1/labels/``          the REST aggregated-label list

then prints per route the requests per second, p50/p95/p99/max latency, and the responses by
status class and socket errors, and the time of single requests to the dashboard and its plots.
gunicorn is stopped at the end (or on Ctrl-C); the whole run is bounded by the durations.

The API's per-user throttle (1,200 requests a minute by default) would answer most of 20
clients' requests with 429 and measure the throttle, not the server, so the server runs with
``API_THROTTLE_USER=1000000/minute``; that 429s are sent over the limit is tested elsewhere.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_data import (  # noqa: E402  (a sibling script, not a package)
    CURATOR_PASSWORD,
    CURATOR_USERNAME,
    DEFAULT_ADMIN_URL,
    database_url,
)

REPO = Path(__file__).resolve().parent.parent
GUNICORN = REPO / ".venv" / "bin" / "gunicorn"
HOST = "127.0.0.1"  # the only address this script talks to

ROUTES: dict[str, str] = {
    "review_queue": "/review/",
    "review_item": "/review/item/%d/",
    "admin_items": "/admin/annotate/item/",
    "api_items": "/api/v1/items/",
    "api_labels": "/api/v1/labels/",
}
DASHBOARD = ["/review/dashboard/"] + [
    f"/review/dashboard/{name}.png"
    for name in ("classifications", "labels", "agreement", "skills", "learning")
]


@dataclass
class RouteResult:
    route: str
    seconds: float
    requests: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    status: Counter = field(default_factory=Counter)  # "2xx", "3xx", "4xx", "5xx"
    socket_errors: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


# --------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------


def port_free(port: int) -> int:
    """``port`` if nothing listens there (0: any free port); else exit, so that the test can never
    measure somebody else's server on the same machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            raise SystemExit(f"port {port} on {HOST} is in use: pick another with --port") from None
        return probe.getsockname()[1]


def server_start(args: argparse.Namespace, log_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(args.admin_url, args.database),
        "DJANGO_DEBUG": "0",
        "ALLOWED_HOSTS": HOST,
        "API_THROTTLE_USER": "1000000/minute",
        "LOG_LEVEL": "WARNING",
    }
    command = [
        str(GUNICORN), "config.wsgi:application", "--bind", f"{HOST}:{args.port}",
        "--workers", str(args.workers), "--threads", str(args.threads), "--timeout", "120",
        "--log-level", "warning",
    ]  # fmt: skip
    print("$ " + " ".join(command[1:]), flush=True)
    log = log_path.open("w")
    # Its own session, so that stopping it never touches this script's process group.
    server = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    # Four workers importing Django, DRF, numpy and matplotlib on two shared cores take a while.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited ({server.returncode}):\n{log_path.read_text()}")
        try:
            if requests.get(f"http://{HOST}:{args.port}/healthz", timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.5)
    server_stop(server)
    raise SystemExit(f"gunicorn did not answer /healthz in 300 s:\n{log_path.read_text()}")


def server_stop(server: subprocess.Popen) -> None:
    if server.poll() is not None:
        return
    server.send_signal(signal.SIGTERM)  # the master stops its workers gracefully
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=10)


def login(base: str) -> requests.Session:
    """A session logged in through the admin's own login form (CSRF token and all)."""
    session = requests.Session()
    session.get(f"{base}/admin/login/", timeout=30).raise_for_status()
    response = session.post(
        f"{base}/admin/login/",
        data={
            "username": CURATOR_USERNAME,
            "password": CURATOR_PASSWORD,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        allow_redirects=False,
        timeout=30,
    )
    if response.status_code != 302 or "sessionid" not in session.cookies:
        raise SystemExit(f"login as {CURATOR_USERNAME} failed ({response.status_code})")
    return session


def item_pk_range(database: str, admin_url: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(database_url(admin_url, database)) as conn:
        low, high = conn.execute("SELECT min(id), max(id) FROM annotate_item").fetchone()
    if low is None:
        raise SystemExit(f"{database} has no items: run bench/load_data.py fill first")
    return int(low), int(high)


# --------------------------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------------------------

_WRK_SCRIPT = r"""
-- Session cookie on every request, random item ids, status classes counted per thread.
local cookie = "%(cookie)s"
local path = "%(path)s"
local low, high = %(low)d, %(high)d
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() * 100 + id)
  counts = {}
end

function request()
  local p = path
  if string.find(path, "%%%%d") then p = string.format(path, math.random(low, high)) end
  return wrk.format("GET", p, {["Cookie"] = cookie})
end

function response(status, headers, body)
  local k = tostring(math.floor(status / 100)) .. "xx"
  counts[k] = (counts[k] or 0) + 1
end

function done(summary, latency, requests)
  local c = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do c[k] = (c[k] or 0) + v end
  end
  local s = ""
  for k, v in pairs(c) do s = s .. k .. "=" .. v .. "," end
  local e = summary.errors
  io.write(string.format("RESULT %%.0f %%.0f %%.0f %%.0f %%.0f %%.0f %%.0f %%s\n",
    summary.duration, summary.requests, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, e.connect + e.read + e.write + e.timeout, s))
end
"""


def run_wrk(
    args: argparse.Namespace, route: str, path: str, cookie: str, pk_range: tuple[int, int]
) -> RouteResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(
            _WRK_SCRIPT % {"cookie": cookie, "path": path, "low": pk_range[0], "high": pk_range[1]}
        )
        script = handle.name
    try:
        command = [
            "wrk", "-t", str(min(args.clients, 2)), "-c", str(args.clients),
            "-d", f"{args.duration}s", "--timeout", "60s", "-s", script,
            f"http://{HOST}:{args.port}/",
        ]  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=args.duration + 120, check=False
        )
    finally:
        os.unlink(script)
    match = re.search(r"^RESULT (.*)$", done.stdout, re.MULTILINE)
    if not match:
        raise SystemExit(f"wrk gave no result for {route}:\n{done.stdout}\n{done.stderr}")
    fields = match.group(1).split(" ")
    duration_us, n, p50, p95, p99, worst, socket_errors = (float(x) for x in fields[:7])
    status = Counter(
        {k: int(v) for k, v in (pair.split("=") for pair in fields[7].split(",") if pair)}
    )
    return RouteResult(
        route=route,
        seconds=duration_us / 1e6,
        requests=int(n),
        p50_ms=p50 / 1000,
        p95_ms=p95 / 1000,
        p99_ms=p99 / 1000,
        max_ms=worst / 1000,
        status=status,
        socket_errors=int(socket_errors),
    )


# --------------------------------------------------------------------------------------------
# the Python client, where wrk is not installed
# --------------------------------------------------------------------------------------------


def run_python(
    args: argparse.Namespace, route: str, path: str, cookies: dict, pk_range: tuple[int, int]
) -> RouteResult:
    import random

    latencies: list[float] = []
    status: Counter = Counter()
    errors = [0]
    lock = threading.Lock()
    started = time.perf_counter()
    deadline = started + args.duration

    def client(seed: int) -> None:
        rng = random.Random(seed)
        session = requests.Session()
        session.cookies.update(cookies)
        mine: list[float] = []
        codes: Counter = Counter()
        failed = 0
        while time.perf_counter() < deadline:
            url = f"http://{HOST}:{args.port}" + (
                path % rng.randint(*pk_range) if "%d" in path else path
            )
            t0 = time.perf_counter()
            try:
                response = session.get(url, timeout=60, allow_redirects=False)
                codes[f"{response.status_code // 100}xx"] += 1
                mine.append(time.perf_counter() - t0)
            except requests.RequestException:
                failed += 1
        with lock:
            latencies.extend(mine)
            status.update(codes)
            errors[0] += failed

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    ordered = sorted(latencies) or [0.0]

    def pct(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return RouteResult(route, seconds, len(latencies), pct(0.5), pct(0.95), pct(0.99),
                       1000 * ordered[-1], status, errors[0])  # fmt: skip


# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", default="crowdloop_bench")
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL))
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=int, default=20, help="seconds per route")
    parser.add_argument("--warmup", type=int, default=3, help="untimed seconds before each")
    parser.add_argument("--routes", nargs="*", choices=list(ROUTES), default=list(ROUTES))
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--log", type=Path, default=None, help="gunicorn's log (default: temp)")
    args = parser.parse_args()
    tool = args.tool if args.tool != "auto" else ("wrk" if shutil.which("wrk") else "python")

    pk_range = item_pk_range(args.database, args.admin_url)
    args.port = port_free(args.port)
    log_path = args.log or Path(tempfile.mkdtemp(prefix="crowdloop-load-")) / "gunicorn.log"
    print(f"load test on {args.database}: items {pk_range[0]}..{pk_range[1]}, {args.clients} "
          f"clients, {args.duration} s per route, {tool}; gunicorn log {log_path}")  # fmt: skip
    print(f"load average at the start: {os.getloadavg()}, {os.cpu_count()} CPUs", flush=True)
    server = server_start(args, log_path)
    base = f"http://{HOST}:{args.port}"
    results: list[RouteResult] = []
    try:
        session = login(base)
        cookies = session.cookies.get_dict()
        cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
        for route in args.routes:
            path = ROUTES[route]
            # One request first: a redirect to the login page would make a fast, useless run.
            probe = path % pk_range[0] if "%d" in path else path
            t0 = time.perf_counter()
            check = session.get(base + probe, timeout=120, allow_redirects=False)
            cold = 1000 * (time.perf_counter() - t0)
            if check.status_code != 200:
                raise SystemExit(f"{route}: GET {probe} answered {check.status_code}")
            print(
                f"{route:13} GET {probe} -> 200, {len(check.content):,} bytes, "
                f"{cold:.0f} ms alone; loading for {args.duration} s ...",
                flush=True,
            )
            run = run_wrk if tool == "wrk" else run_python
            auth = cookie if tool == "wrk" else cookies
            # Untimed warm-up: every worker imports its views and opens its database connection
            # on its first request, which is start-up cost, not the route's latency.
            run(argparse.Namespace(**{**vars(args), "duration": args.warmup}), route, path, auth,
                pk_range)  # fmt: skip
            results.append(run(args, route, path, auth, pk_range))
            r = results[-1]
            print(f"{'':13} {r.requests} requests, p95 {r.p95_ms:.0f} ms", flush=True)

        print("\nsingle requests, one at a time (median of 3):")
        for path in DASHBOARD:
            times, size = [], 0
            for _ in range(3):
                t0 = time.perf_counter()
                response = session.get(base + path, timeout=300)
                times.append(1000 * (time.perf_counter() - t0))
                size = len(response.content)
                if response.status_code != 200:
                    raise SystemExit(f"GET {path} answered {response.status_code}")
            print(f"  {path:40} {statistics.median(times):8.0f} ms  {size:>9,} bytes")
    finally:
        server_stop(server)

    errors_logged = log_path.read_text(errors="replace").count("Traceback")
    print(f"\n{tool}, {args.clients} clients, {args.duration} s per route; gunicorn "
          f"{args.workers} workers x {args.threads} threads; database {args.database}")  # fmt: skip
    header = (
        f"{'route':13} {'requests':>8} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8} {'2xx':>6} {'non-2xx':>8} {'5xx':>5} {'sock err':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        ok = r.status.get("2xx", 0)
        print(f"{r.route:13} {r.requests:8} {r.rps:7.1f} {r.p50_ms:8.0f} {r.p95_ms:8.0f} "
              f"{r.p99_ms:8.0f} {r.max_ms:8.0f} {ok:6} {sum(r.status.values()) - ok:8} "
              f"{r.status.get('5xx', 0):5} {r.socket_errors:8}")  # fmt: skip
    print(f"tracebacks in the gunicorn log: {errors_logged}")
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
