"""Incremental aggregation after a pull, beside the full pass, on the 1M-vote PostgreSQL database.

Usage, from the repository root (PostgreSQL; the database comes from ``bench/load_data.py``)::

    .venv/bin/python bench/load_data.py --work-mem 64MB fill --recreate   # crowdloop_bench
    .venv/bin/python bench/aggregate_incremental.py                       # 5 pulls of 1,000 votes

What it does, on the ``fill`` database (100,000 items, 1,000,000 classifications, labels and
skills already aggregated):

1. ``migrate`` (a database filled before ``AggregationState`` existed gets the table), then one
   full pass, ``labels_aggregate()``, timed: it stores the crowd-level parameters the
   incremental passes start from. Then, as a check, an incremental pass over ``--votes``
   random items without new votes, which must land on the full pass's labels.
2. ``--repeats`` times: a pull's worth of new classifications (``--votes``, 1,000) goes in
   through the import service a Zooniverse pull uses (``classifications_ingest`` with the sync
   cursor, pages of 100 rows, one transaction each), then ``labels_aggregate(item_ids=...)`` on
   the items of those new rows, as the pipeline asks for it, timed. The votes come from the
   crowd that made the database (``FillCrowd``: the fill's simulation drawn again with its
   seed): open (unretired) subjects, the fill's volunteers by their activity with their own
   skills (90%; the logged-out ones arrive as ``not-logged-in-*`` sessions, new anonymous
   volunteers to the import) and newcomers no stored skill knows (10%), ticking true concepts.
3. A full pass over everything, new votes included, timed: the anchor, what a pull would cost
   without the incremental mode. The labels the incremental passes wrote are compared with this
   full pass's (the incremental passes kept the skills of step 1; the full pass re-estimates
   them with the new votes), and both with the redrawn truth.

It prints each pass, the incremental median and range, the anchor and the ratio, and the goal
(under 5 s per pull of 1,000 new votes). Timings are wall-clock seconds of the service call in
this process (Django set up, connection open), like a Celery worker's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from load_data import DEFAULT_ADMIN_URL, crowd_draw, database_url, django_setup, say  # noqa: E402

# load_data has put the repository on the path.
from ml.crowd import SimulatedCrowd, tick_probability  # noqa: E402

T = TypeVar("T")
GOAL_S = 5.0
PAGE = 100  # rows per pull page, as classifications_pull asks Zooniverse for


def timed(call: Callable[[], T]) -> tuple[T, float]:
    """``call()`` and its wall-clock seconds."""
    started = time.perf_counter()
    value = call()
    return value, time.perf_counter() - started


@dataclass
class FillCrowd:
    """The simulated crowd behind a ``bench/load_data.py fill`` database, drawn again.

    ``crowd_simulate`` does not store its volunteers, so this calls its ``crowd_draw`` again
    with the fill's seed and sizes: each item's true concepts and the same ``ml.crowd``
    volunteers (profiles, skills and activity). The new votes then come from the crowd that made
    the database. ``agreement`` (the share of item x concept labels on which the stored crowd
    labels match this truth) is printed as the check that the two still draw alike.
    """

    truth: np.ndarray  # (n_items, n_concepts) bool
    volunteers: SimulatedCrowd  # the fill's volunteers

    @classmethod
    def draw(cls, *, seed: int, n_items: int, n_volunteers: int, n_concepts: int) -> FillCrowd:
        truth, volunteers = crowd_draw(
            np.random.default_rng(seed),
            n_items=n_items,
            n_volunteers=n_volunteers,
            n_concepts=n_concepts,
        )
        return cls(truth, volunteers)


def new_votes_ingest(
    *, crowd: FillCrowd, rng: np.random.Generator, n_votes: int
) -> tuple[list[int], float]:
    """Ingest ``n_votes`` new classifications the way a pull does; their items and the seconds.

    Subjects are drawn from the open ones (unretired, active), volunteers by the fill's activity
    (90%; logged-out ones come back as ``not-logged-in-*`` sessions, which the import keys as
    new anonymous volunteers) or as newcomers the stored skills do not know (10%, a profile of
    the fill's crowd drawn by its shares). Ticks follow the items' true concepts, by
    ``ml.crowd``'s rule.
    """
    from django.db.models import Max
    from django.utils import timezone

    from annotate.models import (
        Classification,
        ImportReport,
        Subject,
        Volunteer,
        Workflow,
        WorkflowVersion,
    )
    from annotate.services.classifications import ClassificationRecord, classifications_ingest

    workflow = Workflow.objects.get(zooniverse_id=7)
    version = WorkflowVersion.objects.filter(workflow=workflow).order_by("-pk").first()
    assert version is not None, "the fill database has workflow 7 with one version"
    # The fill's answers are the vocabulary in its column order: answer j is truth column j.
    open_subjects = np.array(
        Subject.objects.filter(
            retired_at__isnull=True,
            upstream_state=Subject.Upstream.ACTIVE,
            item__isnull=False,
            zooniverse_id__gte=90_000_000,
            zooniverse_id__lt=90_000_000 + len(crowd.truth),
        ).values_list("zooniverse_id", flat=True),
        dtype=np.int64,
    )
    logged_out = set(
        Volunteer.objects.filter(logged_in=False, key__startswith="not-logged-in-").values_list(
            "key", flat=True
        )
    )
    first_id = (Classification.objects.aggregate(top=Max("zooniverse_id"))["top"] or 0) + 1
    volunteers = crowd.volunteers
    n_volunteers = volunteers.n_volunteers
    kinds = list(volunteers.mix)
    shares = np.array([volunteers.mix[k][0] for k in kinds])
    now = timezone.now()
    records = []
    for k, subject_id in enumerate(rng.choice(open_subjects, n_votes).tolist()):
        truth = crowd.truth[subject_id - 90_000_000]
        user_id: int | None
        if rng.random() < 0.9:
            v = int(rng.choice(n_volunteers, p=volunteers.activity))
            sensitivity, false_positive = volunteers.sensitivity[v], volunteers.false_positive[v]
            anonymous = f"not-logged-in-{v:020x}"
            user_id, user_name = (
                (None, anonymous) if anonymous in logged_out else (1_000_000 + v, "")
            )
        else:
            _, profile = volunteers.mix[kinds[rng.choice(len(kinds), p=shares / shares.sum())]]
            sensitivity, false_positive = profile.sensitivity, profile.false_positive
            user_id, user_name = 50_000_000 + first_id + k, ""
        p_tick = tick_probability(truth, sensitivity, false_positive)
        ticked = np.flatnonzero(rng.random(len(truth)) < p_tick).tolist()
        records.append(
            ClassificationRecord(
                zooniverse_id=first_id + k,
                workflow_id=7,
                workflow_version=version.version,
                subject_ids=[subject_id],
                user_id=user_id,
                user_name=user_name,
                created_at=now + timedelta(milliseconds=k),
                answers=ticked,
            )
        )
    report = ImportReport.objects.create(kind=ImportReport.Kind.SYNC, source="bench pull")
    top = Classification.objects.aggregate(top=Max("pk"))["top"] or 0
    counts, seconds = timed(
        lambda: classifications_ingest(
            records=records, workflow=workflow, report=report, batch_size=PAGE, cursor=True
        )
    )
    assert counts.created == n_votes, counts.summary()
    # What the pipeline hands the aggregation: the items of the rows stored since its watermark.
    items = sorted(
        set(
            Classification.objects.filter(pk__gt=top, item__isnull=False).values_list(
                "item_id", flat=True
            )
        )
    )
    return items, seconds


def posteriors_read(items: Sequence[int]) -> dict[tuple[int, int], float]:
    from annotate.models import AggregatedLabel

    rows = AggregatedLabel.objects.filter(item_id__in=items).values_list(
        "item_id", "concept_id", "posterior"
    )
    return {(item, concept): posterior for item, concept, posterior in rows.iterator()}


def fill_positions() -> tuple[dict[int, int], dict[int, int]]:
    """Item pk to the fill's item index, concept pk to its column."""
    from annotate.models import Concept, Item

    rows = Item.objects.filter(external_id__startswith="/2058612/item_")
    items = {pk: int(external_id.rsplit("_", 1)[1])
             for pk, external_id in rows.values_list("pk", "external_id")}  # fmt: skip
    active = Concept.objects.filter(active=True).order_by("position", "key")
    return items, {pk: j for j, pk in enumerate(active.values_list("pk", flat=True))}


def crowd_agreement(crowd: FillCrowd) -> float:
    """Share of the fill items' stored labels (posterior > 0.5) that match the redrawn truth."""
    from annotate.models import AggregatedLabel

    position, column = fill_positions()
    n_items, n_concepts = crowd.truth.shape
    labels = np.zeros((n_items, n_concepts), dtype=bool)
    seen = np.zeros(n_items, dtype=bool)
    rows = AggregatedLabel.objects.values_list("item_id", "concept_id", "posterior")
    for item_pk, concept_pk, posterior in rows.iterator(chunk_size=50_000):
        i, j = position.get(item_pk), column.get(concept_pk)
        if i is not None and j is not None and i < n_items:
            labels[i, j] = posterior > 0.5
            seen[i] = True
    return float((labels[seen] == crowd.truth[seen]).mean())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL))
    parser.add_argument("--database", default="crowdloop_bench", help="a bench/load_data.py fill")
    parser.add_argument("--votes", type=int, default=1000, help="new classifications per pull")
    parser.add_argument("--repeats", type=int, default=5, help="pulls (at least 3)")
    parser.add_argument("--seed", type=int, default=1, help="of the new votes")
    parser.add_argument("--fill-seed", type=int, default=0, help="the fill's --seed")
    parser.add_argument("--fill-items", type=int, default=100_000, help="the fill's --items")
    parser.add_argument("--fill-volunteers", type=int, default=5_000, help="its --volunteers")
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error("--repeats must be at least 3")

    django_setup(database_url(args.admin_url, args.database))
    from django.core.management import call_command
    from django.db import connection

    from annotate.models import Classification, Concept, Item
    from annotate.services.aggregation import labels_aggregate

    if not Item.objects.exists():
        raise SystemExit(f"{args.database} is empty: run bench/load_data.py fill first")
    call_command("migrate", verbosity=0)
    rng = np.random.default_rng(args.seed)
    crowd = FillCrowd.draw(
        seed=args.fill_seed,
        n_items=args.fill_items,
        n_volunteers=args.fill_volunteers,
        n_concepts=Concept.objects.filter(active=True).count(),
    )
    say(f"incremental aggregation on {args.database}: {Item.objects.count():,} items, "
        f"{Classification.objects.count():,} classifications; {args.repeats} pulls of "
        f"{args.votes:,} new classifications")  # fmt: skip
    say(f"database {connection.vendor}; load average at the start: {os.getloadavg()}, "
        f"{os.cpu_count()} CPUs")  # fmt: skip
    say(f"the fill's crowd drawn again: its truth matches {crowd_agreement(crowd):.1%} of the "
        f"stored labels")  # fmt: skip

    first, first_s = timed(labels_aggregate)
    say(f"full pass before the pulls   {first_s:7.2f} s   {first.summary()}")
    # With no new votes, the E-step under the stored parameters must give the full pass's labels.
    some = sorted(rng.choice(list(fill_positions()[0]), args.votes, replace=False).tolist())
    before = posteriors_read(some)
    check = labels_aggregate(item_ids=some)
    after = posteriors_read(some)
    gap = max((abs(after[key] - p) for key, p in before.items()), default=0.0)
    say(f"check: an incremental pass over {len(some):,} items without new votes: max |diff| "
        f"{gap:.1e} from the full pass, {check.labels_changed} labels changed")  # fmt: skip

    incremental: list[float] = []
    touched: dict[tuple[int, int], float] = {}
    for pull in range(1, args.repeats + 1):
        items, ingest_s = new_votes_ingest(crowd=crowd, rng=rng, n_votes=args.votes)
        summary, seconds = timed(lambda items=items: labels_aggregate(item_ids=items))
        if not summary.incremental:
            raise SystemExit("the pass fell back to a full one: no stored parameters?")
        incremental.append(seconds)
        touched.update(posteriors_read(items))
        say(f"pull {pull}: ingest {args.votes:,} votes {ingest_s:5.2f} s; incremental pass over "
            f"{len(items):,} items {seconds:5.2f} s: {summary.n_classifications:,} votes read, "
            f"{summary.labels_changed} labels changed, {summary.confident_items} confident, "
            f"{len(summary.retire_subject_ids)} subjects to retire")  # fmt: skip

    full, full_s = timed(labels_aggregate)
    say(f"full pass after the pulls    {full_s:7.2f} s   {full.summary()}")
    # The pulled items' labels as the incremental passes left them, against the full pass's
    # (which re-estimated the skills with the new votes) and against the redrawn truth.
    redone = posteriors_read(sorted({item for item, _ in touched}))
    position, column = fill_positions()
    keys = [key for key in touched if key in redone]
    ours = np.array([touched[key] > 0.5 for key in keys], dtype=bool)
    theirs = np.array([redone[key] > 0.5 for key in keys], dtype=bool)
    diff = np.array([abs(touched[key] - redone[key]) for key in keys])
    truth = np.array([crowd.truth[position[i], column[c]] for i, c in keys], dtype=bool)

    median = statistics.median(incremental)
    anchor = full_s
    low, high = min(incremental), max(incremental)
    say("")
    say(f"incremental pass per pull of {args.votes:,} new votes: median {median:.2f} s "
        f"(range {low:.2f}-{high:.2f} s over {len(incremental)} pulls)")  # fmt: skip
    say(f"anchor, full pass on the same database after the pulls: {anchor:.2f} s "
        f"(before them: {first_s:.2f} s)")  # fmt: skip
    say(f"ratio full / incremental: {anchor / median:.0f}x faster")
    say(f"the {len(keys):,} labels of the pulled items, incremental vs the full pass after: "
        f"max |diff| {diff.max(initial=0.0):.4f}, mean {diff.mean() if diff.size else 0.0:.5f}, "
        f"{int((ours != theirs).sum())} on the other side of 0.5")  # fmt: skip
    say(f"their agreement with the redrawn truth: incremental {(ours == truth).mean():.4f}, "
        f"full {(theirs == truth).mean():.4f}")  # fmt: skip
    verdict = "met" if median < GOAL_S else "NOT met"
    say(f"goal: under {GOAL_S:.0f} s per pull of 1,000 new votes: {verdict} ({median:.2f} s)")
    say(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
