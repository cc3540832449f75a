"""Votes in: the multi-label vote matrix, known labels (anchors), and the result of every method.

One classification is one row of 0/1 flags, one per concept (ticked: a vote *for*; unticked: a
vote *against*; not asked: no vote). Plain numpy: never django, ``annotate`` or ``training``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeAlias, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray: TypeAlias = NDArray[np.float64]
IntArray: TypeAlias = NDArray[np.int64]
BoolArray: TypeAlias = NDArray[np.bool_]

AnchorsLike: TypeAlias = (
    Mapping[tuple[int, int], "float | bool | int"]
    | tuple[ArrayLike, ArrayLike, ArrayLike]
    | NDArray[Any]
    | None
)
"""Known labels for (item, concept) pairs, from curator decisions or gold-standard items.

Accepted forms: a mapping ``{(item, concept): 0 or 1}``; a tuple of three equal-length arrays
``(item_idx, concept_idx, value)``; or a dense ``(n_items, n_concepts)`` float array holding 0 or 1
where known and NaN where not.
"""


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def index_array(values: ArrayLike, name: str) -> IntArray:
    """``values`` as a one-dimensional int64 array of non-negative indices (``name`` for errors)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got {array.dtype}")
    array = array.astype(np.int64, copy=False)
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must be non-negative")
    return array


def index_size(index: IntArray, given: int | None, name: str) -> int:
    """How many values ``index`` ranges over: ``given``, checked against the largest index."""
    needed = int(index.max()) + 1 if index.size else 0
    if given is None:
        return needed
    if given < needed:
        raise ValueError(f"{name}={given} but an index refers to {needed - 1}")
    return int(given)


@dataclass(frozen=True, eq=False)
class VoteMatrix:
    """Multi-label votes: one row per classification, one 0/1 column per concept.

    A vote is only what the volunteer was asked: where ``asked`` is False (a workflow version
    whose question did not offer the concept), the cell is no vote at all, neither a yes nor a
    no. It gives the item no evidence, the volunteer no skill counts, and it is not counted in
    the item's votes on that concept.

    Attributes:
        item_idx: ``(n_votes,)`` item of each classification, in ``[0, n_items)``.
        worker_idx: ``(n_votes,)`` volunteer of each classification, in ``[0, n_workers)``.
        labels: ``(n_votes, n_concepts)`` uint8, 1 where the concept was ticked (0 where it was
            not asked).
        n_items: number of items, including items nobody has classified yet.
        n_workers: number of volunteers.
        asked: ``(n_votes, n_concepts)`` bool, True where the classification was asked about the
            concept; None when every classification was asked about every concept.
    """

    item_idx: IntArray
    worker_idx: IntArray
    labels: NDArray[np.uint8]
    n_items: int
    n_workers: int
    asked: BoolArray | None = None

    @classmethod
    def from_arrays(
        cls,
        item_idx: ArrayLike,
        worker_idx: ArrayLike,
        labels: ArrayLike,
        *,
        n_items: int | None = None,
        n_workers: int | None = None,
        asked: ArrayLike | None = None,
    ) -> VoteMatrix:
        """Build and validate a vote matrix from plain arrays.

        Args:
            item_idx: ``(n_votes,)`` integer item index of each classification.
            worker_idx: ``(n_votes,)`` integer volunteer index of each classification.
            labels: ``(n_votes, n_concepts)`` bool or 0/1 ticks; a 1-D array is read as one concept.
            n_items: total number of items (default: largest index + 1). Items without votes are
                allowed and receive the prior.
            n_workers: total number of volunteers (default: largest index + 1).
            asked: ``(n_votes, n_concepts)`` bool, which concepts each classification was asked
                about (None: all). A tick where nothing was asked is dropped; a mask that is
                True everywhere is stored as None, which costs nothing.

        Returns:
            The validated ``VoteMatrix``.

        Raises:
            ValueError: on mismatched lengths or shapes, negative indices or labels other than 0/1.
        """
        items = index_array(item_idx, "item_idx")
        workers = index_array(worker_idx, "worker_idx")
        ticks = np.asarray(labels)
        if ticks.ndim == 1:
            ticks = ticks[:, None]
        if ticks.ndim != 2:
            raise ValueError(f"labels must be (n_votes, n_concepts), got shape {ticks.shape}")
        if not (len(items) == len(workers) == len(ticks)):
            raise ValueError(
                f"item_idx, worker_idx and labels differ in length: "
                f"{len(items)}, {len(workers)}, {len(ticks)}"
            )
        if ticks.dtype != np.bool_ and ticks.size and not np.isin(ticks, (0, 1)).all():
            raise ValueError("labels must be 0/1 (ticked or not)")
        ticks = ticks.astype(np.uint8, copy=False)
        mask: BoolArray | None = None
        if asked is not None:
            mask = np.asarray(asked)
            if mask.ndim == 1:
                mask = mask[:, None]
            if mask.shape != ticks.shape:
                raise ValueError(f"asked must be shaped like labels, {ticks.shape}: {mask.shape}")
            mask = mask.astype(bool, copy=False)
            if mask.all():
                mask = None
            else:
                ticks = ticks & mask
        return cls(
            item_idx=items,
            worker_idx=workers,
            labels=cast(NDArray[np.uint8], ticks),  # uint8, also after `& mask`
            n_items=index_size(items, n_items, "n_items"),
            n_workers=index_size(workers, n_workers, "n_workers"),
            asked=mask,
        )

    @property
    def n_votes(self) -> int:
        return int(self.item_idx.shape[0])

    @property
    def n_concepts(self) -> int:
        return int(self.labels.shape[1])

    def item_vote_counts(self) -> IntArray:
        """Number of classifications of each item, ``(n_items,)``."""
        return np.bincount(self.item_idx, minlength=self.n_items).astype(np.int64)

    def worker_vote_counts(self) -> IntArray:
        """Number of classifications by each volunteer, ``(n_workers,)``."""
        return np.bincount(self.worker_idx, minlength=self.n_workers).astype(np.int64)

    @cached_property
    def unasked_cells(self) -> tuple[IntArray, IntArray]:
        """``(rows, concepts)`` of the cells not asked about; empty without a mask."""
        if self.asked is None:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        return cast(tuple[IntArray, IntArray], np.nonzero(~self.asked))  # intp: int64 here

    def _per_concept(self, index: IntArray, size: int) -> IntArray:
        """``(size, n_concepts)``: asked votes per ``index`` value (item or volunteer) and concept.

        Without a mask, ``(size, 1)``: the per-row counts, which broadcast over the concepts.
        """
        total = np.bincount(index, minlength=size).astype(np.int64)
        shape = (size, self.n_concepts)
        rows, concepts = self.unasked_cells
        if not rows.size:
            return total[:, None]
        flat = index[rows] * self.n_concepts + concepts
        unasked = np.bincount(flat, minlength=size * self.n_concepts).reshape(shape)
        return total[:, None] - unasked

    def asked_counts(self) -> IntArray:
        """Classifications of each item asked about each concept, ``(n_items, n_concepts)``;
        ``(n_items, 1)`` without a mask, which broadcasts over the concepts."""
        return self._per_concept(self.item_idx, self.n_items)

    def worker_asked_counts(self) -> IntArray:
        """Votes of each volunteer on each concept (asked ones), ``(n_workers, n_concepts)``."""
        counts = self._per_concept(self.worker_idx, self.n_workers)
        return np.repeat(counts, self.n_concepts // counts.shape[1], axis=1)

    def positive_counts(self) -> IntArray:
        """Number of ticks per item and concept, ``(n_items, n_concepts)``."""
        rows, concepts = np.nonzero(self.labels)
        flat = self.item_idx[rows] * self.n_concepts + concepts
        counts = np.bincount(flat, minlength=self.n_items * self.n_concepts)
        return counts.reshape(self.n_items, self.n_concepts).astype(np.int64)


def anchors_to_array(anchors: AnchorsLike, n_items: int, n_concepts: int) -> FloatArray:
    """Normalise anchors to a dense ``(n_items, n_concepts)`` array: 0/1 where known, NaN elsewhere.

    Args:
        anchors: known labels in any ``AnchorsLike`` form, or None.
        n_items: number of items.
        n_concepts: number of concepts.

    Returns:
        Dense float array with NaN for free (item, concept) pairs.

    Raises:
        ValueError: on out-of-range indices, a wrong dense shape, or values other than 0/1.
    """
    dense = np.full((n_items, n_concepts), np.nan)
    if anchors is None:
        return dense
    if isinstance(anchors, Mapping):
        if not anchors:
            return dense
        keys = np.asarray(list(anchors.keys()), dtype=np.int64).reshape(-1, 2)
        values = np.asarray(list(anchors.values()), dtype=np.float64)
        items, concepts = keys[:, 0], keys[:, 1]
    elif isinstance(anchors, tuple):
        items = index_array(anchors[0], "anchor item_idx")
        concepts = index_array(anchors[1], "anchor concept_idx")
        values = np.asarray(anchors[2], dtype=np.float64)
    else:
        given = np.asarray(anchors, dtype=np.float64)
        if given.shape != (n_items, n_concepts):
            raise ValueError(f"dense anchors must be {(n_items, n_concepts)}, got {given.shape}")
        known = ~np.isnan(given)
        if not np.isin(given[known], (0.0, 1.0)).all():
            raise ValueError("anchor values must be 0 or 1")
        return given.copy()
    if not (len(items) == len(concepts) == len(values)):
        raise ValueError("anchor arrays differ in length")
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise ValueError("anchor item index out of range")
    if concepts.size and (concepts.min() < 0 or concepts.max() >= n_concepts):
        raise ValueError("anchor concept index out of range")
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError("anchor values must be 0 or 1")
    dense[items, concepts] = values
    return dense


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class AggregationResult:
    """Aggregated multi-label votes.

    Attributes:
        method: registry name of the method that produced this result.
        posteriors: ``(n_items, n_concepts)`` P(concept applies), in [0, 1].
        sensitivity: ``(n_workers, n_concepts)`` P(tick | applies) per volunteer.
        specificity: ``(n_workers, n_concepts)`` P(no tick | does not apply) per volunteer.
        worker_votes: ``(n_workers, n_concepts)`` number of votes each volunteer cast per concept.
        item_votes: ``(n_items,)`` number of classifications of each item.
        priors: ``(n_concepts,)`` estimated share of items to which each concept applies.
        iterations: EM iterations run (0 for majority vote).
        log_likelihood: marginal log-likelihood of the votes after each iteration.
        converged: whether the log-likelihood change fell below the tolerance.
        pooled: ``(n_workers,)`` True where the volunteer shares the pooled "rare" skill.
        crowd_sensitivity: ``(n_concepts,)`` the sensitivity a volunteer without votes gets (the
            Beta prior's mean); None for methods without a prior (majority vote).
        crowd_specificity: ``(n_concepts,)`` likewise for the specificity.
        overrule_factor: the odds a dissent needed against a clear majority
            (``OVERRULE_FACTOR``); None where no such rule applied.
    """

    method: str
    posteriors: FloatArray
    sensitivity: FloatArray
    specificity: FloatArray
    worker_votes: IntArray
    item_votes: IntArray
    priors: FloatArray
    iterations: int
    log_likelihood: list[float]
    converged: bool
    pooled: BoolArray
    crowd_sensitivity: FloatArray | None = None
    crowd_specificity: FloatArray | None = None
    overrule_factor: float | None = None

    @property
    def labels(self) -> BoolArray:
        """Hard decisions at 0.5: ``(n_items, n_concepts)`` bool (a tie counts as absent)."""
        return self.posteriors > 0.5
