"""Majority vote: the share of classifications that ticked each concept, the baseline."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ml.aggregation.design import VoteDesign
from ml.aggregation.votes import (
    AggregationResult,
    AnchorsLike,
    BoolArray,
    FloatArray,
    IntArray,
    VoteMatrix,
    anchors_to_array,
)


def majority_vote(votes: VoteMatrix, anchors: AnchorsLike = None) -> AggregationResult:
    """Vote fraction per item x concept: ticks / classifications asked about the concept.

    Items nobody has classified (or asked about a concept) get the concept's overall tick rate.
    Each volunteer's sensitivity and specificity are measured against the majority decision
    (posterior > 0.5), with add-one smoothing, so that the output has the same shape as
    Dawid-Skene's.

    Args:
        votes: the multi-label votes.
        anchors: known labels; anchored pairs are fixed to 0/1.

    Returns:
        An ``AggregationResult`` with ``method="majority"``.
    """
    n_votes_per_item = votes.item_vote_counts()
    asked = votes.asked_counts()
    fixed = anchors_to_array(anchors, votes.n_items, votes.n_concepts)
    known = ~np.isnan(fixed)
    posteriors, overall = tick_fractions(votes.positive_counts(), asked, fixed)

    # Skill against the majority decision: one pass of the two-coin M-step with hard labels.
    design = VoteDesign.build(votes, np.arange(votes.n_workers), votes.n_workers)
    decided = (posteriors > 0.5).astype(np.float64)
    stats = design.skill_counts(decided)
    sensitivity = (stats.true_pos + 1.0) / (stats.mass_pos + 2.0)
    specificity = (stats.true_neg + 1.0) / (stats.mass_neg + 2.0)
    return AggregationResult(
        method="majority",
        posteriors=posteriors,
        sensitivity=sensitivity,
        specificity=specificity,
        worker_votes=votes.worker_asked_counts(),
        item_votes=n_votes_per_item,
        priors=informative_mean(posteriors, (asked > 0) | known, overall),
        iterations=0,
        log_likelihood=[],
        converged=True,
        pooled=np.zeros(votes.n_workers, dtype=bool),
    )


def tick_fractions(
    positives: ArrayLike, asked: IntArray, fixed: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Vote fractions with unseen item x concept pairs at the overall tick rate, anchors applied.

    Args:
        positives: ``(n_items, n_concepts)`` ticks.
        asked: ``(n_items, n_concepts)`` classifications asked about the concept.
        fixed: ``(n_items, n_concepts)`` anchors, NaN where free.

    Returns:
        ``(posteriors, overall)``: ``(n_items, n_concepts)`` fractions and ``(n_concepts,)``
        overall tick rate (0.5 for a concept nobody was asked about).
    """
    ticks = np.asarray(positives, dtype=np.float64).reshape(fixed.shape)
    n_votes = asked.sum(axis=0)
    overall = np.where(n_votes > 0, ticks.sum(axis=0) / np.maximum(n_votes, 1), 0.5)
    seen = asked > 0
    posteriors = np.where(seen, ticks / np.maximum(asked, 1), overall[None, :])
    known = ~np.isnan(fixed)
    posteriors[known] = fixed[known]
    return posteriors, overall


def informative_mean(
    values: FloatArray, informative: BoolArray, fallback: FloatArray
) -> FloatArray:
    """Column means over informative rows; ``fallback`` for a column with none."""
    count = informative.sum(axis=0)
    total = np.where(informative, values, 0.0).sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), fallback)
