"""Reliability L6: a Zooniverse pull and the aggregation run while curators decide on the same
items.

Two real threads, each with its own PostgreSQL connection: one stores pages of new votes the way
a pull does (``classifications_ingest`` with the sync cursor) and aggregates after each page,
incrementally or in full; the other records curator decisions (accept, edit, reject,
accept_prior, and bulk accepts, which lock a thousand rows at a time) on the same items. Neither
may deadlock, and whatever the curator decided last on an item is what the item holds at the
end: the pull and the aggregation own the crowd's fields, never the review state or the curated
label. SQLite serialises writers, so the interleavings only exist on PostgreSQL.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from annotate.models import (
    AggregatedLabel,
    Classification,
    ImportReport,
    Item,
    PriorLabel,
    Review,
    Subject,
    SyncCursor,
    Workflow,
)
from annotate.services.aggregation import labels_aggregate
from annotate.services.classifications import ClassificationRecord, classifications_ingest
from annotate.services.review import review_record, reviews_bulk_accept
from tests.factories import WorkflowFactory, answers_for

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 5, 1, tzinfo=UTC)
KEYS = ["painting", "drawing", "map", "photograph", "postcard"]
N_ITEMS = 36
BULK = 12  # the last items are left to bulk accepts; the others get one decision at a time
PAGES = 16  # pages the pull stores, each followed by an aggregation
VOTES_PER_PAGE = 60
PASSES = 6  # times the curator goes through every item
THREAD_TIMEOUT_S = 60


class Pull:
    """Pages of classifications for the workflow, the way a Zooniverse pull delivers them."""

    def __init__(self, workflow: Workflow, subjects: list[int], seed: int) -> None:
        self.workflow = workflow
        self.subjects = subjects
        self.rng = random.Random(seed)
        self.next_id = 1_000

    def page(self, n: int) -> list[ClassificationRecord]:
        records = []
        for _ in range(n):
            self.next_id += 1
            volunteer = self.rng.randrange(40)
            records.append(
                ClassificationRecord(
                    zooniverse_id=self.next_id,
                    workflow_id=self.workflow.zooniverse_id,
                    workflow_version="3.1",
                    subject_ids=[self.rng.choice(self.subjects)],
                    user_id=5_000 + volunteer,
                    user_name=f"volunteer{volunteer}",
                    created_at=T0 + timedelta(seconds=self.next_id),
                    answers=self.rng.sample(range(len(KEYS)), self.rng.randint(0, 2)),
                    source="api",
                )
            )
        return records

    def store(self, records: list[ClassificationRecord]) -> int:
        report = ImportReport.objects.create(kind=ImportReport.Kind.SYNC, source="L6 pull")
        counts = classifications_ingest(
            records=records,
            workflow=self.workflow,
            report=report,
            batch_size=len(records),
            cursor=True,
        )
        return counts.created


@pytest.fixture
def catalogue(transactional_db, concepts):
    """Items with a subject and a prior label each, votes on every one, and one full aggregation
    (so that accept has a crowd label and an incremental pass has parameters)."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL): SQLite runs one writer at a time")
    workflow = WorkflowFactory(zooniverse_id=7, answers=answers_for(KEYS))
    items = []
    for i in range(N_ITEMS):
        item = Item.objects.create(external_id=f"/l6/item_{i:03d}")
        Subject.objects.create(zooniverse_id=80_000 + i, item=item)
        PriorLabel.objects.create(item=item, concept=concepts[KEYS[i % len(KEYS)]])
        items.append(item)
    pull = Pull(workflow, [80_000 + i for i in range(N_ITEMS)], seed=6)
    for i in range(N_ITEMS):  # every item has votes before the curator starts
        records = pull.page(3)
        for record in records:
            record.subject_ids = [80_000 + i]
        pull.store(records)
    labels_aggregate(method="dawid_skene")
    return workflow, items, pull


class Outcome:
    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.spans: dict[str, tuple[float, float]] = {}


def _in_thread(outcome: Outcome, name: str, start: threading.Barrier, work) -> threading.Thread:
    def run() -> None:
        try:
            start.wait(timeout=10)
            began = time.monotonic()
            work()
            outcome.spans[name] = (began, time.monotonic())
        except BaseException as exc:  # reported in the test's own thread
            outcome.errors.append(exc)
        finally:
            connection.close()

    return threading.Thread(target=run, name=name)


def test_a_pull_and_aggregation_during_curator_decisions_never_deadlock_nor_overwrite_them(
    catalogue, curator
):
    """Reliability L6: both threads finish without a deadlock, every page and decision is stored,
    and every item ends with the review state and curated label of its last decision."""
    workflow, items, pull = catalogue
    pks = [item.pk for item in items]
    single, bulk = pks[:-BULK], pks[-BULK:]
    pages = [pull.page(VOTES_PER_PAGE) for _ in range(PAGES)]
    outcome = Outcome()
    start = threading.Barrier(2)
    created: list[int] = []
    decided: list[tuple[int, str, list[str]]] = []  # (item, state after, curated after)

    def sync() -> None:
        for n, page in enumerate(pages):
            created.append(pull.store(page))
            touched = sorted({record.subject_ids[0] - 80_000 for record in page})
            if n % 2:
                labels_aggregate(method="dawid_skene")
            else:
                labels_aggregate(item_ids=[pks[i] for i in touched], method="dawid_skene")

    def curate() -> None:
        rng = random.Random(11)
        actions = ["accept", "edit", "reject", "accept_prior", "accept", "skip"]
        for n in range(PASSES):
            order = single[:]
            rng.shuffle(order)
            for k, pk in enumerate(order):
                action = actions[(k + n) % len(actions)]
                concepts = rng.sample(KEYS, 2) if action == "edit" else None
                item = Item.objects.get(pk=pk)
                review = review_record(item=item, curator=curator, action=action,
                                       concepts=concepts)  # fmt: skip
                decided.append((pk, review.state_after, list(review.after)))
            # A bulk accept locks every settled, unreviewed item at once, in one transaction
            # (items the crowd settles later are taken by a later pass).
            reviews_bulk_accept(
                items_qs=Item.objects.filter(pk__in=pks), curator=curator, min_confidence=0.51
            )

    threads = [
        _in_thread(outcome, "sync", start, sync),
        _in_thread(outcome, "curate", start, curate),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=THREAD_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck (lock wait)"
    assert outcome.errors == []

    # The two ran at the same time, not one after the other.
    (sync_from, sync_to), (curate_from, curate_to) = outcome.spans["sync"], outcome.spans["curate"]
    assert sync_from < curate_to and curate_from < sync_to

    # The pull stored every page once and its cursor stands at the last id.
    assert sum(created) == PAGES * VOTES_PER_PAGE
    assert Classification.objects.count() == N_ITEMS * 3 + PAGES * VOTES_PER_PAGE
    assert SyncCursor.objects.get(workflow=workflow).last_id == pull.next_id

    # Every item holds what the audit trail's last decision on it says, and the curator's
    # thread recorded exactly the audit rows that exist.
    assert Review.objects.filter(batch__isnull=True).count() == len(decided)
    for item in Item.objects.filter(pk__in=pks):
        last = Review.objects.filter(item=item).exclude(action="skip").order_by("-pk").first()
        expected = (last.state_after, last.after) if last else ("unreviewed", [])
        assert (item.review_state, item.curated_concepts) == expected, item.external_id
    # Bulk accepts found work: the test exercised the many-row lock, not only single rows.
    assert Review.objects.filter(batch__isnull=False, item_id__in=bulk).exists()
    # The aggregation kept writing crowd labels of items a curator had already decided.
    decided_at = min(r.created_at for r in Review.objects.all())
    assert AggregatedLabel.objects.filter(item_id__in=pks, updated_at__gt=decided_at).exists()
