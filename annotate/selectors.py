"""Reads for the curator's screens and the export: review queue, final labels, plot data.

The final label of an item is the contract the export, the training set and the review audit share:

- ``accepted`` or ``edited``: the curator's ``curated_concepts``;
- ``rejected``: no label at all, the item is left out of exports and training;
- otherwise the crowd's: every concept whose aggregated posterior is above 0.5.

Concept keys are always returned sorted, so the same label compares equal wherever it comes from.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from django.db.models import (
    Avg,
    Count,
    Exists,
    F,
    FloatField,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.functions import Cast, Floor, Least

from annotate.models import (
    AggregatedLabel,
    Concept,
    Item,
    PriorLabel,
    Review,
    VolunteerSkill,
    item_has_votes,
)

CROWD_THRESHOLD = 0.5
# SQLite allows 32766 bound parameters per statement; stay well below on every backend.
_ID_CHUNK = 10_000

QUEUE_STATES = ("unreviewed", "accepted", "edited", "rejected", "all")
_CURATED_STATES = (Item.ReviewState.ACCEPTED, Item.ReviewState.EDITED)


# --- model predictions (filled in by the training app) ------------------------------------------


def prediction_for_items(item_ids: Iterable[int]) -> dict[int, dict[str, float]]:
    """The active model's scores for these items: ``{item_id: {concept_key: score in [0, 1]}}``.

    Hook for the training app. The item screen shows a "model" column only when this returns
    something, so until a model version is active it returns ``{}``. Contract for whoever fills it:

    - one or two queries for any number of ids (the item screen calls it with one id, a list
      page may call it with a page of ids); never a query per item;
    - items without a prediction are simply absent; concepts without a score are absent too;
    - scores are probabilities (after the sigmoid), not logits, and not thresholded.
    """
    return {}


# --- final labels -------------------------------------------------------------------------------


def item_final_label(item: Item, *, crowd: Iterable[str] | None = None) -> list[str] | None:
    """One item's final label as sorted concept keys; ``None`` when a curator rejected it.

    ``crowd`` are the item's crowd keys when the caller already has them; otherwise one query.
    """
    if item.review_state in _CURATED_STATES:
        return sorted(item.curated_concepts or [])
    if item.review_state == Item.ReviewState.REJECTED:
        return None
    if crowd is None:
        crowd = AggregatedLabel.objects.filter(
            item_id=item.pk, posterior__gt=CROWD_THRESHOLD
        ).values_list("concept__key", flat=True)
    return sorted(crowd)


def item_final_labels(item_ids: Iterable[int] | QuerySet[Item]) -> dict[int, list[str]]:
    """Final labels of many items: ``{item_id: sorted concept keys}``; rejected items are absent.

    An item with no label above 0.5 maps to ``[]`` (a negative for every concept), which differs
    from a rejected item (absent: not part of the dataset). Ids of items that do not exist are
    absent as well.

    Two queries per 10,000 ids (the items' review fields, then the crowd's labels above 0.5 of the
    unreviewed ones); a queryset of items is used as a subquery, in two queries whatever its size.
    """
    if isinstance(item_ids, QuerySet):
        return _final_labels_chunk(item_ids.values("pk"))
    ids = list(item_ids)
    labels: dict[int, list[str]] = {}
    for start in range(0, len(ids), _ID_CHUNK):
        labels.update(_final_labels_chunk(ids[start : start + _ID_CHUNK]))
    return labels


def _final_labels_chunk(ids) -> dict[int, list[str]]:
    labels: dict[int, list[str]] = {}
    for pk, state, curated in Item.objects.filter(pk__in=ids).values_list(
        "pk", "review_state", "curated_concepts"
    ):
        if state in _CURATED_STATES:
            labels[pk] = sorted(curated or [])
        elif state != Item.ReviewState.REJECTED:
            labels[pk] = []
    crowd = (
        AggregatedLabel.objects.filter(item_id__in=ids, posterior__gt=CROWD_THRESHOLD)
        .exclude(item__review_state__in=[*_CURATED_STATES, Item.ReviewState.REJECTED])
        .values_list("item_id", "concept__key")
    )
    for pk, key in crowd:
        if pk in labels:
            labels[pk].append(key)
    for keys in labels.values():
        keys.sort()
    return labels


# --- review queue -------------------------------------------------------------------------------


def review_queue(
    *, concept: str | Concept | None = None, state: str = "unreviewed"
) -> QuerySet[Item]:
    """Items to review, the most in need first.

    Order: items with votes before items without; among them items whose confident crowd label
    contradicts a prior enrichment; then the most uncertain crowd; then by id, so that the order is
    total and "next item" is well defined (see ``review_queue_neighbours``).

    ``concept`` (a key or a Concept) keeps the items where that concept is in play: the crowd
    ticked it at least once, its posterior is above 0.5, or a prior enrichment claims it.
    ``state`` is a review state or ``"all"``; anything else is a ValueError (an allowlist, since it
    comes from the query string).
    """
    if state not in QUEUE_STATES:
        raise ValueError(f"unknown review state {state!r}; use one of {', '.join(QUEUE_STATES)}")
    # The index "item_review_queue" holds this order per review state.
    items = Item.objects.annotate(has_votes=item_has_votes())
    if state != "all":
        items = items.filter(review_state=state)
    if concept is not None:
        concept_pk = concept.pk if isinstance(concept, Concept) else _concept_pk(concept)
        crowd = AggregatedLabel.objects.filter(
            item_id=OuterRef("pk"), concept_id=concept_pk
        ).filter(Q(votes_for__gt=0) | Q(posterior__gt=CROWD_THRESHOLD))
        prior = PriorLabel.objects.filter(item_id=OuterRef("pk"), concept_id=concept_pk)
        items = items.filter(Exists(crowd) | Exists(prior))
    return items.order_by("-has_votes", "-contradicts_prior", "-uncertainty", "id")


def _concept_pk(key: str) -> int:
    pk = Concept.objects.filter(key=key).values_list("pk", flat=True).first()
    if pk is None:
        raise ValueError(f"unknown concept {key!r}")
    return pk


def review_queue_neighbours(
    *, item: Item, concept: str | Concept | None = None, state: str = "unreviewed"
) -> tuple[int | None, int | None]:
    """Ids of the items before and after ``item`` in the queue order, ``None`` at either end.

    Works by the item's sort key, not its position, so it still answers after the item itself has
    left the queue (a decision moves it out of "unreviewed"): the next item is the one that would
    have followed it.

    The queue sorts by (has_votes desc, contradicts_prior desc, uncertainty desc, id asc). The
    neighbour is looked for tier by tier, from the closest: the same first three keys, then the
    same first two, then the same first one, then none. Each tier is an equality on a prefix of
    the queue index and a range on the next key, a few index entries to read; one OR of the four
    would walk the index from one end to the item (50 ms at 100,000 items). Usually one query
    per direction, at most four.
    """
    queue = review_queue(concept=concept, state=state)
    hv, cp, u = (1 if item.n_classifications > 0 else 0), item.contradicts_prior, item.uncertainty
    # Booleans compared by equality to "the other value" rather than with < and >, which backends
    # differ on; a tier that cannot exist (nothing sorts after hv=0) is left out.
    after = [
        (Q(has_votes=hv, contradicts_prior=cp, uncertainty=u, id__gt=item.pk), ("id",)),
        (Q(has_votes=hv, contradicts_prior=cp, uncertainty__lt=u), ("-uncertainty", "id")),
        (Q(has_votes=hv, contradicts_prior=False), ("-uncertainty", "id")) if cp else None,
        (Q(has_votes=0), ("-contradicts_prior", "-uncertainty", "id")) if hv else None,
    ]
    before = [
        (Q(has_votes=hv, contradicts_prior=cp, uncertainty=u, id__lt=item.pk), ("-id",)),
        (Q(has_votes=hv, contradicts_prior=cp, uncertainty__gt=u), ("uncertainty", "-id")),
        None if cp else (Q(has_votes=hv, contradicts_prior=True), ("uncertainty", "-id")),
        None if hv else (Q(has_votes=1), ("contradicts_prior", "uncertainty", "-id")),
    ]

    def first(tiers: list[tuple[Q, tuple[str, ...]] | None]) -> int | None:
        for tier in tiers:
            if tier is None:
                continue
            where, order = tier
            pk = queue.filter(where).order_by(*order).values_list("pk", flat=True).first()
            if pk is not None:
                return pk
        return None

    return first(before), first(after)


# --- item screen --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConceptRow:
    key: str
    label: str
    votes_for: int
    votes_against: int
    posterior: float | None  # None: the aggregation has not labelled this item x concept
    prior: bool
    model: float | None  # None: no prediction from an active model
    final: bool


@dataclass(frozen=True)
class ReviewEntry:
    created_at: datetime
    curator: str
    action: str
    before: list[str]
    after: list[str]
    comment: str


@dataclass(frozen=True)
class ItemReviewContext:
    item: Item
    rows: list[ConceptRow]
    final: list[str] | None  # None: rejected
    has_model: bool
    history: list[ReviewEntry] = field(default_factory=list)


def item_review_context(item: Item) -> ItemReviewContext:
    """What the curator sees for one item: per concept the crowd, the prior, the model, the label.

    Four queries (vocabulary, aggregated labels, prior labels, audit history) plus whatever the
    prediction hook costs. Concepts are the active vocabulary in its order, plus any inactive
    concept the item still has a crowd label or a curated key for, so nothing on record is hidden.
    """
    concepts = list(Concept.objects.values_list("pk", "key", "label", "active"))
    labels = {
        concept_pk: (posterior, votes_for, votes_against)
        for concept_pk, posterior, votes_for, votes_against in AggregatedLabel.objects.filter(
            item_id=item.pk
        ).values_list("concept_id", "posterior", "votes_for", "votes_against")
    }
    priors = set(PriorLabel.objects.filter(item_id=item.pk).values_list("concept_id", flat=True))
    key_of = {pk: key for pk, key, _label, _active in concepts}
    crowd = [key_of[pk] for pk, (p, _f, _a) in labels.items() if p > CROWD_THRESHOLD]
    final = item_final_label(item, crowd=crowd)
    final_set = set(final or [])
    scores = prediction_for_items([item.pk]).get(item.pk, {})

    rows = []
    for pk, key, label, active in concepts:
        if not active and pk not in labels and key not in final_set:
            continue
        posterior, votes_for, votes_against = labels.get(pk, (None, 0, 0))
        rows.append(
            ConceptRow(
                key=key,
                label=label,
                votes_for=votes_for,
                votes_against=votes_against,
                posterior=posterior,
                prior=pk in priors,
                model=scores.get(key),
                final=key in final_set,
            )
        )
    history = [
        ReviewEntry(
            created_at=created_at,
            curator=username,
            action=action,
            before=list(before or []),
            after=list(after or []),
            comment=comment,
        )
        for created_at, username, action, before, after, comment in Review.objects.filter(
            item_id=item.pk
        )
        .order_by("-created_at", "-id")
        .values_list("created_at", "curator__username", "action", "before", "after", "comment")
    ]
    return ItemReviewContext(
        item=item, rows=rows, final=final, has_model=bool(scores), history=history
    )


# --- plot data ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PosteriorHistogram:
    concept: str
    counts: np.ndarray  # shape (bins,), items per posterior bin in [0, 1]


def posterior_histograms(*, bins: int = 20) -> list[PosteriorHistogram]:
    """Per active concept, how many items fall in each posterior bin: one grouped query.

    The database bins and counts, so this stays a few hundred rows for millions of labels.
    """
    concepts = list(Concept.objects.filter(active=True).values_list("pk", "label"))
    counts = {pk: np.zeros(bins, dtype=np.int64) for pk, _label in concepts}
    # posterior 1.0 belongs to the last bin, not to a bin of its own.
    bin_expr = Least(
        Cast(Floor(F("posterior") * bins), IntegerField()),
        Value(bins - 1),
        output_field=IntegerField(),
    )
    rows = (
        AggregatedLabel.objects.filter(concept_id__in=list(counts))
        .annotate(bin=bin_expr)
        .values("concept_id", "bin")
        .annotate(n=Count("pk"))
        .values_list("concept_id", "bin", "n")
    )
    for concept_pk, bin_index, n in rows:
        counts[concept_pk][max(0, int(bin_index))] += n
    return [PosteriorHistogram(concept=label, counts=counts[pk]) for pk, label in concepts]


def item_vote_counts() -> tuple[np.ndarray, np.ndarray]:
    """(votes per item, number of items with that many votes), grouped in the database."""
    rows = np.array(
        Item.objects.values("n_classifications")
        .annotate(n=Count("pk"))
        .order_by("n_classifications")
        .values_list("n_classifications", "n"),
        dtype=np.int64,
    ).reshape(-1, 2)
    return rows[:, 0], rows[:, 1]


@dataclass(frozen=True)
class SkillPoints:
    sensitivity: np.ndarray
    specificity: np.ndarray
    votes: np.ndarray


def volunteer_skill_points() -> SkillPoints:
    """Each volunteer's sensitivity and specificity averaged over concepts, weighted by votes.

    One grouped query; volunteers with no vote on record get a plain mean.
    """
    rows = (
        VolunteerSkill.objects.values("volunteer_id")
        .annotate(
            votes=Sum("n_votes"),
            se_weighted=Sum(F("sensitivity") * F("n_votes"), output_field=FloatField()),
            sp_weighted=Sum(F("specificity") * F("n_votes"), output_field=FloatField()),
            se_mean=Avg("sensitivity"),
            sp_mean=Avg("specificity"),
        )
        .values_list("votes", "se_weighted", "sp_weighted", "se_mean", "sp_mean")
    )
    data = np.array(list(rows), dtype=np.float64).reshape(-1, 5)
    votes = data[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.where(votes > 0, data[:, 1] / votes, data[:, 3])
        sp = np.where(votes > 0, data[:, 2] / votes, data[:, 4])
    return SkillPoints(sensitivity=se, specificity=sp, votes=votes)
