"""The crowd-level parameters kept between passes (``AggregationState``): stored by every pass, and
the starting point of an incremental one."""

from __future__ import annotations

from typing import Any

import numpy as np
from django.db import transaction

from annotate.models import AggregationState, Concept, VolunteerSkill
from annotate.services.aggregation.id_filters import queries_scoped
from annotate.services.aggregation.votes import VoteData
from ml import aggregation

# Passes kept in AggregationState (the latest full pass is always kept too): with a pull every
# five minutes, about eight hours of history.
STATES_KEPT = 100


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


def parameters_load(data: VoteData, state: AggregationState) -> aggregation.TwoCoinParameters:
    """The stored skills of ``data``'s volunteers (NaN where none) and the crowd parameters."""
    n_workers, n_concepts = len(data.volunteer_ids), len(data.concept_ids)
    sensitivity = np.full((n_workers, n_concepts), np.nan)
    specificity = np.full((n_workers, n_concepts), np.nan)
    skills = VolunteerSkill.objects.filter(concept_id__in=data.concept_ids.tolist()).values_list(
        "volunteer_id", "concept_id", "sensitivity", "specificity"
    )
    rows = [
        row
        for query in queries_scoped(skills, VolunteerSkill, "volunteer_id", data.volunteer_ids)
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


def aggregation_state_record(
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
