"""Fill a PostgreSQL benchmark database at production scale, and time the ingestion-to-labels path.

Usage, from the repository root (PostgreSQL only; the databases are created, and with
``--recreate`` dropped first, through the role in ``--admin-url``, which needs CREATEDB)::

    .venv/bin/python bench/load_data.py fill --recreate
        # crowdloop_bench: 100,000 items, 20 concepts, 5,000 volunteers, 1,000,000 classifications,
        # aggregated by the real labels_aggregate (timed); the database bench/load_test.py loads
    .venv/bin/python bench/load_data.py ingest --rows 1000000
        # crowdloop_bench_ingest: a 1M-row Zooniverse export CSV (bench/import_classifications.py's
        # generator), then `manage.py import_classifications` + `manage.py aggregate`, timed

``fill`` writes the raw tables with PostgreSQL ``COPY`` (psycopg ``cursor.copy``): what it
bypasses is only the CSV parsing the ``ingest`` run measures. Everything downstream of the raw
votes is the real code path: ``annotate.services.aggregation.labels_aggregate`` turns the million
votes into 2,000,000 aggregated labels and 100,000 volunteer skills, and curator decisions go
through ``annotate.services.review.review_record``.

The simulated crowd: concept prevalences U(0.03, 0.3); the volunteers are ``ml.crowd``'s default
crowd (``SimulatedCrowd``: 60% careful, 30% careless, 10% spammers by ``DEFAULT_MIX``, their
profiles' rates, Pareto activity, so a few volunteers do most of the work), and they tick by its
rule, drawn chunk by chunk; about a third logged out; 10 votes per item, items classified set by
set over 60 days; repeats of a volunteer on a subject flagged as duplicates (earliest counts).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml.crowd import SimulatedCrowd  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
PYTHON = REPO / ".venv" / "bin" / "python"
DEFAULT_ADMIN_URL = "postgres://crowdloop:crowdloop@127.0.0.1:5432/crowdloop"
CURATOR_USERNAME = "bench-curator"
# A local benchmark database's throwaway account; bench/load_test.py logs in with it.
CURATOR_PASSWORD = "bench-curator-not-a-secret-7f3a"


def say(text: str) -> None:
    print(text, flush=True)


class Timer:
    """``with Timer("step"):`` prints how long the step took."""

    def __init__(self, label: str, timings: dict[str, float] | None = None) -> None:
        self.label = label
        self.timings = timings

    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        if self.timings is not None:
            self.timings[self.label] = self.seconds
        say(f"  {self.label:52} {self.seconds:8.1f} s")


# --------------------------------------------------------------------------------------------
# databases
# --------------------------------------------------------------------------------------------


def database_url(admin_url: str, name: str) -> str:
    """``admin_url`` with its database name replaced by ``name``."""
    base, _, _old = admin_url.rpartition("/")
    return f"{base}/{name}"


def database_create(
    admin_url: str, name: str, *, recreate: bool, work_mem: str | None = None
) -> None:
    """Create the database ``name``, dropping it first with ``recreate``; plain identifiers only."""
    if not name.replace("_", "").isalnum():
        raise SystemExit(f"refusing a database name that is not a plain identifier: {name!r}")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and recreate:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = None
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
        if work_mem:
            # PostgreSQL's default (4MB) is too small to hash the NOT IN (1M classifications)
            # subquery of the aggregation's clean-up DELETE, which then runs as a nested loop
            # (planner cost 2e10 instead of 6e4; see bench/README.md). Set per database, so every
            # connection of the run, including gunicorn's and manage.py's, gets it.
            if not work_mem.rstrip("kMGB").isdigit():
                raise SystemExit(f"--work-mem takes a size like 64MB, not {work_mem!r}")
            conn.execute(f"ALTER DATABASE \"{name}\" SET work_mem = '{work_mem}'")


def django_setup(url: str) -> None:
    """Point Django at the benchmark database; must run before anything imports settings."""
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


# --------------------------------------------------------------------------------------------
# COPY
# --------------------------------------------------------------------------------------------


def copy_rows(model: Any, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """COPY ``rows`` into ``model``'s table; columns not given get the field's default.

    ``columns`` are attribute names (``item_id`` for a foreign key). Django applies defaults in
    Python, not in the schema, so a raw COPY must send them; JSON values go as their text.
    """
    from django.db import connection
    from django.utils import timezone

    now = timezone.now()
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    given = {name: i for i, name in enumerate(columns)}
    unknown = set(columns) - {f.attname for f in fields}
    assert not unknown, f"no such columns on {model.__name__}: {sorted(unknown)}"

    def default(field: Any) -> Any:
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            return now
        # Django's own rule: the declared default, else "" for text that may not be NULL.
        value = field.get_default()
        if field.get_internal_type() == "JSONField" and value is not None:
            return json.dumps(value)
        return value

    plan = [(given.get(f.attname), default(f)) for f in fields]
    table = model._meta.db_table
    names = ", ".join(f'"{f.column}"' for f in fields)
    n = 0
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row([row[i] if i is not None else value for i, value in plan])
                n += 1
    return n


def ids_in_order(model: Any) -> np.ndarray:
    return np.array(model.objects.order_by("pk").values_list("pk", flat=True), dtype=np.int64)


# --------------------------------------------------------------------------------------------
# fill: the database the load test runs against
# --------------------------------------------------------------------------------------------


def crowd_draw(
    rng: np.random.Generator, *, n_items: int, n_volunteers: int, n_concepts: int
) -> tuple[np.ndarray, SimulatedCrowd]:
    """The items' true concepts (n_items, n_concepts) and the volunteers: ``ml.crowd``'s default
    crowd, seeded from ``rng``. ``bench/aggregate_incremental.py`` calls it again with the
    fill's seed to meet the same crowd."""
    prevalence = rng.uniform(0.03, 0.3, n_concepts)
    truth = rng.random((n_items, n_concepts)) < prevalence  # (items, concepts)
    crowd = SimulatedCrowd(n_volunteers=n_volunteers, seed=int(rng.integers(2**32)))
    return truth, crowd


def crowd_simulate(
    rng: np.random.Generator, *, n_items: int, n_volunteers: int, n_votes: int, n_concepts: int
) -> dict[str, np.ndarray]:
    """Votes as arrays: item, volunteer, time rank, ticks (n_votes, n_concepts), duplicate flag."""
    truth, crowd = crowd_draw(
        rng, n_items=n_items, n_volunteers=n_volunteers, n_concepts=n_concepts
    )

    per_item = max(1, n_votes // n_items)
    item = np.repeat(np.arange(n_items), per_item)[:n_votes]
    if item.size < n_votes:  # the remainder goes to random items
        item = np.concatenate([item, rng.integers(0, n_items, n_votes - item.size)])
    volunteer = rng.choice(n_volunteers, size=n_votes, p=crowd.activity)
    # Items are classified set by set (2,000 subjects each), in random order within a set.
    rank = np.lexsort((rng.random(n_votes), item // 2000))
    order = np.empty(n_votes, dtype=np.int64)
    order[rank] = np.arange(n_votes)

    ticks = np.empty((n_votes, n_concepts), dtype=bool)
    for start in range(0, n_votes, 100_000):  # bounded memory: 100k x 20 float64 draws at a time
        stop = min(n_votes, start + 100_000)
        ticks[start:stop] = crowd.ticks(truth[item[start:stop]], volunteer[start:stop])

    # Repeats of a volunteer on the same item: all but the earliest are duplicates.
    by_pair = np.lexsort((order, volunteer, item))
    same = (item[by_pair][1:] == item[by_pair][:-1]) & (
        volunteer[by_pair][1:] == volunteer[by_pair][:-1]
    )
    duplicate = np.zeros(n_votes, dtype=bool)
    duplicate[by_pair[1:][same]] = True
    return {
        "item": item,
        "volunteer": volunteer,
        "order": order,
        "ticks": ticks,
        "duplicate": duplicate,
        "truth": truth,
    }


def fill(args: argparse.Namespace) -> None:
    url = database_url(args.admin_url, args.database)
    say(f"fill {args.database}: {args.items:,} items, {args.volunteers:,} volunteers, "
        f"{args.classifications:,} classifications")  # fmt: skip
    say(f"load average at the start: {os.getloadavg()}, {os.cpu_count()} CPUs")
    say(f"work_mem of the database: {args.work_mem or 'the server default'}")
    timings: dict[str, float] = {}
    with Timer("create database", timings):
        database_create(
            args.admin_url, args.database, recreate=args.recreate, work_mem=args.work_mem
        )
    django_setup(url)

    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.utils import timezone

    from annotate.models import (
        Classification,
        Concept,
        Item,
        PriorLabel,
        Round,
        Subject,
        Volunteer,
        Workflow,
        WorkflowVersion,
    )
    from annotate.roles import CURATOR, roles_setup
    from annotate.services.aggregation import labels_aggregate
    from annotate.services.review import review_record
    from annotate.services.vocabulary import vocabulary_load

    if _migrated() and Item.objects.exists():
        raise SystemExit(f"{args.database} already has items: pass --recreate to start over")
    with Timer("migrate, vocabulary, roles, workflow", timings):
        call_command("migrate", verbosity=0)
        vocabulary_load()
        roles_setup()
        concepts = list(Concept.objects.filter(active=True).order_by("position", "key"))
        workflow = Workflow.objects.create(zooniverse_id=7, display_name="Which labels apply?")
        WorkflowVersion.objects.create(
            workflow=workflow,
            version="3.1",
            answers=[{"label": c.label, "concept": c.key} for c in concepts],
        )
        user_model = get_user_model()
        curator = user_model.objects.create_user(
            CURATOR_USERNAME, password=CURATOR_PASSWORD, is_staff=True
        )
        curator.groups.add(Group.objects.get(name=CURATOR))
    n_concepts = len(concepts)
    concept_pks = np.array([c.pk for c in concepts], dtype=np.int64)
    rng = np.random.default_rng(args.seed)

    with Timer("simulate the crowd (numpy)", timings):
        crowd = crowd_simulate(
            rng,
            n_items=args.items,
            n_volunteers=args.volunteers,
            n_votes=args.classifications,
            n_concepts=n_concepts,
        )

    image_states = np.array(["ok"] * 95 + ["corrupt", "refused", "too_large", "missing", "pending"])
    with Timer(f"COPY {args.items:,} items", timings), transaction.atomic():
        states = rng.choice(image_states, args.items)
        copy_rows(
            Item,
            ["external_id", "image_url", "title", "provider", "image_state"],
            (
                (
                    f"/2058612/item_{i:07d}",
                    f"https://images.example.org/2058612/{i:07d}.jpg",
                    f"Object {i} of the benchmark collection",
                    "Benchmark Museum",
                    str(states[i]),
                )
                for i in range(args.items)
            ),
        )
    item_pks = ids_in_order(Item)

    # A noisy earlier enrichment on a fifth of the items: one concept, right 70% of the time.
    with Timer("COPY prior labels", timings), transaction.atomic():
        with_prior = np.flatnonzero(rng.random(args.items) < 0.2)
        guessed = rng.integers(0, n_concepts, with_prior.size)
        present = [np.flatnonzero(crowd["truth"][i]) for i in with_prior]
        priors = {
            (int(item_pks[i]), int(concept_pks[p[0] if p.size and rng.random() < 0.7 else g]))
            for i, p, g in zip(with_prior, present, guessed, strict=True)
        }
        copy_rows(PriorLabel, ["item_id", "concept_id", "source"],
                  ((i, c, "enrichment-2023") for i, c in priors))  # fmt: skip

    n_rounds = 5
    with Timer("rounds and COPY subjects", timings), transaction.atomic():
        start_time = datetime(2026, 9, 1, tzinfo=UTC)
        rounds = [
            Round.objects.create(
                number=r + 1,
                name=f"round {r + 1}",
                workflow=workflow,
                strategy="random" if r == 0 else "entropy",
                status=Round.Status.PUSHED if r == n_rounds - 1 else Round.Status.CLOSED,
                pushed_at=start_time + timedelta(days=12 * r),
            )
            for r in range(n_rounds)
        ]
        per_round = -(-args.items // n_rounds)
        copy_rows(
            Subject,
            ["zooniverse_id", "item_id", "round_id", "metadata"],
            (
                (
                    90_000_000 + i,
                    int(item_pks[i]),
                    rounds[i // per_round].pk,
                    json.dumps({"external_id": f"/2058612/item_{i:07d}"}),
                )
                for i in range(args.items)
            ),
        )
    subject_pks = ids_in_order(Subject)

    with Timer(f"COPY {args.volunteers:,} volunteers", timings), transaction.atomic():
        logged_out = rng.random(args.volunteers) < 0.33
        copy_rows(
            Volunteer,
            ["key", "zooniverse_user_id", "user_name", "logged_in"],
            (
                (f"not-logged-in-{v:020x}", None, "", False)
                if logged_out[v]
                else (f"user:{1_000_000 + v}", 1_000_000 + v, f"volunteer_{v}", True)
                for v in range(args.volunteers)
            ),
        )
    volunteer_pks = ids_in_order(Volunteer)

    n = args.classifications
    with Timer(f"COPY {n:,} classifications", timings), transaction.atomic():
        order = crowd["order"]
        created = np.datetime64(start_time.replace(tzinfo=None), "s") + (
            order * (60 * 86400 // max(1, n))
        ).astype("timedelta64[s]")
        zooniverse_ids = 500_000_000 + order * 7 + 3
        rows_idx, cols = np.nonzero(crowd["ticks"])
        counts = np.bincount(rows_idx, minlength=n)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        ticked = concept_pks[cols].tolist()
        items = crowd["item"]
        volunteers = crowd["volunteer"]
        duplicate = crowd["duplicate"].tolist()
        wf, version = workflow.pk, "3.1"

        def rows() -> Iterable[tuple]:
            created_list = created.astype(datetime).tolist()
            for k in range(n):
                ids = ticked[bounds[k] : bounds[k + 1]]
                yield (
                    int(zooniverse_ids[k]),
                    wf,
                    version,
                    int(subject_pks[items[k]]),
                    int(item_pks[items[k]]),
                    int(volunteer_pks[volunteers[k]]),
                    created_list[k].replace(tzinfo=UTC),
                    "[" + ",".join(map(str, ids)) + "]",
                    duplicate[k],
                    "export",
                )

        copy_rows(
            Classification,
            ["zooniverse_id", "workflow_id", "workflow_version", "subject_id", "item_id",
             "volunteer_id", "created_at", "concept_ids", "is_duplicate", "source"],
            rows(),
        )  # fmt: skip

    # What the import keeps on the rows themselves: votes per item and per volunteer.
    with Timer("counters (UPDATE ... FROM grouped counts)", timings), connection.cursor() as c:
        c.execute(
            "UPDATE annotate_item i SET n_classifications = c.n FROM (SELECT item_id, count(*) n "
            "FROM annotate_classification WHERE NOT is_duplicate GROUP BY item_id) c "
            "WHERE i.id = c.item_id"
        )
        c.execute(
            "UPDATE annotate_volunteer v SET n_classifications = c.n FROM (SELECT volunteer_id, "
            "count(*) n FROM annotate_classification GROUP BY volunteer_id) c "
            "WHERE v.id = c.volunteer_id"
        )
    with Timer("ANALYZE", timings), connection.cursor() as c:
        c.execute("ANALYZE")

    with Timer(f"aggregate {n:,} classifications (labels_aggregate)", timings):
        summary = labels_aggregate(progress=lambda text: say(f"    {text}"))
    say(f"    {summary.summary()}")

    # Zooniverse retires what the aggregation settled (the sync pushes that); mirror it here.
    with Timer("retire settled subjects", timings):
        Subject.objects.filter(zooniverse_id__in=summary.retire_subject_ids).update(
            retired_at=timezone.now(), retirement_reason="consensus"
        )

    # A curator has worked through part of the queue: real decisions through the service.
    with Timer(f"{args.reviews} curator decisions (review_record)", timings):
        from annotate.selectors import review_queue

        queue = list(review_queue()[: args.reviews])
        keys = [c.key for c in concepts]
        for k, item in enumerate(queue):
            action = ("accept", "edit", "reject", "accept")[k % 4]
            review_record(
                item=item,
                curator=curator,
                action=action,
                concepts=[keys[k % n_concepts]] if action == "edit" else None,
                comment="benchmark decision",
            )
    model_add(crowd["truth"], item_pks, concepts, timings, seed=args.seed)
    with Timer("ANALYZE", timings), connection.cursor() as c:
        c.execute("ANALYZE")

    say("")
    with connection.cursor() as c:
        tables = ["annotate_item", "annotate_classification", "annotate_aggregatedlabel",
                  "annotate_volunteerskill", "annotate_subject", "annotate_review"]  # fmt: skip
        for table in tables:
            c.execute(f"SELECT count(*) FROM {table}")
            say(f"  {table:28} {c.fetchone()[0]:>10,} rows")
        c.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        say(f"  database size {c.fetchone()[0]}")
    say(f"total {sum(timings.values()):.1f} s; load average at the end: {os.getloadavg()}")


def model_add(
    truth: np.ndarray,
    item_pks: np.ndarray,
    concepts: list[Any],
    timings: dict[str, float],
    *,
    seed: int = 0,
    accuracy: float = 0.995,
) -> None:
    """An active model version with a prediction for every item, so the review screens show the
    model's column and flags: scores right ``accuracy`` of the time, confident (0.7-0.99 on the
    side they pick) like a trained model; then the real model-vs-crowd conflict refresh.

    The version has no checkpoint (its path names none): the load test reads the scores, and an
    evidence map, which would need one, is not part of a page's HTML.
    """
    from training.models import ModelVersion, Prediction
    from training.services.conflicts import item_model_conflicts_refresh

    rng = np.random.default_rng(seed + 1)
    keys = [c.key for c in concepts]
    with Timer(f"an active model with {len(item_pks):,} predictions (COPY)", timings):
        version = ModelVersion.objects.create(
            backbone="resnet18",
            concepts=keys,
            thresholds=[0.5] * len(keys),
            checkpoint_path="models/benchmark-without-checkpoint/model.json",
            checkpoint_sha256="0" * 64,
            status=ModelVersion.Status.ACTIVE,
            val_map=0.65,
        )
        right = rng.random(truth.shape) < accuracy
        says_yes = np.where(right, truth, ~truth)
        strength = rng.uniform(0.7, 0.99, truth.shape)
        scores = np.where(says_yes, strength, 1.0 - strength).astype("<f4")
        uncertainty = (1.0 - np.abs(2.0 * scores - 1.0)).max(axis=1)
        copy_rows(
            Prediction,
            ["model_version_id", "item_id", "scores", "uncertainty"],
            (
                (version.pk, int(pk), scores[i].tobytes(), float(uncertainty[i]))
                for i, pk in enumerate(item_pks)
            ),
        )
    with Timer("model-vs-crowd conflict flags (item_model_conflicts_refresh)", timings):
        changed = item_model_conflicts_refresh()
    say(f"    {changed:,} items flagged where the model and a confident crowd disagree")


def model(args: argparse.Namespace) -> None:
    """Add the model step to a database filled before it existed (re-simulates the same truth)."""
    url = database_url(args.admin_url, args.database)
    django_setup(url)
    from annotate.models import Concept, Item
    from training.models import ModelVersion

    if ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).exists():
        raise SystemExit(f"{args.database} already has an active model")
    concepts = list(Concept.objects.filter(active=True).order_by("position", "key"))
    item_pks = ids_in_order(Item)
    rng = np.random.default_rng(args.seed)
    prevalence = rng.uniform(0.03, 0.3, len(concepts))
    truth = rng.random((len(item_pks), len(concepts))) < prevalence
    timings: dict[str, float] = {}
    model_add(truth, item_pks, concepts, timings, seed=args.seed)


def _migrated() -> bool:
    from django.db import connection

    return "annotate_item" in connection.introspection.table_names()


# --------------------------------------------------------------------------------------------
# ingest: export CSV -> import_classifications -> aggregate, each timed as its own command
# --------------------------------------------------------------------------------------------


def ingest(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(BENCH))
    from import_classifications import (  # the colleague's generator, reused as is
        WORKFLOW_ID,
        classification_export_write,
        measure,
        workflow_export_write,
    )

    url = database_url(args.admin_url, args.database)
    say(f"ingest {args.rows:,} classifications into {args.database} (recreated)")
    say(f"load average at the start: {os.getloadavg()}, {os.cpu_count()} CPUs")
    say(f"work_mem of the database: {args.work_mem or 'the server default'}")
    database_create(args.admin_url, args.database, recreate=True, work_mem=args.work_mem)
    django_setup(url)
    from django.core.management import call_command
    from django.db import transaction

    from annotate.models import Item

    call_command("migrate", verbosity=0)
    call_command("load_vocabulary", verbosity=0)
    # The catalogue exists before the votes: one item per subject of the export, matched by the
    # export's subject metadata (external_id), as a real project's items would be.
    n_subjects = max(1, args.rows // 10)
    with transaction.atomic():
        copy_rows(Item, ["external_id", "image_state"],
                  ((f"/2058612/item_{i:07d}", "ok") for i in range(n_subjects)))  # fmt: skip

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="crowdloop-ingest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cls, wf = workdir / "classifications.csv", workdir / "workflow.csv"
    with Timer(f"write the {args.rows:,}-row export CSV (not part of the path)"):
        workflow_export_write(wf)
        if not (cls.exists() and args.reuse_csv):
            classification_export_write(cls, rows=args.rows)
    say(f"  export: {cls} ({cls.stat().st_size / 2**20:,.0f} MiB)")

    env = {**os.environ, "DATABASE_URL": url}
    manage = [str(PYTHON), "manage.py"]
    measure([*manage, "configure_workflow", "--workflow-id", str(WORKFLOW_ID),
             "--workflow-export", str(wf)], env=env)  # fmt: skip
    steps: list[tuple[str, list[str]]] = [
        ("import_classifications", [*manage, "import_classifications", str(cls), "--workflow-id",
                                    str(WORKFLOW_ID), "-v", "0"]),
        ("aggregate", [*manage, "aggregate"]),
    ]  # fmt: skip
    total = 0.0
    say(f"{'step':24} {'seconds':>9} {'rows/s':>10} {'peak RSS MiB':>13}")
    for name, command in steps:
        result = measure(command, env=env)
        total += result.seconds
        say(f"{name:24} {result.seconds:9.1f} {args.rows / result.seconds:10,.0f} "
            f"{result.peak_rss_mib:13,.0f}")  # fmt: skip
        say("    $ " + " ".join(command[1:]))
        say("    " + result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "")
    say(f"{'ingestion to labels':24} {total:9.1f} {args.rows / total:10,.0f}")
    say(f"load average at the end: {os.getloadavg()}")
    if not args.workdir:
        say(f"(the export stays in {workdir}; delete it when done)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL),
                        help="a role with CREATEDB; its database name is replaced")  # fmt: skip
    parser.add_argument("--work-mem", default=None,
                        help="ALTER DATABASE ... SET work_mem, e.g. 64MB")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    p_fill = sub.add_parser("fill", help="the load-test database")
    p_fill.add_argument("--database", default="crowdloop_bench")
    p_fill.add_argument("--recreate", action="store_true", help="drop the database first")
    p_fill.add_argument("--items", type=int, default=100_000)
    p_fill.add_argument("--volunteers", type=int, default=5_000)
    p_fill.add_argument("--classifications", type=int, default=1_000_000)
    p_fill.add_argument("--reviews", type=int, default=300)
    p_fill.add_argument("--seed", type=int, default=0)
    p_model = sub.add_parser("model", help="add the active model to a database filled before")
    p_model.add_argument("--database", default="crowdloop_bench")
    p_model.add_argument("--seed", type=int, default=0)
    p_ingest = sub.add_parser("ingest", help="time export CSV -> import -> aggregate")
    p_ingest.add_argument("--database", default="crowdloop_bench_ingest")
    p_ingest.add_argument("--rows", type=int, default=1_000_000)
    p_ingest.add_argument("--workdir", type=Path, default=None, help="keep the CSV here")
    p_ingest.add_argument("--reuse-csv", action="store_true", help="keep an existing CSV")
    args = parser.parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], None]] = {
        "fill": fill, "model": model, "ingest": ingest,
    }  # fmt: skip
    run = commands[args.command]
    run(args)


if __name__ == "__main__":
    main()
