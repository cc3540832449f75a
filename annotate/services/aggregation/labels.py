"""Writing a pass's results: item x concept labels and the items' derived state, and (full pass) the
volunteers' skills."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from annotate.models import (
    AggregatedLabel,
    Classification,
    Concept,
    Item,
    PriorLabel,
    Subject,
    VolunteerSkill,
)
from annotate.services.aggregation.id_filters import id_conditions, queries_scoped
from annotate.services.aggregation.votes import VoteData
from annotate.services.bulk_write import rows_update, rows_upsert
from annotate.services.classifications import counters
from ml import aggregation

# Logged under the package's name, as the whole pass logs.
logger = logging.getLogger(__package__)


def _labels_positive_read(scope: np.ndarray | None) -> np.ndarray:
    """Stored labels as ``(n, 3)`` rows of (item pk, concept pk, posterior > 0.5).

    A raw cursor read in blocks: two million labels as model rows or one list of tuples would
    cost seconds and hundreds of MB.
    """
    table = connection.ops.quote_name(AggregatedLabel._meta.db_table)
    conditions: list[tuple[str, list[Any]]] = [("1 = 1", [])]
    if scope is not None:
        conditions = list(id_conditions(AggregatedLabel, "item_id", scope))
    blocks: list[np.ndarray] = []
    with connection.cursor() as cursor:
        for condition, params in conditions:
            cursor.execute(
                "SELECT item_id, concept_id, CASE WHEN posterior > 0.5 THEN 1 ELSE 0 END "
                f"FROM {table} WHERE {condition}",
                params,
            )
            while rows := cursor.fetchmany(100_000):
                blocks.append(np.array(rows, dtype=np.int64).reshape(-1, 3))
    return np.concatenate(blocks) if blocks else np.empty((0, 3), dtype=np.int64)


def _labels_changed(data: VoteData, posteriors: np.ndarray, stored: np.ndarray) -> int:
    """Labels about to be written that are new or on the other side of 0.5 than ``stored``."""
    n_items, n_concepts = posteriors.shape
    # -1: no stored label; 0 or 1: the stored side of 0.5.
    before = np.full((n_items, n_concepts), -1, dtype=np.int8)
    if len(stored) and n_items and n_concepts:
        rows = np.minimum(np.searchsorted(data.item_ids, stored[:, 0]), n_items - 1)
        order = np.argsort(data.concept_ids)
        found = np.minimum(np.searchsorted(data.concept_ids[order], stored[:, 1]), n_concepts - 1)
        cols = order[found]
        ours = (data.item_ids[rows] == stored[:, 0]) & (data.concept_ids[cols] == stored[:, 1])
        before[rows[ours], cols[ours]] = stored[ours, 2]
    return int((before != (posteriors > 0.5)).sum())


def labels_write(
    data: VoteData,
    result: aggregation.AggregationResult,
    *,
    concepts: list[Concept],
    method: str,
    settled: np.ndarray,
    scope: np.ndarray | None = None,
) -> tuple[int, int]:
    """Upsert item x concept labels and the items' derived state.

    ``scope`` (an incremental pass) limits every read, write and clean-up to those items.
    Returns how many items contradict their prior and how many labels changed side or are new.
    """
    votes = data.votes
    n_items, n_concepts = votes.n_items, len(concepts)
    # Only the votes asked about a concept count for or against it.
    votes_for = votes.positive_counts()
    votes_against = votes.asked_counts() - votes_for
    posteriors = np.round(result.posteriors, 6)
    # 1 at a coin toss, 0 when certain: the curator's sense of "how unsure is the crowd".
    uncertainty = (1.0 - np.abs(2.0 * posteriors - 1.0)).max(axis=1, initial=0.0)

    prior = np.zeros((n_items, n_concepts), dtype=bool)
    has_prior = np.zeros(n_items, dtype=bool)
    row_of = {pk: i for i, pk in enumerate(data.item_ids.tolist())}
    col_of = {pk: j for j, pk in enumerate(data.concept_ids.tolist())}
    prior_labels = PriorLabel.objects.values_list("item_id", "concept_id")
    for query in queries_scoped(
        prior_labels, PriorLabel, "item_id", None if scope is None else data.item_ids
    ):
        for item_pk, concept_pk in query.iterator(chunk_size=20_000):
            if item_pk in row_of and concept_pk in col_of:
                prior[row_of[item_pk], col_of[concept_pk]] = True
                has_prior[row_of[item_pk]] = True
    crowd = posteriors > 0.5
    confident = (posteriors >= settings.RETIRE_CONFIDENCE) | (
        posteriors <= 1 - settings.RETIRE_CONFIDENCE
    )
    # Only a confident crowd contradicts an enrichment; an item without priors has nothing to.
    contradicts = has_prior & ((crowd != prior) & confident).any(axis=1)

    now = timezone.now()
    concept_pks = data.concept_ids.tolist()
    # The same votes as votes_load's, so that an item whose only votes came from excluded
    # volunteers, or from subjects deleted upstream (B10), loses its labels and its consensus
    # like an item without votes.
    counted = Classification.objects.filter(counters.votes_filter(), item__isnull=False).exclude(
        subject__upstream_state=Subject.Upstream.DELETED
    )
    with transaction.atomic():
        changed = _labels_changed(data, posteriors, _labels_positive_read(scope))
        # Item-major, concept-minor: row k is item k // n_concepts, concept k % n_concepts.
        written = rows_upsert(
            model=AggregatedLabel,
            keys=["item_id", "concept_id"],
            columns={
                "item_id": np.repeat(data.item_ids, n_concepts),
                "concept_id": np.tile(data.concept_ids, n_items),
                "posterior": posteriors.ravel(),
                "votes_for": votes_for.ravel(),
                "votes_against": votes_against.ravel(),
            },
            constants={"method": method},
            touch={"updated_at": now},
        )
        logger.info("aggregate wrote %d of %d labels", written, n_items * n_concepts)
        # Labels of concepts no longer in the vocabulary, or of items with no counted vote left.
        # NOT EXISTS, not NOT IN: PostgreSQL turns NOT IN over a million-row subquery into a
        # nested loop once it no longer fits in work_mem.
        # Two statements, not one OR: the OR would keep PostgreSQL from the anti-join.
        has_votes = Exists(counted.filter(item_id=OuterRef("item_id")))
        every_label = AggregatedLabel.objects.all()
        for labels in queries_scoped(every_label, AggregatedLabel, "item_id", scope):
            labels.exclude(concept_id__in=concept_pks).delete()
            labels.filter(~has_votes).delete()

        consensus = np.where(settled, Item.Consensus.CONFIDENT, Item.Consensus.UNCERTAIN)
        rows_update(
            model=Item,
            columns={
                "id": data.item_ids,
                "consensus": consensus.astype(str),
                "uncertainty": np.round(uncertainty, 6),
                "contradicts_prior": contradicts,
            },
        )
        unvoted = Item.objects.filter(~Exists(counted.filter(item_id=OuterRef("pk")))).exclude(
            Q(consensus=Item.Consensus.NONE) & Q(uncertainty=0) & Q(contradicts_prior=False)
        )
        for subset in queries_scoped(unvoted, Item, "id", scope):
            subset.update(consensus=Item.Consensus.NONE, uncertainty=0.0, contradicts_prior=False)
    return int(contradicts.sum()), changed


def skills_write(data: VoteData, result: aggregation.AggregationResult) -> None:
    n_workers, n_concepts = len(data.volunteer_ids), len(data.concept_ids)
    with transaction.atomic():
        # Worker-major, concept-minor, like the (n_workers, n_concepts) result arrays.
        rows_upsert(
            model=VolunteerSkill,
            keys=["volunteer_id", "concept_id"],
            columns={
                "volunteer_id": np.repeat(data.volunteer_ids, n_concepts),
                "concept_id": np.tile(data.concept_ids, n_workers),
                "sensitivity": np.round(result.sensitivity, 6).ravel(),
                "specificity": np.round(result.specificity, 6).ravel(),
                "n_votes": np.asarray(result.worker_votes, dtype=np.int64).ravel(),
            },
            touch={"updated_at": timezone.now()},
        )
