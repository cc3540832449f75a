"""Vote aggregation (truth inference): votes in, a posterior per item x concept and skills out.

One classification is one row of 0/1 flags, one per concept (a tick is a vote *for*, no tick a
vote *against*); votes are assumed deduplicated upstream (crowdloop keeps a volunteer's earliest
classification of an item). Methods, by name in :data:`AGGREGATORS` (see
``../shared/docs/aggregation.md``): ``majority_vote``, the baseline, and ``dawid_skene_binary``,
two-coin Dawid-Skene per concept (:mod:`ml.aggregation.dawid_skene`), whose E-step alone under an
earlier pass's ``TwoCoinParameters`` (``dawid_skene_binary_posteriors``) is the incremental
aggregation. The single-answer (one-of-K) counterparts are ``bench/aggregation_categorical.py``.

Plain numpy/scipy, a handful of sparse products per EM step and no Python loop over votes: this
package must never import django, ``annotate`` or ``training``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

from ml.aggregation.dawid_skene import (
    CLEAR_MAJORITY_SHARE,
    CLEAR_MAJORITY_VOTES,
    OVERRULE_FACTOR,
    TwoCoinParameters,
    dawid_skene_binary,
    dawid_skene_binary_posteriors,
)
from ml.aggregation.design import SkillCounts, VoteDesign
from ml.aggregation.majority import informative_mean, majority_vote, tick_fractions
from ml.aggregation.retirement import RetirementDecision, retirement_decide
from ml.aggregation.votes import (
    AggregationResult,
    AnchorsLike,
    BoolArray,
    FloatArray,
    IntArray,
    VoteMatrix,
    anchors_to_array,
    index_array,
    index_size,
)

__all__ = [
    "AGGREGATORS",
    "CLEAR_MAJORITY_SHARE",
    "CLEAR_MAJORITY_VOTES",
    "OVERRULE_FACTOR",
    "AggregationResult",
    "Aggregator",
    "AnchorsLike",
    "BoolArray",
    "FloatArray",
    "IntArray",
    "RetirementDecision",
    "SkillCounts",
    "TwoCoinParameters",
    "VoteDesign",
    "VoteMatrix",
    "aggregate",
    "anchors_to_array",
    "dawid_skene_binary",
    "dawid_skene_binary_posteriors",
    "index_array",
    "index_size",
    "informative_mean",
    "majority_vote",
    "retirement_decide",
    "tick_fractions",
]

Aggregator: TypeAlias = Callable[..., AggregationResult]

AGGREGATORS: dict[str, Aggregator] = {
    "majority": majority_vote,
    "dawid_skene": dawid_skene_binary,
}


def aggregate(
    method: str, votes: VoteMatrix, anchors: AnchorsLike = None, **opts: Any
) -> AggregationResult:
    """Run a registered multi-label aggregator by name.

    Args:
        method: a key of ``AGGREGATORS`` ("majority", "dawid_skene").
        votes: the multi-label votes.
        anchors: known labels, fixed in the output and used to learn skills.
        **opts: keyword options of the chosen method (e.g. ``max_iter``, ``pool_below``).

    Returns:
        The method's ``AggregationResult``.

    Raises:
        ValueError: for an unknown method name.
    """
    try:
        aggregator = AGGREGATORS[method]
    except KeyError:
        known = ", ".join(sorted(AGGREGATORS))
        raise ValueError(f"unknown aggregation method {method!r}; choose one of: {known}") from None
    return aggregator(votes, anchors, **opts)
