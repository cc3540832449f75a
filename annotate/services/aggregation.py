"""From raw votes to clean labels: the Django side of ``ml.aggregation``.

Reads every counted classification (the earliest per volunteer and subject, mapped to an item),
builds the vote arrays ``ml.aggregation`` takes, anchors curator decisions and gold-standard
classifications, runs the chosen method, and writes the results back in bulk: one aggregated label
per item x concept, one skill per volunteer x concept, and each item's consensus, uncertainty and
disagreement with its prior labels. Running it twice on the same votes writes the same numbers.

A full pass also stores its crowd-level parameters (``AggregationState``). An incremental pass
(``item_ids``) reads only those items' votes, scores them with the two-coin E-step under the
stored volunteer skills and those parameters, and rewrites only those items' labels and states;
skills wait for the next full pass. Majority vote needs no parameters: an incremental pass
recomputes the items exactly.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import BooleanField, Exists, Model, OuterRef, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from annotate.models import (
    AggregatedLabel,
    AggregationState,
    Classification,
    Concept,
    Item,
    PriorLabel,
    Subject,
    Volunteer,
    VolunteerSkill,
    Workflow,
)
from annotate.services.bulk_write import rows_update, rows_upsert
from annotate.services.classifications import counters
from annotate.services.zooniverse.workflows import workflow_versions_asked
from annotate.signals import labels_aggregated
from ml import aggregation

logger = logging.getLogger(__name__)


# Passes kept in AggregationState (the latest full pass is always kept too): with a pull every
# five minutes, about eight hours of history.
STATES_KEPT = 100

# Ids per IN list where a backend has neither SQLite's json_each nor PostgreSQL's arrays.
_IN_CHUNK = 500


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
    # True for an incremental pass (only the items asked for; skills unchanged); False for a
    # full pass, also when an incremental one was asked for but fell back to a full one.
    incremental: bool = False
    # Item x concept labels written on the other side of 0.5 than before, plus labels new to the
    # table (labels deleted with an item's last vote are not counted).
    labels_changed: int = 0
    # Share of the item x concept labels written on the same side of 0.5 as the majority vote of
    # the same votes (1.0 when there are none): how often the method overrules the crowd.
    majority_agreement: float = 1.0

    def summary(self) -> str:
        kind = "incremental, " if self.incremental else ""
        return (
            f"{self.method}: {self.n_classifications} classifications of {self.n_items} items by "
            f"{self.n_volunteers} volunteers; {self.confident_items} confident, "
            f"{self.uncertain_items} uncertain, {self.contradicting_prior} contradict their prior; "
            f"{self.labels_changed} labels changed; "
            f"{self.majority_agreement:.1%} of labels agree with majority vote; "
            f"{len(self.retire_subject_ids)} subjects to retire "
            f"({kind}{self.iterations} iterations, {self.seconds:.1f} s)"
        )


def _majority_agreement(votes: aggregation.VoteMatrix, posteriors: np.ndarray) -> float:
    """Share of item x concept posteriors on the same side of 0.5 as the majority vote of
    ``votes`` (as stored: rounded to six decimals); 1.0 when there are none."""
    if not posteriors.size:
        return 1.0
    majority = aggregation.majority_vote(votes).labels
    return float((majority == (np.round(posteriors, 6) > 0.5)).mean())


def _id_conditions(model: type[Model], column: str, ids: np.ndarray) -> Iterator[tuple[str, list]]:
    """SQL conditions ``table.column IN ids``, as ``(sql, params)``, that together cover ``ids``.

    SQLite caps a statement's parameters (999 in Django's eyes) and binding thousands of values
    one by one costs more than the query, so the ids travel as ONE parameter: a JSON array read
    by ``json_each`` on SQLite, an array compared with ``= ANY`` on PostgreSQL. Other backends get
    IN lists of ``_IN_CHUNK`` ids. The column is qualified with its table, so the condition
    stays unambiguous in a query that joins another table with a column of the same name.
    """
    q = connection.ops.quote_name
    name = f"{q(model._meta.db_table)}.{q(column)}"
    values = [int(v) for v in ids]
    if connection.vendor == "sqlite":
        yield f"{name} IN (SELECT value FROM json_each(%s))", [json.dumps(values)]
    elif connection.vendor == "postgresql":
        yield f"{name} = ANY(%s)", [values]
    else:
        for start in range(0, len(values), _IN_CHUNK):
            chunk = values[start : start + _IN_CHUNK]
            yield f"{name} IN ({', '.join(['%s'] * len(chunk))})", chunk


def _id_filters(model: type[Model], column: str, ids: np.ndarray) -> Iterator[RawSQL]:
    """``_id_conditions`` as expressions for ``QuerySet.filter``."""
    for sql, params in _id_conditions(model, column, ids):
        yield RawSQL(sql, params, output_field=BooleanField())


def _scoped(query: Any, model: type[Model], column: str, scope: np.ndarray | None) -> list[Any]:
    """``query`` itself (no scope), or one query per id condition that covers ``scope``."""
    if scope is None:
        return [query]
    return [query.filter(f) for f in _id_filters(model, column, scope)]


#: The classifications that are votes (not repeats, task shown, answers known): defined once, in
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
    for rows in _scoped(counted, Classification, "item_id", item_ids):
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
            pk for query in _scoped(anonymous, Volunteer, "id", volunteer_pks) for pk in query
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
    curated = Item.objects.curated().values_list(
        "pk", "curated_concepts"
    )
    # Of an incremental pass's items, only those with counted votes can be anchored.
    scope = None if item_ids is None else data.item_ids
    for query in _scoped(curated, Item, "id", scope):
        for item_pk, keys in query.iterator(chunk_size=5000):
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
    item_ids: Collection[int] | None = None,
    method: str | None = None,
    confidence: float | None = None,
    min_votes: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> AggregationSummary:
    """Aggregate counted votes and store labels, item states and (full pass) skills.

    Args:
        item_ids: None for a full pass over every counted vote. Otherwise an incremental pass
            over these items only: their votes are scored under the stored volunteer skills
            and the crowd-level parameters of the last full pass (Dawid-Skene's E-step; majority
            vote is recomputed exactly), and only their labels and states are written; skills
            are not updated. Items without counted votes lose their labels, as in a full pass.
            Without stored parameters for ``method`` and the current vocabulary (no full pass
            yet, another method since, concepts added or retired), a full pass runs instead
            and the summary says so (``incremental=False``).
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
    scope: np.ndarray | None = None
    state: AggregationState | None = None
    if item_ids is not None:
        state = aggregation_state_for(method=method, concepts=concepts)
        if state is None:
            say("no stored parameters for this method and vocabulary: a full pass instead")
        else:
            scope = np.unique(np.fromiter((int(pk) for pk in item_ids), dtype=np.int64))

    say("reading votes" if scope is None else f"reading the votes of {len(scope)} items")
    data = votes_load(concepts=concepts, item_ids=scope)
    anchors = anchors_build(data, concepts=concepts, item_ids=scope)
    say(f"aggregating {data.votes.n_votes} classifications ({method})")
    if scope is not None and method == "dawid_skene":
        assert state is not None
        parameters = _parameters_load(data, state)
        result = aggregation.dawid_skene_binary_posteriors(
            data.votes, parameters, anchors, pool_workers=data.anonymous
        )
    else:
        options = {"pool_workers": data.anonymous} if method == "dawid_skene" else {}
        result = aggregation.aggregate(method, data.votes, anchors, **options)

    decision = aggregation.retirement_decide(
        result.posteriors,
        confidence=confidence,
        vote_counts=result.item_votes,
        min_votes=min_votes,
    )
    say("writing labels")
    contradicts, changed = _labels_write(
        data, result, concepts=concepts, method=method, settled=decision.settled, scope=scope
    )
    if scope is None:
        _skills_write(data, result)
    _state_record(
        method=method,
        concepts=concepts,
        result=result if scope is None else None,
        used=state,
        n_votes=data.votes.n_votes,
        n_items=data.votes.n_items,
        labels_changed=changed,
    )

    retire_items = data.item_ids[decision.retire]
    open_subjects = Subject.objects.filter(
        item__isnull=False, retired_at__isnull=True, upstream_state=Subject.Upstream.ACTIVE
    ).values_list("zooniverse_id", "item_id")
    queries = _scoped(open_subjects, Subject, "item_id", None if scope is None else retire_items)
    subject_items = np.array([row for query in queries for row in query], dtype=np.int64)
    subject_items = subject_items.reshape(-1, 2)
    retire_subjects = subject_items[np.isin(subject_items[:, 1], retire_items), 0].tolist()
    agreement = _majority_agreement(data.votes, result.posteriors)
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
        incremental=scope is not None,
        labels_changed=changed,
        majority_agreement=agreement,
    )
    logger.info("aggregate %s", summary.summary())
    # Whoever keeps flags derived from the crowd's labels (the model-vs-crowd conflict) refreshes
    # them: the items of an incremental pass, or every item after a full one.
    labels_aggregated.send(
        sender=AggregatedLabel, item_ids=None if scope is None else scope.tolist()
    )
    return summary


def aggregation_state_for(*, method: str, concepts: list[Concept]) -> AggregationState | None:
    """The parameters an incremental pass of ``method`` can start from, or None.

    The latest pass must be of the same method (after a full pass of another method the labels
    are that method's), and its parameters must cover exactly the active vocabulary.
    """
    state = AggregationState.objects.order_by("-created_at", "-id").first()
    if state is None or state.method != method:
        return None
    keys = {str(c.pk) for c in concepts}
    needed = [state.priors]
    if method == "dawid_skene":
        needed += [state.crowd_sensitivity, state.crowd_specificity]
    if any(set(values) != keys for values in needed):
        return None
    return state


def _parameters_load(data: VoteData, state: AggregationState) -> aggregation.TwoCoinParameters:
    """The stored skills of ``data``'s volunteers (NaN where none) and the crowd parameters."""
    n_workers, n_concepts = len(data.volunteer_ids), len(data.concept_ids)
    sensitivity = np.full((n_workers, n_concepts), np.nan)
    specificity = np.full((n_workers, n_concepts), np.nan)
    skills = VolunteerSkill.objects.filter(concept_id__in=data.concept_ids.tolist()).values_list(
        "volunteer_id", "concept_id", "sensitivity", "specificity"
    )
    rows = [
        row
        for query in _scoped(skills, VolunteerSkill, "volunteer_id", data.volunteer_ids)
        for row in query.iterator(chunk_size=20_000)
    ]
    if rows:
        volunteer_pk, concept_pk = np.array([r[:2] for r in rows], dtype=np.int64).T
        values = np.array([r[2:] for r in rows], dtype=np.float64)
        # Both id arrays map to positions by sorted search; the query returns only their members.
        i = np.searchsorted(data.volunteer_ids, volunteer_pk)
        order = np.argsort(data.concept_ids)
        j = order[np.searchsorted(data.concept_ids[order], concept_pk)]
        sensitivity[i, j], specificity[i, j] = values[:, 0], values[:, 1]

    def per_concept(values: dict[str, float]) -> np.ndarray:
        return np.array([values[str(pk)] for pk in data.concept_ids.tolist()], dtype=np.float64)

    pooled = bool(state.pooled_sensitivity) and bool(state.pooled_specificity)
    return aggregation.TwoCoinParameters(
        sensitivity=sensitivity,
        specificity=specificity,
        priors=per_concept(state.priors),
        crowd_sensitivity=per_concept(state.crowd_sensitivity),
        crowd_specificity=per_concept(state.crowd_specificity),
        pooled_sensitivity=per_concept(state.pooled_sensitivity) if pooled else None,
        pooled_specificity=per_concept(state.pooled_specificity) if pooled else None,
    )


def _state_record(
    *,
    method: str,
    concepts: list[Concept],
    result: aggregation.AggregationResult | None,
    used: AggregationState | None,
    n_votes: int,
    n_items: int,
    labels_changed: int,
) -> None:
    """Store a full pass's crowd parameters (``result``), or the ones an incremental pass used."""
    keys = [str(c.pk) for c in concepts]

    def by_concept(values: Any) -> dict[str, float]:
        return {} if values is None else dict(zip(keys, np.asarray(values).tolist(), strict=True))

    if result is not None:
        # Every pooled volunteer carries the same pooled skill; the first one's will do.
        pooled = np.flatnonzero(result.pooled)[:1]
        state = AggregationState(
            method=method,
            full_pass=True,
            priors=by_concept(result.priors),
            crowd_sensitivity=by_concept(result.crowd_sensitivity),
            crowd_specificity=by_concept(result.crowd_specificity),
            pooled_sensitivity=by_concept(result.sensitivity[pooled[0]] if pooled.size else None),
            pooled_specificity=by_concept(result.specificity[pooled[0]] if pooled.size else None),
        )
    else:
        assert used is not None, "an incremental pass records the parameters it used"
        state = AggregationState(
            method=method,
            full_pass=False,
            priors=used.priors,
            crowd_sensitivity=used.crowd_sensitivity,
            crowd_specificity=used.crowd_specificity,
            pooled_sensitivity=used.pooled_sensitivity,
            pooled_specificity=used.pooled_specificity,
        )
    state.n_votes, state.n_items, state.labels_changed = n_votes, n_items, labels_changed
    with transaction.atomic():
        state.save()
        newest = AggregationState.objects.order_by("-created_at", "-id")
        kept = list(newest.values_list("pk", flat=True)[:STATES_KEPT])
        kept += list(newest.filter(full_pass=True).values_list("pk", flat=True)[:1])
        AggregationState.objects.exclude(pk__in=kept).delete()


def _labels_positive_read(scope: np.ndarray | None) -> np.ndarray:
    """Stored labels as ``(n, 3)`` rows of (item pk, concept pk, posterior > 0.5).

    A raw cursor read in blocks: two million labels as model rows or one list of tuples would
    cost seconds and hundreds of MB.
    """
    table = connection.ops.quote_name(AggregatedLabel._meta.db_table)
    conditions: list[tuple[str, list[Any]]] = [("1 = 1", [])]
    if scope is not None:
        conditions = list(_id_conditions(AggregatedLabel, "item_id", scope))
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


def _labels_write(
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
    for query in _scoped(
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
        for labels in _scoped(AggregatedLabel.objects.all(), AggregatedLabel, "item_id", scope):
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
        for subset in _scoped(unvoted, Item, "id", scope):
            subset.update(consensus=Item.Consensus.NONE, uncertainty=0.0, contradicts_prior=False)
    return int(contradicts.sum()), changed


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
    item_ids: Collection[int] | None = None,
    method: str | None = None,
    client=None,
    progress: Callable[[str], None] | None = None,
) -> tuple[AggregationSummary, int]:
    """Aggregate (all items, or incrementally ``item_ids``), then retire on Zooniverse every
    subject whose item is now settled.

    Returns the summary and the number of subjects retired. Uncertain items keep collecting
    votes; retiring twice is harmless (Panoptes and the local mirror both ignore it).
    """
    from annotate.services.zooniverse.retirement import subjects_retire

    summary = labels_aggregate(item_ids=item_ids, method=method, progress=progress)
    retired = 0
    if summary.retire_subject_ids:
        subjects = Subject.objects.filter(
            zooniverse_id__in=summary.retire_subject_ids
        ).select_related("round__workflow")
        by_workflow: dict[int, tuple[Workflow, list[Subject]]] = {}
        for subject in subjects:
            workflow = subject.round.workflow if subject.round and subject.round.workflow else None
            if workflow is not None:
                by_workflow.setdefault(workflow.pk, (workflow, []))[1].append(subject)
        for first_workflow, chosen in by_workflow.values():
            retired += subjects_retire(
                workflow=first_workflow,
                subjects=chosen,
                reason="consensus",
                client=client,
            )
    return summary, retired
