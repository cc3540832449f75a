"""Reliability load checks L1-L5 (``reliability.md`` §4.3): figures, thresholds, PASS or FAIL.

Usage, from the repository root (PostgreSQL; the role in ``--admin-url`` needs CREATEDB)::

    .venv/bin/python bench/reliability_load.py                          # L1-L5, 1,000,000 rows
    .venv/bin/python bench/reliability_load.py --classifications 200000 --only L1,L2,L3
    .venv/bin/python bench/reliability_load.py --only L4,L5             # on crowdloop_bench
    .venv/bin/python bench/reliability_load.py --workdir /tmp/rl        # keep (reuse) the export

The checks (thresholds and how they were set: ``bench/README.md``, "Reliability load checks"):

- **L1** ingest ``--classifications`` rows of a Zooniverse export (``import_classifications.py``'s
  generator) into a fresh database (``--database``), through ``classifications_ingest`` with the
  sync cursor, ``INGEST_BATCH`` rows per transaction, in a child process: wall time against a
  budget per million rows; peak memory (PSS of the process tree, ``import_classifications.measure``)
  against the same ingest of a tenth of the rows into a second fresh database (flat: streamed, so
  ten times the rows may not cost much more memory); zero duplicate classification ids; every
  row of the file stored or quarantined; the cursor at the largest id of the file.
- **L2** the same file again into the same database, ``--runs`` times: nothing created, the row
  count unchanged, the median time at most L1's.
- **L3** the full aggregation pass (``labels_aggregate``, the default method) over the L1
  database's votes, ``--runs`` times, median against a budget per million votes; then a
  majority pass, and on ``--sample`` random items a plain-Python reference (tick counts and vote
  fractions from the raw rows) must equal the stored labels of both passes (counts of both,
  posteriors of the majority pass).
- **L4** ``bench/load_test.py``'s gunicorn and clients on ``--bench-database`` (``load_data.py
  fill``): ``--clients`` (50) concurrent clients on the REST item and label lists; p95 under
  budget, no 5xx, no socket errors; then a client over the limit (wrong tokens, the
  ``auth_failures`` rate) must get 429 while the logged-in clients still get 200.
- **L5** the admin changelists on ``--bench-database`` (1M votes, 100k items) through Django's
  test client: median of ``--runs`` requests per page under budget, and the same number of
  queries for a page of 10 rows as for a page of 100 (no query per row).

It exits 1 when any check fails. The timings depend on the machine: the budgets are for the
2-core development VM; rerun the baseline elsewhere before reading a FAIL as a regression.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
from import_classifications import (  # noqa: E402  (sibling scripts, not a package)
    WORKFLOW_ID,
    classification_export_write,
    measure,
    workflow_export_write,
)
from load_data import DEFAULT_ADMIN_URL, database_create, database_url  # noqa: E402

PYTHON = REPO / ".venv" / "bin" / "python"
CHECKS = ("L1", "L2", "L3", "L4", "L5")

# Rows per ingest transaction (the matrix's "~5k rows per transaction"): the export is cut into
# blocks of about this many rows (the generator writes ~1,350 bytes a row), one batch each.
INGEST_BATCH = 5_000
BLOCK_BYTES = INGEST_BATCH * 1_400

# Thresholds, from the baselines in bench/README.md ("Reliability load checks") with headroom.
L1_SECONDS_PER_MILLION = 300.0  # ingest wall time
L1_MEMORY_RATIO = 1.5  # peak at N over peak at N/10
L3_SECONDS_PER_MILLION = 120.0  # full aggregation pass, wall time
L4_P95_MS = 3_000.0  # per route, 50 clients
L4_ERROR_RATE = 0.001  # non-2xx and socket errors, per request
L4_OVER_LIMIT_TRIES = 500  # wrong-token requests within which a 429 must come
L5_PAGE_MS = 1_500.0  # per changelist, one request at a time
# Time budgets never below this: start-up and fixed costs dominate a small --classifications.
MIN_BUDGET_S = 10.0

L5_PAGES = {
    "items": "/admin/annotate/item/",
    "items, unreviewed": "/admin/annotate/item/?review_state__exact=unreviewed",
    "items, uncertain": "/admin/annotate/item/?consensus__exact=uncertain",
    "classifications": "/admin/annotate/classification/",
    "classifications, repeats": "/admin/annotate/classification/?is_duplicate__exact=1",
    "classifications, one day": (
        "/admin/annotate/classification/?created_at__day=15&created_at__month=9"
        "&created_at__year=2026"
    ),
    "volunteers": "/admin/annotate/volunteer/",
    "volunteers, logged in": "/admin/annotate/volunteer/?logged_in__exact=1",
    "subjects": "/admin/annotate/subject/",
    "aggregated labels": "/admin/annotate/aggregatedlabel/",
    "volunteer skills": "/admin/annotate/volunteerskill/",
    "reviews": "/admin/annotate/review/",
}


def say(text: str = "") -> None:
    print(text, flush=True)


@dataclass
class Check:
    name: str
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def figure(self, text: str) -> None:
        self.lines.append(text)
        say(f"  {text}")

    def criterion(self, label: str, measured: str, threshold: str, ok: bool) -> None:
        verdict = "PASS" if ok else "FAIL"
        self.figure(f"{verdict}  {label}: {measured} (threshold {threshold})")
        if not ok:
            self.failures.append(label)


def spread(values: list[float], unit: str = "s", digits: int = 1) -> str:
    """``median (min-max, n runs)``."""
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.{digits}f} {unit} (1 run)"
    return (
        f"median {median:.{digits}f} {unit} ({min(values):.{digits}f}-{max(values):.{digits}f}, "
        f"{len(values)} runs)"
    )


def worker(name: str, url: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """This script's ``worker`` subcommand in a child process (Django set up on ``url``): its
    measurement and the JSON it printed last."""
    command = [str(PYTHON), __file__, "worker", name, "--url", url, *args]
    result = measure(command, env={**os.environ, **(env or {}), "DATABASE_URL": url})
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    return result, payload


def sql_one(url: str, query: str) -> tuple:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchone()


# --------------------------------------------------------------------------------------------
# L1, L2: ingest
# --------------------------------------------------------------------------------------------


def export_ready(workdir: Path, rows: int) -> tuple[Path, Path]:
    cls, wf = workdir / f"classifications-{rows}.csv", workdir / "workflow.csv"
    marker = workdir / f"classifications-{rows}.done"
    workflow_export_write(wf)
    if not (marker.exists() and cls.exists()):
        started = time.perf_counter()
        classification_export_write(cls, rows=rows)
        marker.touch()
        say(f"  wrote the {rows:,}-row export in {time.perf_counter() - started:.0f} s: {cls}")
    return cls, wf


def database_fresh(args: argparse.Namespace, name: str, wf: Path, rows: int) -> str:
    """A new database with the schema, the vocabulary, the workflow and one item per subject."""
    database_create(args.admin_url, name, recreate=True)
    url = database_url(args.admin_url, name)
    worker("prepare", url, "--workflow-export", str(wf), "--rows", str(rows))
    return url


def ingest_checks(args: argparse.Namespace, checks: dict[str, Check]) -> str:
    """L1 (and L2 when chosen) on fresh databases; returns the full-size database's URL."""
    n = args.classifications
    small = max(1_000, n // 10)
    l1 = checks.setdefault("L1", Check("L1"))
    say(f"\nL1: ingest {n:,} classifications ({small:,} for the memory anchor)")
    small_cls, wf = export_ready(args.workdir, small)
    cls, _ = export_ready(args.workdir, n)

    url_small = database_fresh(args, f"{args.database}_small", wf, small)
    anchor, anchor_counts = worker("ingest", url_small, "--path", str(small_cls))
    url = database_fresh(args, args.database, wf, n)
    first, counts = worker("ingest", url, "--path", str(cls))
    rows, distinct, largest = sql_one(
        url,
        "SELECT count(*), count(DISTINCT zooniverse_id), max(zooniverse_id) "
        "FROM annotate_classification",
    )
    (cursor,) = sql_one(url, "SELECT last_id FROM annotate_synccursor")
    l1.figure(
        f"read {counts['read']:,}, created {counts['created']:,}, quarantined "
        f"{counts['quarantined']:,}, unchanged {counts['unchanged']:,}; "
        f"{counts['batches']} transactions of {counts['read'] / counts['batches']:,.0f} rows on "
        f"average; the child process {first.seconds:.1f} s wall (start-up included), "
        f"{first.cpu_seconds:.1f} CPU s"
    )
    l1.figure(
        f"anchor: {small:,} rows in {anchor_counts['seconds']:.1f} s, peak memory "
        f"{anchor.peak_rss_mib:,.0f} MiB"
    )
    budget = max(MIN_BUDGET_S, L1_SECONDS_PER_MILLION * n / 1e6)
    l1.criterion(f"ingest time, {n:,} rows", f"{counts['seconds']:.1f} s (1 run)",
                 f"<= {budget:.0f} s", counts["seconds"] <= budget)  # fmt: skip
    ratio = first.peak_rss_mib / anchor.peak_rss_mib
    growth = (first.peak_rss_mib - anchor.peak_rss_mib) * 2**20 / (n - small)
    l1.figure(f"memory growth from N/10 to N: {growth:,.0f} bytes per extra row")
    l1.criterion(
        "peak memory at N over N/10",
        f"{first.peak_rss_mib:,.0f} / {anchor.peak_rss_mib:,.0f} MiB = {ratio:.2f}",
        f"<= {L1_MEMORY_RATIO}",
        ratio <= L1_MEMORY_RATIO,
    )
    l1.criterion("duplicate classification ids", f"{rows - distinct}", "0", rows == distinct)
    stored = counts["created"] + counts["quarantined"]
    l1.criterion("rows stored or quarantined", f"{stored:,} of {counts['read']:,}",
                 "all", stored == counts["read"] and rows == counts["created"])  # fmt: skip
    l1.criterion(
        "sync cursor",
        f"{cursor} (largest id stored {largest}, in the file {counts['max_id']})",
        "= largest id of the file",
        cursor == largest == counts["max_id"],
    )

    if "L2" in args.only:
        l2 = checks.setdefault("L2", Check("L2"))
        say(f"\nL2: the same {n:,} rows again, {args.runs} runs")
        seconds, created = [], 0
        for _ in range(args.runs):
            _, again_counts = worker("ingest", url, "--path", str(cls))
            seconds.append(again_counts["seconds"])
            created += again_counts["created"]
        (after,) = sql_one(url, "SELECT count(*) FROM annotate_classification")
        l2.criterion("rows created by the re-ingests", f"{created}", "0", created == 0)
        l2.criterion("row count", f"{after:,} (was {rows:,})", "unchanged", after == rows)
        l2.criterion("re-ingest time", spread(seconds), f"<= L1's {counts['seconds']:.1f} s",
                     statistics.median(seconds) <= counts["seconds"])  # fmt: skip
    return url


# --------------------------------------------------------------------------------------------
# L3: aggregation
# --------------------------------------------------------------------------------------------


def aggregation_check(args: argparse.Namespace, url: str, check: Check) -> None:
    (n,) = sql_one(url, "SELECT count(*) FROM annotate_classification")
    say(f"\nL3: aggregate the {n:,} stored classifications, {args.runs} runs")
    seconds, memory, summary = [], [], {}
    for _ in range(args.runs):
        run, summary = worker("aggregate", url)
        seconds.append(summary["seconds"])
        memory.append(run.peak_rss_mib)
    check.figure(summary["summary"])
    check.figure(f"peak memory {spread(memory, 'MiB', 0)}")
    budget = max(MIN_BUDGET_S, L3_SECONDS_PER_MILLION * n / 1e6)
    check.criterion("full pass (labels_aggregate)", spread(seconds), f"<= {budget:.0f} s",
                    statistics.median(seconds) <= budget)  # fmt: skip
    _, default = worker("reference", url, "--sample", str(args.sample))
    worker("aggregate", url, "--method", "majority")
    _, majority = worker("reference", url, "--sample", str(args.sample), "--posteriors")
    check.criterion(
        f"{summary['method']} pass: vote counts of {default['labels']:,} labels "
        f"({args.sample} items) against the reference",
        f"{default['mismatches']} differ",
        "0",
        default["mismatches"] == 0 and default["labels"] > 0,
    )
    check.criterion(
        f"majority pass: counts and posteriors of {majority['labels']:,} labels against the "
        "reference",
        f"{majority['mismatches']} differ",
        "0",
        majority["mismatches"] == 0 and majority["labels"] > 0,
    )
    for example in (default["examples"] + majority["examples"])[:5]:
        check.figure(f"  differs: {example}")


# --------------------------------------------------------------------------------------------
# L4: concurrent API clients
# --------------------------------------------------------------------------------------------


def api_check(args: argparse.Namespace, check: Check) -> None:
    import requests
    from load_test import (
        HOST,
        ROUTES,
        item_pk_range,
        login,
        port_free,
        run_python,
        run_wrk,
        server_start,
        server_stop,
    )

    say(f"\nL4: {args.clients} concurrent clients on the API, {args.duration} s per route")
    # The throttle's counters stay in each gunicorn worker's memory (no REDIS_URL), so a
    # lockout this check provokes ends with the server.
    os.environ.pop("REDIS_URL", None)
    load = argparse.Namespace(
        database=args.bench_database, admin_url=args.admin_url, port=port_free(0),
        workers=args.workers, threads=2, clients=args.clients, duration=args.duration,
    )  # fmt: skip
    pk_range = item_pk_range(args.bench_database, args.admin_url)
    log = Path(tempfile.mkdtemp(prefix="crowdloop-l4-")) / "gunicorn.log"
    server = server_start(load, log)
    base = f"http://{HOST}:{load.port}"
    try:
        session = login(base)
        cookies = session.cookies.get_dict()
        cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
        tool = "wrk" if args.tool == "wrk" else "python"
        run = run_wrk if tool == "wrk" else run_python
        auth = cookie if tool == "wrk" else cookies
        for route in ("api_items", "api_labels"):
            path = ROUTES[route]
            warm = argparse.Namespace(**{**vars(load), "duration": 3})
            run(warm, route, path, auth, pk_range)
            result = run(load, route, path, auth, pk_range)
            total = sum(result.status.values()) + result.socket_errors
            bad = total - result.status.get("2xx", 0)
            check.figure(
                f"{route}: {result.requests:,} requests ({tool}), {result.rps:.0f}/s, p50 "
                f"{result.p50_ms:.0f} ms, p99 {result.p99_ms:.0f} ms, max {result.max_ms:.0f} ms"
            )
            check.criterion(f"{route} p95", f"{result.p95_ms:.0f} ms", f"<= {L4_P95_MS:.0f} ms",
                            result.p95_ms <= L4_P95_MS)  # fmt: skip
            check.criterion(f"{route} 5xx", str(result.status.get("5xx", 0)), "0",
                            result.status.get("5xx", 0) == 0)  # fmt: skip
            check.criterion(
                f"{route} errors (non-2xx, socket)", f"{bad} of {total}",
                f"<= {L4_ERROR_RATE:.1%}", total > 0 and bad <= L4_ERROR_RATE * total,
            )  # fmt: skip

        # Over the limit: wrong tokens from one address until the server answers 429.
        guesser = requests.Session()
        codes: list[int] = []
        for k in range(L4_OVER_LIMIT_TRIES):
            response = guesser.get(
                base + ROUTES["api_items"],
                headers={"Authorization": f"Token {k:040x}"},
                timeout=60,
            )
            codes.append(response.status_code)
            if response.status_code == 429:
                break
        still = session.get(base + ROUTES["api_items"], timeout=60).status_code
        check.criterion(
            "over-limit client (wrong tokens)",
            f"{'429 after' if codes[-1] == 429 else 'no 429 in'} {len(codes)} requests, "
            f"{sum(c >= 500 for c in codes)} 5xx",
            f"429 within {L4_OVER_LIMIT_TRIES}, no 5xx",
            codes[-1] == 429 and not any(c >= 500 for c in codes),
        )
        check.criterion("a logged-in client meanwhile", str(still), "200", still == 200)
    finally:
        server_stop(server)
    tracebacks = log.read_text(errors="replace").count("Traceback")
    check.criterion("tracebacks in the gunicorn log", str(tracebacks), "0", tracebacks == 0)


# --------------------------------------------------------------------------------------------
# L5: admin changelists
# --------------------------------------------------------------------------------------------


def admin_check(args: argparse.Namespace, check: Check) -> None:
    url = database_url(args.admin_url, args.bench_database)
    (votes, items) = sql_one(
        url, "SELECT (SELECT count(*) FROM annotate_classification), "
        "(SELECT count(*) FROM annotate_item)",
    )  # fmt: skip
    say(f"\nL5: admin changelists on {args.bench_database} ({votes:,} votes, {items:,} items)")
    _, pages = worker("admin", url, "--runs", str(args.runs),
                      env={"ALLOWED_HOSTS": "testserver", "DJANGO_DEBUG": "0"})  # fmt: skip
    for name, page in pages.items():
        if page["status"] != 200:
            check.criterion(name, f"answered {page['status']}", "200", False)
            continue
        check.criterion(f"{name} time", spread(page["ms"], "ms", 0), f"<= {L5_PAGE_MS:.0f} ms",
                        statistics.median(page["ms"]) <= L5_PAGE_MS)  # fmt: skip
        if statistics.median(page["ms"]) > L5_PAGE_MS / 2:
            check.figure(f"  its slowest query, {page['slowest_ms']:.0f} ms: {page['slowest_sql']}")
        q10, q100 = page["queries"]
        check.criterion(f"{name} queries, 10 rows / 100 rows", f"{q10} / {q100}", "equal",
                        q10 == q100)  # fmt: skip


# --------------------------------------------------------------------------------------------
# the child processes (Django set up on --url)
# --------------------------------------------------------------------------------------------


def worker_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="reliability_load.py worker")
    parser.add_argument(
        "name", choices=["migrate", "prepare", "ingest", "aggregate", "reference", "admin"]
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--workflow-export", type=Path)
    parser.add_argument("--rows", type=int, default=0)
    parser.add_argument("--path", type=Path)
    parser.add_argument("--method", default=None)
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--posteriors", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    from load_data import django_setup

    django_setup(args.url)
    payload = {
        "migrate": _migrate,
        "prepare": _prepare,
        "ingest": _ingest,
        "aggregate": _aggregate,
        "reference": _reference,
        "admin": _admin,
    }[args.name](args)
    print(json.dumps(payload), flush=True)


def _migrate(args: argparse.Namespace) -> dict:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return {}


def _prepare(args: argparse.Namespace) -> dict:
    from django.core.management import call_command
    from django.db import transaction
    from load_data import copy_rows

    from annotate.models import Item

    call_command("migrate", verbosity=0)
    call_command("load_vocabulary", verbosity=0)
    call_command("configure_workflow", workflow_id=WORKFLOW_ID,
                 workflow_export=args.workflow_export, verbosity=0)  # fmt: skip
    subjects = max(1, args.rows // 10)  # the generator's subjects, matched by external_id
    with transaction.atomic():
        copy_rows(Item, ["external_id", "image_state"],
                  ((f"/2058612/item_{i:07d}", "ok") for i in range(subjects)))  # fmt: skip
    return {"items": subjects}


def _ingest(args: argparse.Namespace) -> dict:
    from annotate.models import ImportReport, Workflow
    from annotate.services.classifications import classifications_ingest
    from annotate.zooniverse.export_csv.blocks import classification_blocks

    workflow = Workflow.objects.get(zooniverse_id=WORKFLOW_ID)
    report = ImportReport.objects.create(kind=ImportReport.Kind.SYNC, source=str(args.path))
    seen = {"max_id": 0, "read": 0}
    batches: list[int] = []

    def blocks():
        with args.path.open("rb") as handle:
            for block in classification_blocks(
                handle, task_key=workflow.task_key, block_bytes=BLOCK_BYTES, workflow_id=WORKFLOW_ID
            ):
                if len(block):
                    seen["max_id"] = max(seen["max_id"], int(block.zooniverse_id.max()))
                seen["read"] += len(block) + len(block.quarantine)
                yield block  # fmt: skip

    started = time.perf_counter()
    counts = classifications_ingest(
        records=blocks(), workflow=workflow, report=report, batch_size=INGEST_BATCH,
        cursor=True, counters_at_end=True,
        on_batch_committed=lambda result: batches.append(result.counts.read),
    )  # fmt: skip
    return {
        "seconds": time.perf_counter() - started,
        "read": counts.read, "created": counts.created, "unchanged": counts.unchanged,
        "quarantined": counts.quarantined, "batches": len(batches), **seen,
    }  # fmt: skip


def _aggregate(args: argparse.Namespace) -> dict:
    from annotate.services.aggregation import labels_aggregate

    summary = labels_aggregate(method=args.method)
    return {"seconds": summary.seconds, "method": summary.method, "summary": summary.summary()}


def _reference(args: argparse.Namespace) -> dict:
    """Plain Python over the raw rows of ``--sample`` random items, against the stored labels:
    ticks and votes asked per concept (only a concept the version offers is asked), and with
    ``--posteriors`` the majority posterior, ticks / asked."""
    import random

    from django.db import connection

    from annotate.models import AggregatedLabel, Concept, WorkflowVersion
    from annotate.services.classifications.counters import VOTES

    rng = random.Random(3)
    voted = sorted({pk for (pk,) in _rows("SELECT DISTINCT item_id FROM annotate_classification "
                                          "WHERE item_id IS NOT NULL")})  # fmt: skip
    sample = sorted(rng.sample(voted, min(args.sample, len(voted))))
    concepts = {c.pk: c.key for c in Concept.objects.filter(active=True)}
    offered = {
        (version.workflow.zooniverse_id, version.version): {
            answer["concept"] for answer in version.answers if answer.get("concept")
        }
        for version in WorkflowVersion.objects.select_related("workflow")
    }
    counted = " AND ".join(f"{'' if want else 'NOT '}c.{column}" for column, want in VOTES.items())
    ticks: dict[tuple[int, str], int] = {}
    asked: dict[tuple[int, str], int] = {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.item_id, c.concept_ids, w.zooniverse_id, c.workflow_version "
            "FROM annotate_classification c JOIN annotate_workflow w ON w.id = c.workflow_id "
            f"WHERE {counted} AND c.item_id = ANY(%s)",
            [sample],
        )
        for item_id, ticked, workflow, version in cursor.fetchall():
            ticked = json.loads(ticked) if isinstance(ticked, str) else ticked
            for key in offered.get((workflow, version), offered.get((workflow, "*"), set())):
                asked[item_id, key] = asked.get((item_id, key), 0) + 1
            for pk in ticked:
                if pk in concepts:
                    ticks[item_id, concepts[pk]] = ticks.get((item_id, concepts[pk]), 0) + 1
    mismatches, examples, labels = 0, [], 0
    stored = AggregatedLabel.objects.filter(item_id__in=sample).values_list(
        "item_id", "concept__key", "votes_for", "votes_against", "posterior"
    )
    for item_id, key, votes_for, votes_against, posterior in stored:
        labels += 1
        n_for, n_asked = ticks.get((item_id, key), 0), asked.get((item_id, key), 0)
        want: tuple = (n_for, n_asked - n_for)
        got: tuple = (votes_for, votes_against)
        if args.posteriors and n_asked:
            want, got = (*want, round(n_for / n_asked, 6)), (*got, round(posterior, 6))
        if want != got:
            mismatches += 1
            examples.append(f"item {item_id} {key}: stored {got}, reference {want}")
    return {"labels": labels, "mismatches": mismatches, "examples": examples[:5]}


def _rows(query: str) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(query)
        return cursor.fetchall()


def _admin(args: argparse.Namespace) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import resolve

    user = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
    user = user or get_user_model().objects.filter(is_staff=True).order_by("pk").first()
    client = Client()
    client.force_login(user)
    results = {}
    for name, path in L5_PAGES.items():
        model_admin = resolve(path.split("?")[0]).func.model_admin
        status = client.get(path).status_code  # warm: templates, first queries
        times, queries = [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            client.get(path)
            times.append(1000 * (time.perf_counter() - started))
        default = model_admin.list_per_page
        slowest = {"time": "0", "sql": ""}
        for rows in (10, 100):
            model_admin.list_per_page = rows
            with CaptureQueriesContext(connection) as captured:
                client.get(path)
            queries.append(len(captured.captured_queries))
            slowest = max([slowest, *captured.captured_queries], key=lambda q: float(q["time"]))
        model_admin.list_per_page = default
        results[name] = {
            "status": status, "ms": times, "queries": queries,
            "slowest_ms": 1000 * float(slowest["time"]), "slowest_sql": slowest["sql"][:160],
        }  # fmt: skip
    return results


# --------------------------------------------------------------------------------------------


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker_main(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classifications", type=int, default=1_000_000)
    parser.add_argument("--only", default=",".join(CHECKS), help="e.g. L1,L3 (default: all)")
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL),
                        help="a role with CREATEDB; its database name is replaced")  # fmt: skip
    parser.add_argument("--database", default="crowdloop_load",
                        help="L1-L3's database (recreated); <name>_small: L1's anchor")  # fmt: skip
    parser.add_argument("--bench-database", default="crowdloop_bench",
                        help="L4-L5's database, filled by bench/load_data.py fill")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None, help="keep the exports here")
    parser.add_argument("--runs", type=int, default=3, help="timed runs where a median is taken")
    parser.add_argument("--sample", type=int, default=300, help="L3's reference items")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=int, default=20, help="L4's seconds per route")
    parser.add_argument("--workers", type=int, default=4, help="L4's gunicorn workers")
    parser.add_argument("--tool", choices=["wrk", "python"], default="wrk")
    args = parser.parse_args()
    args.only = [name.strip().upper() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(CHECKS))
    if unknown:
        parser.error(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}")
    if args.runs < 1 or args.classifications < 1_000:
        parser.error("--runs must be at least 1 and --classifications at least 1,000")
    keep = args.workdir is not None
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="crowdloop-reliability-load-"))
    args.workdir.mkdir(parents=True, exist_ok=True)

    say(f"reliability load checks {', '.join(args.only)}; load average {os.getloadavg()}, "
        f"{os.cpu_count()} CPUs")  # fmt: skip
    checks: dict[str, Check] = {}
    started = time.perf_counter()
    url = None
    if {"L1", "L2"} & set(args.only) or "L3" in args.only:
        if "L2" in args.only and "L1" not in args.only:
            args.only.append("L1")  # L2 re-ingests what L1 stored
        url = database_url(args.admin_url, args.database)
        has_votes = False
        if "L1" not in args.only:
            try:
                has_votes = bool(sql_one(url, "SELECT count(*) FROM annotate_classification")[0])
            except Exception:
                has_votes = False
        if "L1" in args.only or not has_votes:
            url = ingest_checks(args, checks)
    if "L3" in args.only:
        aggregation_check(args, url, checks.setdefault("L3", Check("L3")))
    if {"L4", "L5"} & set(args.only):
        # A database filled before the latest migrations (the login's lockout table) gets them.
        worker("migrate", database_url(args.admin_url, args.bench_database))
    if "L4" in args.only:
        api_check(args, checks.setdefault("L4", Check("L4")))
    if "L5" in args.only:
        admin_check(args, checks.setdefault("L5", Check("L5")))

    say(f"\nsummary ({time.perf_counter() - started:.0f} s; load average {os.getloadavg()}):")
    for name in CHECKS:
        if name in checks and name in args.only:
            check = checks[name]
            verdict = "FAIL (" + "; ".join(check.failures) + ")" if check.failures else "PASS"
            say(f"  {name}: {verdict}")
    if not keep:
        import shutil

        shutil.rmtree(args.workdir, ignore_errors=True)
    return 1 if any(checks[n].failures for n in checks if n in args.only) else 0


if __name__ == "__main__":
    sys.exit(main())
