"""Reads for the dashboard: the state of the loop at a glance, in a few aggregated queries.

Every selector here groups and counts in the database and returns a handful of rows whatever the
size of the project: a dashboard over 100,000 items and a million classifications reads about as
many rows as one over ten. The numbers follow the contracts of :mod:`annotate.selectors`: the
final label of an item is the curator's when reviewed (accepted or edited), nothing when rejected,
and otherwise every concept whose crowd posterior is above 0.5 (``item_final_labels``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
from django.conf import settings
from django.db.models import Avg, Count, F, FloatField, Q, Value
from django.db.models.functions import Abs, TruncDate

from annotate import selectors
from annotate.models import (
    AggregatedLabel,
    Classification,
    Concept,
    DatasetRelease,
    Item,
    Round,
    Subject,
)
from loop.selectors import loop_status
from training.models import ModelVersion

#: The dashboard lists this many rounds and model versions at most, the latest ones.
RECENT_ROUNDS = 20
RECENT_MODEL_VERSIONS = 50



# --- the pipeline -------------------------------------------------------------------------------

#: A step's or an event's status as its badge reads (the JavaScript refresh, dashboard.js, has the
#: same words).
STATUS_BADGES = {
    "done": "done",
    "nothing": "nothing to do",
    "retrying": "retrying",
    "failed": "failed",
}
#: The last day's totals of ``loop_status()``, in the order and words of the panel: (key, one,
#: many).
LOOP_TOTALS = (
    ("votes_pulled", "vote pulled", "votes pulled"),
    ("labels_changed", "label changed", "labels changed"),
    ("subjects_retired", "subject retired", "subjects retired"),
    ("training_runs_requested", "training run requested", "training runs requested"),
    ("rounds_requested", "round requested", "rounds requested"),
)
#: The placeholder in ``run_url_template`` that a training run's id replaces.
RUN_ID = "__id__"


def time_ago(seconds: float) -> str:
    """``"12 s ago"``, ``"5 min ago"``, ``"3 h ago"``, ``"2 d ago"``: whole units, rounded down."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s ago"
    if s < 3600:
        return f"{s // 60} min ago"
    if s < 2 * 86400:
        return f"{s // 3600} h ago"
    return f"{s // 86400} d ago"


def exact_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _stamp(row: dict[str, Any], key: str, now: datetime) -> None:
    """Add ``ago`` (relative to the status's own clock) and ``at`` (exact) for ``row[key]``."""
    value = row.get(key)
    moment = datetime.fromisoformat(value) if value else None
    row["ago"] = time_ago((now - moment).total_seconds()) if moment else ""
    row["at"] = exact_time(moment) if moment else ""


def loop_panel(*, events: int = 10, run_url_template: str = "") -> dict[str, Any]:
    """``loop_status()`` (one call) plus what the panel prints beside it: relative and exact
    times, badge words, the totals in order, a progress percentage and the training run's link.

    Times are relative to the status's ``generated_at``, as the page's refresh computes them, so
    the first render and every refresh agree. ``run_url_template`` holds :data:`RUN_ID` where the
    run's id goes; empty, the run gets no link (a viewer who may not open training runs).
    """
    status = loop_status(events=events)
    now = datetime.fromisoformat(status["generated_at"])
    for step in status["steps"]:
        _stamp(step, "last_finished_at", now)
        step["badge"] = STATUS_BADGES.get(step["last_status"], step["last_status"] or "never ran")
    for event in (*status["events"], *status["failures"]):
        _stamp(event, "finished_at", now)
        event["badge"] = STATUS_BADGES.get(event["status"], event["status"])
    totals = status["totals_24h"]
    status["totals"] = [
        (one if totals.get(key, 0) == 1 else many, totals.get(key, 0))
        for key, one, many in LOOP_TOTALS
    ]
    run = status["training"]["latest_run"]
    if run is not None:
        run["percent"] = round(100 * float(run["progress"] or 0))
        run["url"] = run_url_template.replace(RUN_ID, str(run["id"])) if run_url_template else ""
    model = status["training"]["active_model"]
    if model is not None:
        _stamp(model, "promoted_at", now)
    status["generated_at_exact"] = exact_time(now)
    return status


# --- the loop -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundRow:
    number: int
    name: str
    status: str
    strategy: str
    pushed_at: object  # datetime | None; object keeps the template free of Optional juggling
    subjects: int
    retired: int
    items: int


def rounds_recent(*, limit: int = RECENT_ROUNDS) -> tuple[list[RoundRow], int]:
    """The latest rounds with their subject, retired and item counts, and the number of rounds.

    Two queries: the counts are annotations on the rounds, not a query per round.
    """
    rows = (
        Round.objects.order_by("-number")
        .annotate(
            n_subjects=Count("subjects"),
            n_retired=Count("subjects", filter=Q(subjects__retired_at__isnull=False)),
            n_items=Count("subjects__item", distinct=True),
        )
        .values_list(
            "number",
            "name",
            "status",
            "strategy",
            "pushed_at",
            "n_subjects",
            "n_retired",
            "n_items",
        )[:limit]
    )
    rounds = [
        RoundRow(
            number=number,
            name=name,
            status=status,
            strategy=strategy,
            pushed_at=pushed_at,
            subjects=subjects,
            retired=retired,
            items=items,
        )
        for number, name, status, strategy, pushed_at, subjects, retired, items in rows
    ]
    return rounds, Round.objects.count()


@dataclass(frozen=True)
class DailyCounts:
    days: list[date]
    counts: np.ndarray  # shape (len(days),), classifications created that day (UTC)
    total: int
    counted: int  # not a repeat of the same volunteer on the same subject

    @property
    def last_7_days(self) -> int:
        if not self.days:
            return 0
        last = self.days[-1]
        recent = [n for day, n in zip(self.days, self.counts, strict=True) if (last - day).days < 7]
        return int(sum(recent))


def classifications_per_day() -> DailyCounts:
    """Classifications per calendar day (UTC), oldest first, plus the totals: two queries.

    Grouping by day keeps the result at one row per day of the project, however many votes.
    """
    rows = list(
        Classification.objects.annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(n=Count("pk"))
        .order_by("day")
        .values_list("day", "n")
    )
    totals = Classification.objects.aggregate(
        total=Count("pk"), counted=Count("pk", filter=Q(is_duplicate=False))
    )
    return DailyCounts(
        days=[day for day, _n in rows],
        counts=np.array([n for _day, n in rows], dtype=np.int64),
        total=totals["total"],
        counted=totals["counted"],
    )


@dataclass(frozen=True)
class ItemStates:
    total: int
    image: list[tuple[str, int]]  # (display label, items), in the choices' order
    consensus: list[tuple[str, int]]
    review: list[tuple[str, int]]
    #: What waits for a curator, each with the query string of the review queue that lists it:
    #: (label, unreviewed items, query).
    to_review: list[tuple[str, int, str]]


def item_states() -> ItemStates:
    """Items by image state, consensus and review state: one query grouped by all three.

    The three states have 8 x 3 x 4 combinations at most, so the rows stay few; the marginals are
    summed here rather than asked for in three scans of the item table.
    """
    image: dict[str, int] = {}
    consensus: dict[str, int] = {}
    review: dict[str, int] = {}
    total = 0
    rows = (
        Item.objects.values("image_state", "consensus", "review_state")
        .annotate(n=Count("pk"))
        .order_by()
        .values_list("image_state", "consensus", "review_state", "n")
    )
    for image_state, consensus_state, review_state, n in rows:
        image[image_state] = image.get(image_state, 0) + n
        consensus[consensus_state] = consensus.get(consensus_state, 0) + n
        review[review_state] = review.get(review_state, 0) + n
        total += n

    def ordered(counts: dict[str, int], choices: list[tuple[str, str]]) -> list[tuple[str, int]]:
        return [(label, counts.get(value, 0)) for value, label in choices]

    waiting = Item.objects.filter(review_state=Item.ReviewState.UNREVIEWED).aggregate(
        uncertain=Count("pk", filter=Q(consensus=Item.Consensus.UNCERTAIN)),
        model=Count("pk", filter=Q(conflicts_model=True, n_classifications__gt=0)),
        prior=Count("pk", filter=Q(contradicts_prior=True, n_classifications__gt=0)),
        voted=Count("pk", filter=Q(n_classifications__gt=0)),
    )

    return ItemStates(
        total=total,
        image=ordered(image, Item.ImageState.choices),
        consensus=ordered(consensus, Item.Consensus.choices),
        review=ordered(review, Item.ReviewState.choices),
        to_review=[
            ("undecided crowd", waiting["uncertain"], "consensus=uncertain"),
            ("model against a confident crowd", waiting["model"], "flag=model"),
            ("crowd against the prior enrichment", waiting["prior"], "flag=prior"),
            ("every item with votes", waiting["voted"], ""),
        ],
    )


@dataclass(frozen=True)
class Retirement:
    subjects: int
    retired: int
    open: int  # active upstream, not retired: still collecting votes
    deleted: int  # deleted upstream and not retired

    @property
    def retired_share(self) -> float | None:
        return self.retired / self.subjects if self.subjects else None


def retirement_counts() -> Retirement:
    """Subjects retired on Zooniverse against those still open: one aggregate query."""
    counts = Subject.objects.aggregate(
        subjects=Count("pk"),
        retired=Count("pk", filter=Q(retired_at__isnull=False)),
        open=Count("pk", filter=Q(retired_at__isnull=True, upstream_state=Subject.Upstream.ACTIVE)),
        deleted=Count(
            "pk", filter=Q(retired_at__isnull=True, upstream_state=Subject.Upstream.DELETED)
        ),
    )
    return Retirement(**counts)


# --- labels -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConceptStats:
    key: str
    label: str
    final_positive: int  # items whose final label has this concept
    from_curators: int  # of which a curator's decision
    labelled: int  # items with an aggregated label for this concept
    agreement: float | None  # mean |2p - 1| over those labels: 0 = coin toss, 1 = unanimous
    settled: int  # labels with p >= confidence or p <= 1 - confidence

    @property
    def settled_share(self) -> float | None:
        return self.settled / self.labelled if self.labelled else None


@dataclass(frozen=True)
class LabelStats:
    concepts: list[ConceptStats]
    items_in_dataset: int  # items with a final label (possibly empty): all but rejected
    rejected: int
    confidence: float


def label_stats(*, confidence: float | None = None) -> LabelStats:
    """Per active concept: final-label counts (``item_final_labels`` semantics) and agreement.

    Four queries whatever the size:

    1. the vocabulary;
    2. over the aggregated labels, grouped by concept: the crowd's positives among items no curator
       has decided (those are the items whose final label is the crowd's), the mean |2p - 1| and
       the number of settled labels;
    3. curated items grouped by their distinct curated key lists (a few hundred combinations
       at most, since they are subsets of the vocabulary), expanded to per-key counts here;
    4. the number of rejected and of all items.
    """
    confidence = settings.RETIRE_CONFIDENCE if confidence is None else confidence
    concepts = list(Concept.objects.filter(active=True).values_list("pk", "key", "label"))
    undecided = ~Q(item__review_state__in=Item.ReviewState.DECIDED)
    crowd = {
        row["concept_id"]: row
        for row in AggregatedLabel.objects.filter(concept_id__in=[pk for pk, _k, _l in concepts])
        .values("concept_id")
        .annotate(
            labelled=Count("pk"),
            positive=Count("pk", filter=Q(posterior__gt=selectors.CROWD_THRESHOLD) & undecided),
            agreement=Avg(Abs(Value(2.0) * F("posterior") - Value(1.0)), output_field=FloatField()),
            settled=Count(
                "pk", filter=Q(posterior__gte=confidence) | Q(posterior__lte=1.0 - confidence)
            ),
        )
        .order_by()
    }
    curated: dict[str, int] = {}
    for keys, n in (
        Item.objects.curated()
        .values("curated_concepts")
        .annotate(n=Count("pk"))
        .order_by()
        .values_list("curated_concepts", "n")
    ):
        for key in set(keys or []):
            curated[key] = curated.get(key, 0) + n
    items = Item.objects.aggregate(
        total=Count("pk"), rejected=Count("pk", filter=Q(review_state=Item.ReviewState.REJECTED))
    )

    stats = []
    for pk, key, label in concepts:
        row: Mapping[str, Any] = crowd.get(pk, {})
        from_curators = curated.get(key, 0)
        stats.append(
            ConceptStats(
                key=key,
                label=label,
                final_positive=row.get("positive", 0) + from_curators,
                from_curators=from_curators,
                labelled=row.get("labelled", 0),
                agreement=row.get("agreement"),
                settled=row.get("settled", 0),
            )
        )
    return LabelStats(
        concepts=stats,
        items_in_dataset=items["total"] - items["rejected"],
        rejected=items["rejected"],
        confidence=confidence,
    )


# --- volunteers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkillSummary:
    volunteers: int
    votes: int  # summed over concepts: one classification counts once per concept it answers
    sensitivity_median: float | None
    specificity_median: float | None
    # Share of volunteers below the guessing line se + sp = 1 (they do worse than at random).
    below_chance: int


def skill_summary() -> SkillSummary:
    """The numbers beside the skill scatter, from the same grouped query the scatter uses."""
    points = selectors.volunteer_skill_points()
    if points.votes.size == 0:
        return SkillSummary(0, 0, None, None, 0)
    return SkillSummary(
        volunteers=int(points.votes.size),
        votes=int(points.votes.sum()),
        sensitivity_median=float(np.nanmedian(points.sensitivity)),
        specificity_median=float(np.nanmedian(points.specificity)),
        below_chance=int(np.sum(points.sensitivity + points.specificity < 1.0)),
    )


# --- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPoint:
    pk: int
    created_at: object  # datetime
    status: str
    backbone: str
    val_map: float | None
    micro_f1: float | None
    n_train: int
    n_val: int


def model_versions_curve(*, limit: int = RECENT_MODEL_VERSIONS) -> list[ModelPoint]:
    """The latest model versions, oldest first: the learning curve, one query.

    ``val_map`` is the version's column, falling back to ``metrics["map"]`` for versions written
    before the column was filled; NaN (no positive in validation) reads as no value.
    """
    rows = list(
        ModelVersion.objects.order_by("-created_at", "-id").values_list(
            "pk", "created_at", "status", "backbone", "val_map", "metrics", "n_train", "n_val"
        )[:limit]
    )
    points = []
    for pk, created_at, status, backbone, val_map, metrics, n_train, n_val in reversed(rows):
        metrics = metrics if isinstance(metrics, dict) else {}
        points.append(
            ModelPoint(
                pk=pk,
                created_at=created_at,
                status=status,
                backbone=backbone,
                val_map=_finite(val_map if val_map is not None else metrics.get("map")),
                micro_f1=_finite(metrics.get("micro_f1")),
                n_train=n_train,
                n_val=n_val,
            )
        )
    return points


def _finite(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]  # any value tried; refusals caught below
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


# --- releases -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseSummary:
    latest: DatasetRelease | None
    written: int
    in_progress: int


def release_summary() -> ReleaseSummary:
    """The latest written release and how many there are: two queries."""
    latest = (
        DatasetRelease.objects.filter(status=DatasetRelease.Status.SUCCEEDED)
        .select_related("created_by")
        .order_by("-version")
        .first()
    )
    counts = DatasetRelease.objects.aggregate(
        written=Count("pk", filter=Q(status=DatasetRelease.Status.SUCCEEDED)),
        in_progress=Count(
            "pk",
            filter=Q(status__in=[DatasetRelease.Status.QUEUED, DatasetRelease.Status.RUNNING]),
        ),
    )
    return ReleaseSummary(latest=latest, **counts)


__all__ = [
    "classifications_per_day",
    "item_states",
    "label_stats",
    "loop_panel",
    "model_versions_curve",
    "release_summary",
    "retirement_counts",
    "rounds_recent",
    "skill_summary",
]
