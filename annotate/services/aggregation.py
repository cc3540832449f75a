"""From raw votes to clean labels: the Django side of ``ml.aggregation``.

Reads every counted classification (the earliest per volunteer and subject, mapped to an item),
builds the vote arrays ``ml.aggregation`` takes, anchors curator decisions and gold-standard
classifications, runs the chosen method, and writes the results back in bulk: one aggregated label
per item x concept, one skill per volunteer x concept, and each item's consensus, uncertainty and
disagreement with its prior labels. Running it twice on the same votes writes the same numbers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from annotate.models import (
    AggregatedLabel,
    Classification,
    Concept,
    Item,
    PriorLabel,
    Subject,
    Volunteer,
    VolunteerSkill,
)
from annotate.services.bulk_write import rows_update, rows_upsert
from ml import aggregation

logger = logging.getLogger(__name__)

CURATED_STATES = (Item.ReviewState.ACCEPTED, Item.ReviewState.EDITED)


@dataclass
class VoteData:
    """Counted votes as arrays, with the database ids behind each index."""

    votes: aggregation.VoteMatrix
    item_ids: np.ndarray  # (n_items,) Item.pk of each item index
    volunteer_ids: np.ndarray  # (n_workers,) Volunteer.pk of each worker index
    concept_ids: np.ndarray  # (n_concepts,) Concept.pk of each concept column
    anonymous: np.ndarray  # (n_workers,) bool, logged-out volunteers
    gold: np.ndarray  # (n_votes,) bool, gold-standard classifications


@dataclass
class AggregationSummary:
    method: str
    n_classifications: int
    n_items: int
    n_volunteers: int
    n_concepts: int
    iterations: int
    converged: bool
    confident_items: int
    uncertain_items: int
    contradicting_prior: int
    retire_subject_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.method}: {self.n_classifications} classifications of {self.n_items} items by "
            f"{self.n_volunteers} volunteers; {self.confident_items} confident, "
            f"{self.uncertain_items} uncertain, {self.contradicting_prior} contradict their prior; "
            f"{len(self.retire_subject_ids)} subjects to retire "
            f"({self.iterations} iterations, {self.seconds:.1f} s)"
        )


def votes_load(*, concepts: list[Concept]) -> VoteData:
    """Read the counted classifications into arrays: no Python work per concept tick."""
    rows = (
        Classification.objects.filter(item__isnull=False, is_duplicate=False)
        .exclude(item__review_state=Item.ReviewState.REJECTED)
        .exclude(subject__upstream_state=Subject.Upstream.DELETED)
        .values_list("item_id", "volunteer_id", "concept_ids", "gold_standard")
        .order_by()
    )
    item_col: list[int] = []
    volunteer_col: list[int] = []
    gold_col: list[bool] = []
    lengths: list[int] = []
    flat: list[int] = []
    for item_id, volunteer_id, ticked, gold in rows.iterator(chunk_size=20_000):
        item_col.append(item_id)
        volunteer_col.append(volunteer_id)
        gold_col.append(gold)
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

    # Whole-table reads filtered in numpy: an IN list of 100,000 ids is too long for SQLite.
    anonymous_pks = list(Volunteer.objects.filter(logged_in=False).values_list("pk", flat=True))
    return VoteData(
        votes=aggregation.VoteMatrix.from_arrays(
            item_idx, worker_idx, labels, n_items=len(item_pks), n_workers=len(volunteer_pks)
        ),
        item_ids=item_pks,
        volunteer_ids=volunteer_pks,
        concept_ids=concept_pks,
        anonymous=np.isin(volunteer_pks, np.asarray(anonymous_pks, dtype=np.int64)),
        gold=np.asarray(gold_col, dtype=bool),
    )


def anchors_build(data: VoteData, *, concepts: list[Concept]) -> np.ndarray:
    """Known labels: curator decisions first, then gold-standard classifications.

    Returns a dense ``(n_items, n_concepts)`` array, 0/1 where known and NaN elsewhere.
    """
    n_items, n_concepts = data.votes.n_items, len(concepts)
    anchors = np.full((n_items, n_concepts), np.nan)
    if data.gold.any():
        gold_items = data.votes.item_idx[data.gold]
        anchors[gold_items] = data.votes.labels[data.gold]
    position = {pk: i for i, pk in enumerate(data.item_ids.tolist())}
    column = {c.key: j for j, c in enumerate(concepts)}
    curated = Item.objects.filter(review_state__in=CURATED_STATES).values_list(
        "pk", "curated_concepts"
    )
    for item_pk, keys in curated.iterator(chunk_size=5000):
        row = position.get(item_pk)
        if row is None:  # reviewed, but no counted vote: nothing to anchor
            continue
        anchors[row] = 0.0
        for key in keys:
            if key in column:
                anchors[row, column[key]] = 1.0
    return anchors


def labels_aggregate(
    *,
    method: str | None = None,
    confidence: float | None = None,
    min_votes: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> AggregationSummary:
    """Aggregate every counted vote and store labels, skills and item states.

    Args:
        method: "dawid_skene" or "majority" (default: settings.AGGREGATION_METHOD).
        confidence: posterior confidence at which a concept is settled (RETIRE_CONFIDENCE).
        min_votes: classifications an item needs before it may retire (RETIRE_MIN_CLASSIFICATIONS).
        progress: called with a short description of each step.
    """
    started = time.monotonic()
    method = method or settings.AGGREGATION_METHOD
    confidence = confidence if confidence is not None else settings.RETIRE_CONFIDENCE
    min_votes = min_votes if min_votes is not None else settings.RETIRE_MIN_CLASSIFICATIONS
    say = progress or (lambda text: None)

    concepts = list(Concept.objects.filter(active=True).order_by("position", "key"))
    say("reading votes")
    data = votes_load(concepts=concepts)
    anchors = anchors_build(data, concepts=concepts)
    say(f"aggregating {data.votes.n_votes} classifications ({method})")
    options = {"pool_workers": data.anonymous} if method == "dawid_skene" else {}
    result = aggregation.aggregate(method, data.votes, anchors, **options)

    decision = aggregation.retirement_decide(
        result.posteriors,
        confidence=confidence,
        vote_counts=result.item_votes,
        min_votes=min_votes,
    )
    say("writing labels")
    contradicts = _labels_write(
        data, result, concepts=concepts, method=method, settled=decision.settled
    )
    _skills_write(data, result)

    retire_items = data.item_ids[decision.retire]
    open_subjects = np.array(
        Subject.objects.filter(
            item__isnull=False, retired_at__isnull=True, upstream_state=Subject.Upstream.ACTIVE
        ).values_list("zooniverse_id", "item_id"),
        dtype=np.int64,
    ).reshape(-1, 2)
    retire_subjects = open_subjects[np.isin(open_subjects[:, 1], retire_items), 0].tolist()
    summary = AggregationSummary(
        method=method,
        n_classifications=data.votes.n_votes,
        n_items=data.votes.n_items,
        n_volunteers=data.votes.n_workers,
        n_concepts=len(concepts),
        iterations=result.iterations,
        converged=result.converged,
        confident_items=int(decision.settled.sum()),
        uncertain_items=int((~decision.settled).sum()),
        contradicting_prior=contradicts,
        retire_subject_ids=retire_subjects,
        seconds=time.monotonic() - started,
    )
    logger.info("aggregate %s", summary.summary())
    return summary


def _labels_write(
    data: VoteData,
    result: aggregation.AggregationResult,
    *,
    concepts: list[Concept],
    method: str,
    settled: np.ndarray,
) -> int:
    """Upsert item x concept labels and the items' derived state; return how many contradict."""
    votes = data.votes
    n_items, n_concepts = votes.n_items, len(concepts)
    votes_for = np.zeros((n_items, n_concepts), dtype=np.int64)
    np.add.at(votes_for, votes.item_idx, votes.labels)
    votes_against = np.asarray(result.item_votes, dtype=np.int64)[:, None] - votes_for
    posteriors = np.round(result.posteriors, 6)
    # 1 at a coin toss, 0 when certain: the curator's sense of "how unsure is the crowd".
    uncertainty = (1.0 - np.abs(2.0 * posteriors - 1.0)).max(axis=1, initial=0.0)

    prior = np.zeros((n_items, n_concepts), dtype=bool)
    has_prior = np.zeros(n_items, dtype=bool)
    row_of = {pk: i for i, pk in enumerate(data.item_ids.tolist())}
    col_of = {pk: j for j, pk in enumerate(data.concept_ids.tolist())}
    for item_pk, concept_pk in PriorLabel.objects.values_list("item_id", "concept_id").iterator(
        chunk_size=20_000
    ):
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
    with transaction.atomic():
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
        AggregatedLabel.objects.exclude(concept_id__in=concept_pks).delete()
        counted = Classification.objects.filter(is_duplicate=False, item__isnull=False)
        # NOT EXISTS, not NOT IN: PostgreSQL turns NOT IN over a million-row subquery into a
        # nested loop once it no longer fits in work_mem.
        has_votes = Exists(counted.filter(item_id=OuterRef("item_id")))
        AggregatedLabel.objects.filter(~has_votes).delete()

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
        Item.objects.filter(~Exists(counted.filter(item_id=OuterRef("pk")))).exclude(
            Q(consensus=Item.Consensus.NONE) & Q(uncertainty=0) & Q(contradicts_prior=False)
        ).update(consensus=Item.Consensus.NONE, uncertainty=0.0, contradicts_prior=False)
    return int(contradicts.sum())


def _skills_write(data: VoteData, result: aggregation.AggregationResult) -> None:
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


def labels_aggregate_and_retire(
    *,
    method: str | None = None,
    client=None,
    progress: Callable[[str], None] | None = None,
) -> tuple[AggregationSummary, int]:
    """Aggregate, then retire on Zooniverse every subject whose item is now settled.

    Returns the summary and the number of subjects retired. Uncertain items keep collecting
    votes; retiring twice is harmless (Panoptes and the local mirror both ignore it).
    """
    from annotate.services.zooniverse_sync import subjects_retire

    summary = labels_aggregate(method=method, progress=progress)
    retired = 0
    if summary.retire_subject_ids:
        subjects = Subject.objects.filter(
            zooniverse_id__in=summary.retire_subject_ids
        ).select_related("round__workflow")
        by_workflow: dict[int, list[Subject]] = {}
        for subject in subjects:
            workflow = subject.round.workflow if subject.round and subject.round.workflow else None
            if workflow is not None:
                by_workflow.setdefault(workflow.pk, []).append(subject)
        for chosen in by_workflow.values():
            retired += subjects_retire(
                workflow=chosen[0].round.workflow,
                subjects=chosen,
                reason="consensus",
                client=client,
            )
    return summary, retired
