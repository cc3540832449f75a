"""Retirement: which items are settled (every concept confidently near 0 or 1) and done."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ml.aggregation.votes import BoolArray, IntArray


@dataclass(frozen=True, eq=False)
class RetirementDecision:
    """Per-item verdict of ``retirement_decide``.

    Attributes:
        settled: ``(n_items,)`` every concept's posterior is confidently near 0 or 1.
        retire: ``(n_items,)`` stop collecting votes (settled with enough votes, or capped).
        unsettled_concepts: ``(n_items,)`` number of concepts still in the uncertain band.
    """

    settled: BoolArray
    retire: BoolArray
    unsettled_concepts: IntArray


def retirement_decide(
    posteriors: ArrayLike,
    *,
    confidence: float | ArrayLike = 0.95,
    vote_counts: ArrayLike | None = None,
    min_votes: int = 0,
    max_votes: int | None = None,
) -> RetirementDecision:
    """Decide which items are done: every concept settled at ``>= c`` or ``<= 1 - c``.

    Args:
        posteriors: ``(n_items, n_concepts)`` posteriors.
        confidence: required confidence ``c`` in (0.5, 1], a scalar or one per concept.
        vote_counts: ``(n_items,)`` classifications so far; needed for ``min_votes``/``max_votes``.
        min_votes: an item is never retired with fewer votes, however settled it looks.
        max_votes: an item with this many votes is retired even if unsettled (a budget cap).

    Returns:
        A ``RetirementDecision``.
    """
    post = np.asarray(posteriors, dtype=np.float64)
    if post.ndim == 1:
        post = post[:, None]
    threshold = np.broadcast_to(np.asarray(confidence, dtype=np.float64), post.shape[1:])
    if ((threshold <= 0.5) | (threshold > 1.0)).any():
        raise ValueError("confidence must be in (0.5, 1]")
    confident = (post >= threshold) | (post <= 1.0 - threshold)
    unsettled = (~confident).sum(axis=1).astype(np.int64)
    settled = unsettled == 0
    retire = settled.copy()
    if vote_counts is not None:
        counts = np.asarray(vote_counts)
        retire &= counts >= min_votes
        if max_votes is not None:
            retire |= counts >= max_votes
    elif min_votes > 0 or max_votes is not None:
        raise ValueError("min_votes and max_votes need vote_counts")
    return RetirementDecision(settled=settled, retire=retire, unsettled_concepts=unsettled)
