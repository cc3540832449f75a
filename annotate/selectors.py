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
    Max,
    OuterRef,
    Q,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.functions import Cast, Floor, Least

from annotate.models import (
    AggregatedLabel,
    Classification,
    Concept,
    Item,
    PriorLabel,
    Review,
    RoundPick,
    Subject,
    VolunteerSkill,
    item_has_votes,
    item_is_uncertain,
)

CROWD_THRESHOLD = 0.5
# SQLite allows 32766 bound parameters per statement; stay well below on every backend.
_ID_CHUNK = 10_000

QUEUE_STATES = ("unreviewed", "accepted", "edited", "rejected", "all")


# --- final labels -------------------------------------------------------------------------------


def item_final_label(item: Item, *, crowd: Iterable[str] | None = None) -> list[str] | None:
    """One item's final label as sorted concept keys; ``None`` when a curator rejected it.

    ``crowd`` are the item's crowd keys when the caller already has them; otherwise one query.
    """
    if item.review_state in Item.ReviewState.CURATED:
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
        if state in Item.ReviewState.CURATED:
            labels[pk] = sorted(curated or [])
        elif state != Item.ReviewState.REJECTED:
            labels[pk] = []
    crowd = (
        AggregatedLabel.objects.filter(item_id__in=ids, posterior__gt=CROWD_THRESHOLD)
        .exclude(item__review_state__in=Item.ReviewState.DECIDED)
        .values_list("item_id", "concept__key")
    )
    for pk, key in crowd:
        if pk in labels:
            labels[pk].append(key)
    for keys in labels.values():
        keys.sort()
    return labels


# --- review queue -------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueFilters:
    """What the review queue shows: every field comes from the query string, checked here.

    - ``state``: a review state or ``"all"``.
    - ``concept``: a concept key; the items where it is in play (the crowd ticked it at least
      once, its posterior is above 0.5, or a prior enrichment claims it).
    - ``consensus``: "none", "uncertain" or "confident" (``Item.Consensus``).
    - ``flag``: "model" (the model confidently disagrees with a confident crowd), "prior" (a
      confident crowd disagrees with the prior enrichment) or "either".
    - ``round``: a round's number; the items it picked or whose subjects it holds.
    - ``volunteer``: a volunteer's primary key; the items they classified.
    - ``votes``: "with" (the default: items nobody has voted on are hidden), "without" or
      "all". Ignored when ``consensus`` is given, which says it already.
    """

    state: str = "unreviewed"
    concept: str | None = None
    consensus: str | None = None
    flag: str | None = None
    round: int | None = None
    volunteer: int | None = None
    votes: str = "with"

    def __post_init__(self) -> None:
        allowed = {
            "state": QUEUE_STATES,
            "consensus": (None, *Item.Consensus.values),
            "flag": (None, *QUEUE_FLAGS),
            "votes": QUEUE_VOTES,
        }
        for name, values in allowed.items():
            value = getattr(self, name)
            if value not in values:
                shown = ", ".join(str(v) for v in values if v is not None)
                raise ValueError(f"unknown {name} {value!r}; use one of {shown}")


QUEUE_FLAGS = ("model", "prior", "either")
QUEUE_VOTES = ("with", "without", "all")

#: The queue's sort keys, most significant first, and how each sorts: "flag" for a 0/1 key
#: sorted descending, "desc" for a number sorted descending, "asc" for the id.
_QUEUE_ORDER = (
    ("has_votes", "flag"),
    ("is_uncertain", "flag"),
    ("conflicts_model", "flag"),
    ("contradicts_prior", "flag"),
    ("uncertainty", "desc"),
    ("id", "asc"),
)


def review_queue(filters: QueueFilters | None = None, **fields) -> QuerySet[Item]:
    """Items to review, the most in need first.

    Order: items with votes first; then the undecided crowd (consensus "uncertain"); then items
    where the active model confidently disagrees with a confident crowd; then a confident crowd
    against a prior enrichment; then the most uncertain; then by id, so the order is total and
    "next item" is well defined (see ``review_queue_neighbours``). The index
    "item_review_queue" holds this order per review state.

    Takes a :class:`QueueFilters` or its fields as keywords (``review_queue(state="all")``);
    an unknown value of any of them is a ValueError, as is an unknown concept key.
    """
    filters = filters or QueueFilters(**fields)
    items = Item.objects.annotate(has_votes=item_has_votes(), is_uncertain=item_is_uncertain())
    if filters.state != "all":
        items = items.filter(review_state=filters.state)
    if filters.consensus is not None:
        items = items.filter(consensus=filters.consensus)
    elif filters.votes == "with":
        items = items.filter(n_classifications__gt=0)
    elif filters.votes == "without":
        items = items.filter(n_classifications=0)
    if filters.flag == "model":
        items = items.filter(conflicts_model=True)
    elif filters.flag == "prior":
        items = items.filter(contradicts_prior=True)
    elif filters.flag == "either":
        items = items.filter(Q(conflicts_model=True) | Q(contradicts_prior=True))
    if filters.concept:
        concept_pk = _concept_pk(filters.concept)
        crowd = AggregatedLabel.objects.filter(
            item_id=OuterRef("pk"), concept_id=concept_pk
        ).filter(Q(votes_for__gt=0) | Q(posterior__gt=CROWD_THRESHOLD))
        prior = PriorLabel.objects.filter(item_id=OuterRef("pk"), concept_id=concept_pk)
        items = items.filter(Exists(crowd) | Exists(prior))
    if filters.round is not None:
        picked = RoundPick.objects.filter(item_id=OuterRef("pk"), round__number=filters.round)
        held = Subject.objects.filter(item_id=OuterRef("pk"), round__number=filters.round)
        items = items.filter(Exists(picked) | Exists(held))
    if filters.volunteer is not None:
        voted = Classification.objects.filter(
            item_id=OuterRef("pk"), volunteer_id=filters.volunteer
        )
        items = items.filter(Exists(voted))
    return items.order_by(*(("" if how == "asc" else "-") + key for key, how in _QUEUE_ORDER))


def _concept_pk(key: str | Concept) -> int:
    if isinstance(key, Concept):
        return key.pk
    pk = Concept.objects.filter(key=key).values_list("pk", flat=True).first()
    if pk is None:
        raise ValueError(f"unknown concept {key!r}")
    return pk


def review_queue_neighbours(
    *, item: Item, filters: QueueFilters | None = None, **fields
) -> tuple[int | None, int | None]:
    """Ids of the items before and after ``item`` in the queue order, ``None`` at either end.

    Works by the item's sort key, not its position, so it still answers after the item itself has
    left the queue (a decision moves it out of "unreviewed"): the next item is the one that would
    have followed it.

    The neighbour is looked for tier by tier, from the closest: the same values on every sort
    key but the last and a range on it, then the same values on all but the last two and a range
    on the one before, and so on. Each tier is an equality on a prefix of the queue index and a
    range on the next key, a few index entries to read; one OR of them all would walk the index
    from one end to the item (bench/README.md, "After: staged label writes, uncounted API pages,
    the review-queue index"). Usually one query per direction.
    """
    queue = review_queue(filters, **fields)
    values = {
        "has_votes": 1 if item.n_classifications > 0 else 0,
        "is_uncertain": 1 if item.consensus == Item.Consensus.UNCERTAIN else 0,
        "conflicts_model": item.conflicts_model,
        "contradicts_prior": item.contradicts_prior,
        "uncertainty": item.uncertainty,
        "id": item.pk,
    }

    def tiers(after: bool) -> list[tuple[Q, list[str]]]:
        found = []
        for depth in range(len(_QUEUE_ORDER) - 1, -1, -1):
            key, how = _QUEUE_ORDER[depth]
            same = {name: values[name] for name, _how in _QUEUE_ORDER[:depth]}
            value = values[key]
            if how == "flag":
                # 0/1 keys compared by equality to "the other value" rather than with < and >,
                # which backends differ on for booleans; a tier that cannot exist is left out.
                if bool(value) != after:
                    continue
                other = 0 if after else 1
                step = Q(**{key: bool(other) if isinstance(value, bool) else other})
            elif how == "desc":
                step = Q(**{f"{key}__{'lt' if after else 'gt'}": value})
            else:
                step = Q(**{f"{key}__{'gt' if after else 'lt'}": value})
            rest = _QUEUE_ORDER[depth:]
            order = [("" if (how_ == "asc") == after else "-") + name for name, how_ in rest]
            found.append((Q(**same) & step, order))
        return found

    def first(direction: list[tuple[Q, list[str]]]) -> int | None:
        for where, order in direction:
            pk = queue.filter(where).order_by(*order).values_list("pk", flat=True).first()
            if pk is not None:
                return pk
        return None

    return first(tiers(after=False)), first(tiers(after=True))


# --- item screen --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConceptRow:
    key: str
    label: str
    votes_for: int
    votes_against: int
    posterior: float | None  # None: the aggregation has not labelled this item x concept
    prior: bool
    final: bool


@dataclass(frozen=True)
class ReviewEntry:
    id: int
    created_at: datetime
    curator: str
    action: str
    before: list[str]
    after: list[str]
    comment: str
    batch: str  # "" for a single decision
    undoes: int | None
    undone: bool


@dataclass(frozen=True)
class ItemReviewContext:
    item: Item
    rows: list[ConceptRow]
    final: list[str] | None  # None: rejected
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
                final=key in final_set,
            )
        )
    history = [
        ReviewEntry(
            id=pk,
            created_at=created_at,
            curator=username,
            action=action,
            before=list(before or []),
            after=list(after or []),
            comment=comment,
            batch=str(batch or ""),
            undoes=undoes,
            undone=undone,
        )
        for pk, created_at, username, action, before, after, comment, batch, undoes, undone in (
            Review.objects.filter(item_id=item.pk)
            .annotate(undone=Exists(Review.objects.filter(undoes_id=OuterRef("pk"))))
            .order_by("-created_at", "-id")
            .values_list(
                "pk", "created_at", "curator__username", "action", "before", "after", "comment",
                "batch", "undoes_id", "undone",
            )
        )
    ]  # fmt: skip
    return ItemReviewContext(item=item, rows=rows, final=final, history=history)


# --- decisions ---------------------------------------------------------------------------------


def review_history(*, batch=None) -> QuerySet[Review]:
    """Curators' decisions, newest first, each with ``undone`` (an undo reverses it); only the
    rows of one bulk decision when ``batch`` is given. Two related rows joined, no N+1."""
    rows = Review.objects.select_related("item", "curator", "undoes").annotate(
        undone=Exists(Review.objects.filter(undoes_id=OuterRef("pk")))
    )
    if batch is not None:
        rows = rows.filter(batch=batch)
    return rows.order_by("-created_at", "-id")


@dataclass(frozen=True)
class BulkDecision:
    batch: str
    action: str
    curator: str
    created_at: datetime
    n: int
    undone: int


def bulk_decisions(*, limit: int = 20) -> list[BulkDecision]:
    """The latest bulk decisions, one line each: how many rows, how many since undone."""
    groups = (
        Review.objects.filter(batch__isnull=False)
        .exclude(action=Review.Action.UNDO)
        .values("batch", "action", "curator__username")
        .annotate(
            n=Count("pk"),
            at=Max("created_at"),
            undone=Count("undone_by"),
        )
        .order_by("-at")[:limit]
    )
    return [
        BulkDecision(
            batch=str(row["batch"]),
            action=row["action"],
            curator=row["curator__username"],
            created_at=row["at"],
            n=row["n"],
            undone=row["undone"],
        )
        for row in groups
    ]


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
