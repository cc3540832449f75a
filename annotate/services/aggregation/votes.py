"""Reading the votes: counted classifications as vote arrays, and the labels known beforehand
(curator decisions, gold-standard classifications) that anchor them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from annotate.models import Classification, Concept, Item, Subject, Volunteer
from annotate.services.aggregation.id_filters import queries_scoped
from annotate.services.classifications import counters
from annotate.services.zooniverse.workflows import workflow_versions_asked
from ml import aggregation


@dataclass
class VoteData:
    """Counted votes as arrays, with the database ids behind each index."""

    votes: aggregation.VoteMatrix
    item_ids: np.ndarray  # (n_items,) Item.pk of each item index
    volunteer_ids: np.ndarray  # (n_workers,) Volunteer.pk of each worker index
    concept_ids: np.ndarray  # (n_concepts,) Concept.pk of each concept column
    anonymous: np.ndarray  # (n_workers,) bool, logged-out volunteers
    gold: np.ndarray  # (n_votes,) bool, gold-standard classifications


#: ``annotate.services.classifications.counters``, which counts them per item. The whole
#: definition is ``counters.votes_filter()``: it also leaves out volunteers excluded from
#: aggregation.
VOTES = counters.VOTES


def votes_load(*, concepts: list[Concept], item_ids: np.ndarray | None = None) -> VoteData:
    """Read the counted classifications into arrays: no Python work per concept tick.

    A vote is only what the volunteer was asked: a concept that the classification's workflow
    version did not offer is no vote on it (``VoteMatrix.asked``). The answer maps are read once
    per (workflow, version) pair. A volunteer excluded from aggregation (``Volunteer.excluded``)
    casts no vote at all, gold-standard classifications included (``counters.votes_filter``).

    Args:
        concepts: the active vocabulary, in column order.
        item_ids: read only these items' votes (None: every item's).
    """
    counted = (
        Classification.objects.filter(counters.votes_filter(), item__isnull=False)
        .exclude(item__review_state=Item.ReviewState.REJECTED)
        .exclude(subject__upstream_state=Subject.Upstream.DELETED)
        .values_list(
            "item_id", "volunteer_id", "concept_ids", "gold_standard", "workflow_id",
            "workflow_version",
        )
        .order_by()
    )  # fmt: skip
    item_col: list[int] = []
    volunteer_col: list[int] = []
    gold_col: list[bool] = []
    version_col: list[int] = []
    versions: dict[tuple[int, str], int] = {}
    lengths: list[int] = []
    flat: list[int] = []
    for rows in queries_scoped(counted, Classification, "item_id", item_ids):
        for item_id, volunteer_id, ticked, gold, workflow_id, version in rows.iterator(
            chunk_size=20_000
        ):
            item_col.append(item_id)
            volunteer_col.append(volunteer_id)
            gold_col.append(gold)
            version_col.append(versions.setdefault((workflow_id, version), len(versions)))
            lengths.append(len(ticked))
            flat.extend(ticked)

    concept_pks = np.array([c.pk for c in concepts], dtype=np.int64)
    item_pks, item_idx = np.unique(np.asarray(item_col, dtype=np.int64), return_inverse=True)
    volunteer_pks, worker_idx = np.unique(
        np.asarray(volunteer_col, dtype=np.int64), return_inverse=True
    )
    n_votes = len(item_col)
    labels = np.zeros((n_votes, len(concepts)), dtype=np.uint8)
    if flat:
        # Map concept pks to columns through a lookup table; inactive concepts map to -1.
        lookup = np.full(max(int(np.max(flat)), int(concept_pks.max(initial=0))) + 1, -1)
        lookup[concept_pks] = np.arange(len(concepts))
        columns = lookup[np.asarray(flat, dtype=np.int64)]
        vote_of_tick = np.repeat(np.arange(n_votes), np.asarray(lengths, dtype=np.int64))
        keep = columns >= 0
        labels[vote_of_tick[keep], columns[keep]] = 1
    offered = workflow_versions_asked(list(versions), concepts)
    asked = None if offered.all() else offered[np.asarray(version_col, dtype=np.int64)]

    # A full pass reads the whole table and filters in numpy: an IN list of 100,000 ids is too
    # long for SQLite, and most volunteers are in it anyway.
    anonymous = Volunteer.objects.filter(logged_in=False).values_list("pk", flat=True)
    if item_ids is None:
        anonymous_pks = list(anonymous)
    else:
        anonymous_pks = [
            pk
            for query in queries_scoped(anonymous, Volunteer, "id", volunteer_pks)
            for pk in query
        ]
    return VoteData(
        votes=aggregation.VoteMatrix.from_arrays(
            item_idx,
            worker_idx,
            labels,
            n_items=len(item_pks),
            n_workers=len(volunteer_pks),
            asked=asked,
        ),
        item_ids=item_pks,
        volunteer_ids=volunteer_pks,
        concept_ids=concept_pks,
        anonymous=np.isin(volunteer_pks, np.asarray(anonymous_pks, dtype=np.int64)),
        gold=np.asarray(gold_col, dtype=bool),
    )


def anchors_build(
    data: VoteData, *, concepts: list[Concept], item_ids: np.ndarray | None = None
) -> np.ndarray:
    """Known labels: curator decisions first, then gold-standard classifications.

    ``item_ids`` limits the curator decisions read to those items (an incremental pass).
    Returns a dense ``(n_items, n_concepts)`` array, 0/1 where known and NaN elsewhere.
    """
    n_items, n_concepts = data.votes.n_items, len(concepts)
    anchors = np.full((n_items, n_concepts), np.nan)
    if data.gold.any():
        gold_items = data.votes.item_idx[data.gold]
        if data.votes.asked is None:
            anchors[gold_items] = data.votes.labels[data.gold]
        else:
            # A gold classification anchors only the concepts its version asked about.
            rows, columns = np.nonzero(data.votes.asked[data.gold])
            anchors[gold_items[rows], columns] = data.votes.labels[data.gold][rows, columns]
    position = {pk: i for i, pk in enumerate(data.item_ids.tolist())}
    column = {c.key: j for j, c in enumerate(concepts)}
    curated = Item.objects.curated().values_list("pk", "curated_concepts")
    # Of an incremental pass's items, only those with counted votes can be anchored.
    scope = None if item_ids is None else data.item_ids
    for query in queries_scoped(curated, Item, "id", scope):
        for item_pk, keys in query.iterator(chunk_size=5000):
            row = position.get(item_pk)
            if row is None:  # reviewed, but no counted vote: nothing to anchor
                continue
            anchors[row] = 0.0
            for key in keys:
                if key in column:
                    anchors[row, column[key]] = 1.0
    return anchors
