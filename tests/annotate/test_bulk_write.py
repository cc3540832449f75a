"""Staged set-based writes: only changed rows are written, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from django.db import transaction

from annotate.models import AggregatedLabel, Item
from annotate.services.bulk_write import rows_update, rows_upsert

pytestmark = pytest.mark.django_db
OLD = datetime(2020, 1, 1, tzinfo=UTC)
NEW = datetime(2026, 1, 1, tzinfo=UTC)


def upsert(items, concept, posteriors, *, method="majority", touch=NEW) -> int:
    with transaction.atomic():
        return rows_upsert(
            model=AggregatedLabel,
            keys=["item_id", "concept_id"],
            columns={
                "item_id": np.array([i.pk for i in items]),
                "concept_id": np.full(len(items), concept.pk),
                "posterior": np.array(posteriors, dtype=float),
                "votes_for": np.arange(len(items)),
                "votes_against": np.zeros(len(items), dtype=np.int64),
            },
            constants={"method": method},
            touch={"updated_at": touch},
        )


def test_an_upsert_inserts_new_rows_and_rewrites_only_changed_ones(concepts):
    items = [Item.objects.create(external_id=f"i{n}") for n in range(3)]
    concept = concepts["map"]
    assert upsert(items, concept, [0.1, 0.2, 1 / 3], touch=OLD) == 3
    assert upsert(items, concept, [0.1, 0.25, 1 / 3]) == 1  # only the second changed
    rows = AggregatedLabel.objects.order_by("item_id").values_list("posterior", "updated_at")
    assert list(rows) == [(0.1, OLD), (0.25, NEW), (1 / 3, OLD)]  # floats round-trip exactly
    assert upsert(items, concept, [0.1, 0.25, 1 / 3], method="dawid_skene") == 3
    assert set(AggregatedLabel.objects.values_list("method", flat=True)) == {"dawid_skene"}


def test_an_update_changes_only_the_rows_that_differ_and_keeps_text_intact():
    items = [Item.objects.create(external_id=f"i{n}", title="same") for n in range(3)]
    awkward = 'tab\there\nnewline \\N back\\slash "quoted"'
    with transaction.atomic():
        changed = rows_update(
            model=Item,
            columns={
                "id": [i.pk for i in items],
                "title": ["same", awkward, "same"],
                "uncertainty": np.array([0.0, 0.0, 0.5]),
                "contradicts_prior": np.array([False, False, True]),
            },
        )
    assert changed == 2
    rows = Item.objects.order_by("pk").values_list("title", "uncertainty", "contradicts_prior")
    assert list(rows) == [("same", 0.0, False), (awkward, 0.0, False), ("same", 0.5, True)]


def test_nothing_to_write_is_fine(concepts):
    assert upsert([], concepts["map"], []) == 0
