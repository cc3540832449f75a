"""The review screens under load with the model column and flags on, side by side with an anchor.

Usage, from the repository root, after ``bench/load_data.py fill`` (which now also stores an
active model with a prediction for each of the 100,000 items and flags the model-vs-crowd
conflicts)::

    .venv/bin/python bench/workbench_load.py --anchor 3fa1b51 --runs 3

It checks the anchor revision out into a temporary git worktree (sharing this checkout's
``.venv``), then alternates ``bench/load_test.py --routes review_queue review_item`` between the
anchor's tree and this one, ``--runs`` times each, on the same database, so both see the same
machine load. The anchor's screens ignore the model (it had no model column), this tree's show
the model's scores, tags and flags. It prints every run's p95 per route, then the median and
range of each side and the ratio this tree / anchor (below 1 is faster).

Before the load runs, it times single requests in each tree, one at a time in one process
(Django's test client on the same database, a staff account; the item screen for items
6000-6059, the queue's first ten pages), so the cost of one page can be read beside its p95
under load. ``--single-only`` stops there.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anchor import REPO, anchor_tree, compare_header, compare_row  # noqa: E402
from load_data import DEFAULT_ADMIN_URL, database_url  # noqa: E402

ROUTES = ("review_queue", "review_item")
ROW = re.compile(r"^(review_queue|review_item)\s+(\d+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s")


SINGLE = """
import statistics, time
from django.contrib.auth import get_user_model
from django.test import Client
client = Client()
client.force_login(get_user_model().objects.filter(is_staff=True).order_by("pk").first())
def median_ms(urls):
    client.get(urls[0], HTTP_HOST="127.0.0.1")  # warm: templates, the first queries
    times = []
    for url in urls:
        started = time.perf_counter()
        assert client.get(url, HTTP_HOST="127.0.0.1").status_code == 200, url
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)
print("SINGLE review_item", median_ms([f"/review/item/{pk}/" for pk in range(6000, 6060)]))
print("SINGLE review_queue", median_ms([f"/review/?page={n}" for n in range(1, 11)]))
"""


def single_requests(tree: Path, args: argparse.Namespace) -> dict[str, float]:
    """Median ms of one request at a time per route, in one process of ``tree``."""
    env = {**os.environ, "DATABASE_URL": database_url(args.admin_url, args.database)}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SINGLE],
        cwd=tree, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    found = dict(
        (line.split()[1], float(line.split()[2]))
        for line in result.stdout.splitlines()
        if line.startswith("SINGLE ")
    )
    if set(found) != set(ROUTES):
        raise SystemExit(f"single requests failed in {tree}:\n{result.stdout}\n{result.stderr}")
    return found


def load_test(tree: Path, args: argparse.Namespace) -> dict[str, float]:
    """One load_test.py run in ``tree``; p95 in ms per route."""
    command = [
        sys.executable, str(tree / "bench" / "load_test.py"), "--database", args.database,
        "--duration", str(args.duration), "--clients", str(args.clients),
        "--routes", *ROUTES,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tree, capture_output=True, text=True, timeout=900)
    if result.returncode:
        raise SystemExit(f"load_test failed in {tree}:\n{result.stdout}\n{result.stderr}")
    p95 = {}
    for line in result.stdout.splitlines():
        if match := ROW.match(line):
            p95[match.group(1)] = float(match.group(5))
    if set(p95) != set(ROUTES) or "tracebacks in the gunicorn log: 0" not in result.stdout:
        raise SystemExit(f"unexpected load_test output in {tree}:\n{result.stdout}")
    return p95


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--anchor", required=True, help="git revision to compare with")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database", default="crowdloop_bench")
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL))
    parser.add_argument("--single-only", action="store_true", help="no load runs")
    args = parser.parse_args(argv)

    with anchor_tree(args.anchor) as anchor:
        for side, tree in (("anchor", anchor), ("this", REPO)):
            alone = single_requests(tree, args)
            shown = "  ".join(f"{r} {alone[r]:6.1f} ms" for r in ROUTES)
            print(f"one request at a time, median, {side:6}: {shown}", flush=True)
        if args.single_only:
            return
        runs: dict[str, list[dict[str, float]]] = {"anchor": [], "this": []}
        for n in range(args.runs):
            for side, tree in (("anchor", anchor), ("this", REPO)):
                p95 = load_test(tree, args)
                runs[side].append(p95)
                shown = "  ".join(f"{r} {p95[r]:6.0f} ms" for r in ROUTES)
                print(f"run {n + 1} {side:6} p95: {shown}", flush=True)

    print(f"\n{args.clients} clients, {args.duration} s per route, {args.runs} runs each side, "
          f"alternating; anchor {args.anchor}")  # fmt: skip
    print(compare_header(args.anchor, args.runs))
    for route in ROUTES:
        p95 = {side: [run[route] for run in runs[side]] for side in runs}
        print(compare_row(f"{route} p95", p95["anchor"], p95["this"], "ms"))


if __name__ == "__main__":
    main()
