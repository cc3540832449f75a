"""The model-vs-crowd conflict: the active model is sure of one answer and the crowd of the other.

A concept conflicts on an item when the active model's score is at least
``MODEL_CONFLICT_CONFIDENCE`` one way and the crowd's posterior, backed by votes, at least
``RETIRE_CONFIDENCE`` the other way; either side unsure is no conflict (an unsure crowd already
leads the review queue, an unsure model has no opinion). ``Item.conflicts_model`` keeps the
item-level flag for the queue: a new active version or a finished pool scoring refreshes every
item, an aggregation the items it rewrote (``training.receivers``); :func:`concept_conflicts`
gives the per-concept flags live. ``Item.zero_shot_contradicts_prior`` is the counterpart before
any model is trained: the latest zero-shot version is confident that a concept of the item's
prior does not apply (:func:`item_zero_shot_prior_refresh`, after a zero-shot scoring).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Q

from annotate.models import AggregatedLabel, Concept, Item
from training.models import ModelVersion, Prediction
from training.selectors import model_version_active, zero_shot_version_latest

logger = logging.getLogger(__name__)

_CHUNK = 5_000


def model_confidence() -> float:
    return float(settings.MODEL_CONFLICT_CONFIDENCE)


def crowd_confidence() -> float:
    return float(settings.RETIRE_CONFIDENCE)


def concept_conflicts(
    model: np.ndarray, crowd: np.ndarray, voted: np.ndarray | None = None
) -> np.ndarray:
    """Element-wise conflict of model scores and crowd posteriors (NaN where either is missing).

    ``voted`` (optional, boolean) says which crowd posteriors are backed by votes; without votes
    the crowd has said nothing to conflict with.
    """
    model = np.asarray(model, dtype=np.float64)
    crowd = np.asarray(crowd, dtype=np.float64)
    m, c = model_confidence(), crowd_confidence()
    with np.errstate(invalid="ignore"):
        model_yes, model_no = model >= m, model <= 1.0 - m
        crowd_yes, crowd_no = crowd >= c, crowd <= 1.0 - c
    conflict = (model_yes & crowd_no) | (model_no & crowd_yes)
    if voted is not None:
        conflict &= np.asarray(voted, dtype=bool)
    return conflict


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _conflicted_among(version: ModelVersion, item_ids: list[int]) -> set[int]:
    """The items of ``item_ids`` (all scored by ``version``) with at least one conflict."""
    concept_pk = dict(Concept.objects.filter(key__in=version.concepts).values_list("key", "pk"))
    # Column of each concept in the version's output order; concepts since deleted are skipped.
    column_of = {concept_pk[key]: i for i, key in enumerate(version.concepts) if key in concept_pk}
    if not column_of:
        return set()
    rows = {item_id: n for n, item_id in enumerate(item_ids)}
    scores = np.full((len(item_ids), len(version.concepts)), np.nan, dtype=np.float32)
    for item_id, blob in Prediction.objects.filter(
        model_version=version, item_id__in=item_ids
    ).values_list("item_id", "scores"):
        scores[rows[item_id]] = np.frombuffer(bytes(blob), dtype="<f4")
    c = crowd_confidence()
    confident_crowd = AggregatedLabel.objects.filter(
        Q(votes_for__gt=0) | Q(votes_against__gt=0),
        Q(posterior__gte=c) | Q(posterior__lte=1.0 - c),
        item_id__in=item_ids,
        concept_id__in=list(column_of),
    )
    labels = np.array(
        list(confident_crowd.values_list("item_id", "concept_id", "posterior")), dtype=np.float64
    ).reshape(-1, 3)
    if not len(labels):
        return set()
    row = np.array([rows[int(i)] for i in labels[:, 0]], dtype=np.int64)
    col = np.array([column_of[int(k)] for k in labels[:, 1]], dtype=np.int64)
    conflict = concept_conflicts(scores[row, col], labels[:, 2])
    return {item_ids[r] for r in np.unique(row[conflict])}


def _flag_refresh(
    *,
    field: str,
    version: ModelVersion | None,
    item_ids: Collection[int] | None,
    candidates: Callable[[ModelVersion], set[int]],
    among: Callable[[ModelVersion, list[int]], set[int]],
    what: str,
) -> int:
    """Bring the boolean ``Item.<field>`` in step with ``among`` for ``item_ids`` (None: the
    ``candidates`` of ``version`` and every item flagged now); return how many flags changed.

    Without a version every flag in scope is cleared. Reads and writes in chunks of 5,000 items,
    so a million-item pool stays in memory a chunk at a time.
    """
    flagged_q = Item.objects.filter(**{field: True})
    if item_ids is None:
        flagged = set(flagged_q.values_list("pk", flat=True))
        scope = sorted((candidates(version) if version is not None else set()) | flagged)
    else:
        scope = sorted({int(pk) for pk in item_ids})
        flagged = {
            pk
            for chunk in _chunks(scope)
            for pk in flagged_q.filter(pk__in=chunk).values_list("pk", flat=True)
        }
    found: set[int] = set()
    if version is not None:
        for chunk in _chunks(scope):
            found |= among(version, chunk)
    raise_ids, clear_ids = sorted(found - flagged), sorted(flagged - found)
    with transaction.atomic():
        for chunk in _chunks(raise_ids):
            Item.objects.filter(pk__in=chunk).update(**{field: True})
        for chunk in _chunks(clear_ids):
            Item.objects.filter(pk__in=chunk).update(**{field: False})
    if raise_ids or clear_ids:
        logger.info(
            "%s: %d items flagged, %d cleared (v%s)",
            what,
            len(raise_ids),
            len(clear_ids),
            getattr(version, "pk", None),
        )
    return len(raise_ids) + len(clear_ids)


def _scored(version: ModelVersion) -> set[int]:
    return set(Prediction.objects.filter(model_version=version).values_list("item_id", flat=True))


def item_model_conflicts_refresh(*, item_ids: Collection[int] | None = None) -> int:
    """Recompute ``Item.conflicts_model`` for ``item_ids`` (None: every item); return how many
    flags changed.

    Items the active version has not scored, and every item when no version is active, are not in
    conflict.
    """
    return _flag_refresh(
        field="conflicts_model",
        version=model_version_active(),
        item_ids=item_ids,
        candidates=_scored,
        among=_conflicted_among,
        what="model conflicts",
    )


# ---------------------------------------------------------------------------- zero-shot vs prior


def zero_shot_prior_conflicts(scores: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Element-wise: a prior label the zero-shot model is confident does not apply.

    A prior label says "this concept applies" (an earlier enrichment); a missing one says
    nothing, so only ``prior & (score <= 1 - MODEL_CONFLICT_CONFIDENCE)`` is a doubt. NaN scores
    (not scored) are never one.
    """
    scores = np.asarray(scores, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        confident_no = scores <= 1.0 - model_confidence()
    return confident_no & np.asarray(prior, dtype=bool)


def _zero_shot_doubted_among(version: ModelVersion, item_ids: list[int]) -> set[int]:
    """The items of ``item_ids`` with a prior label the zero-shot ``version`` doubts."""
    from annotate.models import PriorLabel

    column_of = {key: i for i, key in enumerate(version.concepts)}
    priors = [
        (item_id, column_of[key])
        for item_id, key in PriorLabel.objects.filter(item_id__in=item_ids).values_list(
            "item_id", "concept__key"
        )
        if key in column_of
    ]
    if not priors:
        return set()
    scores = {
        item_id: np.frombuffer(bytes(blob), dtype="<f4")
        for item_id, blob in Prediction.objects.filter(
            model_version=version, item_id__in={i for i, _ in priors}
        ).values_list("item_id", "scores")
    }
    prior_scores = np.array(
        [scores[i][c] if i in scores else np.nan for i, c in priors], dtype=np.float64
    )
    doubted = zero_shot_prior_conflicts(prior_scores, np.ones(len(priors), dtype=bool))
    return {priors[n][0] for n in np.flatnonzero(doubted)}


def _scored_with_priors(version: ModelVersion) -> set[int]:
    return set(
        Prediction.objects.filter(
            model_version=version, item__prior_labels__isnull=False
        ).values_list("item_id", flat=True)
    )


def item_zero_shot_prior_refresh(*, item_ids: Collection[int] | None = None) -> int:
    """Recompute ``Item.zero_shot_contradicts_prior`` for ``item_ids`` (None: every item) from
    the latest scored zero-shot version; return how many flags changed.

    An item is flagged when that version's score of a concept among its prior labels is at most
    ``1 - MODEL_CONFLICT_CONFIDENCE``. With no scored zero-shot version every flag is cleared.
    """

    return _flag_refresh(
        field="zero_shot_contradicts_prior",
        version=zero_shot_version_latest(),
        item_ids=item_ids,
        candidates=_scored_with_priors,
        among=_zero_shot_doubted_among,
        what="zero-shot doubts of prior labels",
    )
