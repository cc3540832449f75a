"""Vote aggregation (truth inference): turn volunteers' votes into posteriors per item and concept.

Volunteers answer a multiple-answer question ("which of these concepts apply?"), so one
classification is one row of 0/1 flags, one per concept: a ticked concept is a vote *for*, an
unticked one a vote *against*. Several volunteers see each item. This module turns such votes into
a posterior probability per item x concept, and estimates each volunteer's skill on the way.

Methods (see ``../shared/docs/aggregation.md``):

- ``majority_vote``: the vote fraction per item x concept, the baseline.
- ``dawid_skene_binary``: a two-coin Dawid-Skene model per concept. Each volunteer has a
  sensitivity (P(tick | concept applies)) and a specificity (P(no tick | it does not)) per concept,
  shrunk by a Beta prior towards the crowd's average for that concept, scaled by how careful the
  volunteer is across all concepts; so a volunteer with few votes behaves like an average
  volunteer, and carefulness learnt on common concepts carries over to rare ones. No skill is
  more extreme than the rule of succession allows for the volunteer's record, and a clear
  majority is overruled only on odds of ``OVERRULE_FACTOR`` or more. Volunteers with
  very few classifications, and any volunteers the caller marks (anonymous ``not-logged-in-*``
  sessions), can be pooled into one shared "rare" volunteer. Two coins matter because tagging
  errors are asymmetric: volunteers miss concepts far more often than they invent them.
- ``dawid_skene_binary_posteriors``: that model's E-step alone, for a subset of items under the
  fixed parameters (``TwoCoinParameters``) of an earlier full pass: the incremental aggregation.

The single-answer (one-of-K) counterparts, used on the public reference datasets, are
``bench/aggregation_categorical.py``.

Every EM step is a handful of sparse matrix products over all votes and all concepts at once; the
only Python loop is over EM iterations. Votes are assumed deduplicated upstream (crowdloop keeps a
volunteer's earliest classification of an item).

This package is plain numpy/scipy: it must never import django, ``annotate`` or ``training``.
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
