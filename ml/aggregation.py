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

This module is plain numpy/scipy: it must never import django, ``annotate`` or ``training``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import sparse
from scipy.special import expit

FloatArray: TypeAlias = NDArray[np.float64]
IntArray: TypeAlias = NDArray[np.int64]
BoolArray: TypeAlias = NDArray[np.bool_]

# Probabilities are clipped away from 0 and 1 before taking logs: one volunteer who has never
# disagreed with the crowd must not be able to veto an item with log(0).
_PROB_CLIP = 1e-6

# A clear majority: at least CLEAR_MAJORITY_VOTES classifications of the item, of which at least
# CLEAR_MAJORITY_SHARE agree on the concept (ticked, or did not). See ``OVERRULE_FACTOR``.
CLEAR_MAJORITY_VOTES = 3
CLEAR_MAJORITY_SHARE = 2 / 3

OVERRULE_FACTOR = 1.25
"""Default ``overrule_factor`` of the two-coin model: the odds a dissent needs against a clear
majority.

The rule, in one sentence: on an item where a clear majority agrees on a concept, the
posterior lands on the minority's side only if the volunteers' stored skills and the concept's
prior make the minority's answer at least ``overrule_factor`` times as likely as the
majority's, and then with those odds divided by the factor; short of that it is held just on
the majority's side of 0.5. Everything in it is on the item page: each vote multiplies the
odds by ``sensitivity / (1 - specificity)`` (a tick) or ``(1 - sensitivity) / specificity`` (no
tick) of its volunteer for the concept, and the concept's prior odds start them off. So where
the prior sides with the majority, the dissenters' skills must be clearly better than the
majority's; where it sides with the dissent, they need not be.

Chosen by evidence (bench/README.md, issue 17). Leaving the prior out cost the two-coin model
2.4 points on D_Product even at factor 1 (0.939 to 0.915): of its ~590 overrules of a 2-to-1
majority, ~175 are the prior's doing (matches are rare) and ~73% of those are right. With the
prior counted, factors 2, 3 and 10 cost 0.6, 0.9 and 3.5 points there (and 10 cost the simulated
crowd 0.002 micro-F1 at 10 votes). At 1.25 no reference figure drops (D_Product, bluebirds, the
simulated crowd at 5 and 10 votes; D_Product moves within +-0.001 for factors 1.1 to 1.5 as EM
settles slightly differently), the small simulated crowds gain, and the rule still stops the
small-data overrules that EM talks itself into (tests/ml/test_aggregation.py).
"""

# Where the rule holds a posterior back, it sits this far (in log-odds) on the majority's side of
# 0.5 (posterior 0.5025 or 0.4975): a contested item, uncertain, so it is neither retired nor
# presented as settled, and keeps collecting votes until they decide it.
_HELD_LOG_ODDS = 0.01

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
            labels=ticks,
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
        return np.nonzero(~self.asked)

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


# --------------------------------------------------------------------------------------------
# Majority vote
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Two-coin Dawid-Skene, per concept, vectorised over votes and concepts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkillCounts:
    true_pos: FloatArray  # (n_groups, C): sum over votes of tick * P(applies)
    mass_pos: FloatArray  # (n_groups, C): sum over votes of P(applies)
    true_neg: FloatArray  # (n_groups, C): sum over votes of (1 - tick) * P(does not apply)
    mass_neg: FloatArray  # (n_groups, C): sum over votes of P(does not apply)


@dataclass(frozen=True)
class VoteDesign:
    """Sparse incidence matrices that turn each EM step into a few matrix products.

    ``ticks`` is block-diagonal over concepts: row ``item * C + c``, column ``group * C + c``,
    value = number of ticks of concept c on that item by that group. ``seen`` is
    ``(n_items, n_groups)`` = number of classifications of the item by the group. Ticks are
    sparse (most concepts are absent from most images), so ``ticks`` stays small, and ``seen``
    serves every concept at once as if every classification voted on every concept.

    Where the votes carry an ``asked`` mask, ``unasked`` (shaped like ``ticks``) counts the
    classifications of each item by each group that were not asked about the concept, and its
    share is taken back out of every product with ``seen``: an unasked cell contributes neither
    evidence nor skill counts. Without a mask it is None and nothing extra is computed.
    """

    ticks: sparse.csr_matrix
    ticks_t: sparse.csr_matrix
    seen: sparse.csr_matrix
    seen_t: sparse.csr_matrix
    unasked: sparse.csr_matrix | None
    unasked_t: sparse.csr_matrix | None
    group_ticks: FloatArray  # (n_groups, C) total ticks per group
    group_votes: FloatArray  # (n_groups,) classifications asked about anything, per group
    group_asked: FloatArray  # (n_groups, C) classifications asked about the concept, per group
    n_items: int
    n_groups: int
    n_concepts: int

    @classmethod
    def build(cls, votes: VoteMatrix, group_of_worker: IntArray, n_groups: int) -> VoteDesign:
        n_concepts = votes.n_concepts
        group = group_of_worker[votes.worker_idx]
        rows, concepts = np.nonzero(votes.labels)
        tick_rows = votes.item_idx[rows] * n_concepts + concepts
        tick_cols = group[rows] * n_concepts + concepts
        ticks = sparse.csr_matrix(
            (np.ones(len(rows)), (tick_rows, tick_cols)),
            shape=(votes.n_items * n_concepts, n_groups * n_concepts),
        )
        seen = sparse.csr_matrix(
            (np.ones(votes.n_votes), (votes.item_idx, group)),
            shape=(votes.n_items, n_groups),
        )
        group_ticks = np.bincount(tick_cols, minlength=n_groups * n_concepts).astype(np.float64)
        group_votes = np.bincount(group, minlength=n_groups).astype(np.float64)
        group_asked = np.broadcast_to(group_votes[:, None], (n_groups, n_concepts))
        unasked = unasked_t = None
        rows, concepts = votes.unasked_cells
        if rows.size:
            unasked_rows = votes.item_idx[rows] * n_concepts + concepts
            unasked_cols = group[rows] * n_concepts + concepts
            unasked = sparse.csr_matrix(
                (np.ones(len(rows)), (unasked_rows, unasked_cols)), shape=ticks.shape
            )
            unasked_t = unasked.T.tocsr()
            missing = np.bincount(unasked_cols, minlength=n_groups * n_concepts)
            group_asked = group_asked - missing.reshape(n_groups, n_concepts)
            # A classification asked about nothing is no vote: it adds nothing to the record.
            assert votes.asked is not None
            nothing = ~votes.asked.any(axis=1)
            group_votes -= np.bincount(group[nothing], minlength=n_groups)
        return cls(
            ticks=ticks,
            ticks_t=ticks.T.tocsr(),
            seen=seen,
            seen_t=seen.T.tocsr(),
            unasked=unasked,
            unasked_t=unasked_t,
            group_ticks=group_ticks.reshape(n_groups, n_concepts),
            group_votes=group_votes,
            group_asked=group_asked,
            n_items=votes.n_items,
            n_groups=n_groups,
            n_concepts=n_concepts,
        )

    def skill_counts(self, posteriors: FloatArray) -> SkillCounts:
        """Expected confusion counts per group and concept given item posteriors."""
        shape = (self.n_groups, self.n_concepts)
        true_pos = (self.ticks_t @ posteriors.ravel()).reshape(shape)
        mass_pos = np.asarray(self.seen_t @ posteriors)
        if self.unasked_t is not None:
            mass_pos -= (self.unasked_t @ posteriors.ravel()).reshape(shape)
            # Subtracting can leave -1e-17 where a group was asked about nothing.
            mass_pos = np.maximum(mass_pos, 0.0)
        false_pos = self.group_ticks - true_pos
        mass_neg = self.group_asked - mass_pos
        if self.unasked_t is not None:
            mass_neg = np.maximum(mass_neg, 0.0)
        true_neg = mass_neg - false_pos
        return SkillCounts(true_pos, mass_pos, np.maximum(true_neg, 0.0), mass_neg)

    def log_evidence(
        self, sensitivity: FloatArray, specificity: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Log-likelihood of each item's votes if the concept applies / does not apply.

        Returns:
            ``(log_if_present, log_if_absent)``, each ``(n_items, n_concepts)``.
        """
        log_sens, log_miss = np.log(sensitivity), np.log1p(-sensitivity)
        log_spec, log_false = np.log(specificity), np.log1p(-specificity)
        # Every vote contributes its "no tick" term; ticks then swap it for the "tick" term.
        per_tick = np.stack([(log_sens - log_miss).ravel(), (log_false - log_spec).ravel()], 1)
        from_ticks = np.asarray(self.ticks @ per_tick)  # (n_items * C, 2)
        from_votes = np.asarray(self.seen @ np.hstack([log_miss, log_spec]))  # (n_items, 2C)
        c = self.n_concepts
        present = from_votes[:, :c] + from_ticks[:, 0].reshape(self.n_items, c)
        absent = from_votes[:, c:] + from_ticks[:, 1].reshape(self.n_items, c)
        if self.unasked is not None:
            # An unasked cell's "no tick" term was counted through ``seen``: take it back out.
            per_cell = np.stack([log_miss.ravel(), log_spec.ravel()], 1)
            from_unasked = np.asarray(self.unasked @ per_cell)  # (n_items * C, 2)
            present -= from_unasked[:, 0].reshape(self.n_items, c)
            absent -= from_unasked[:, 1].reshape(self.n_items, c)
        return present, absent


def _worker_groups(
    votes: VoteMatrix, pool_below: int | None, pool_workers: ArrayLike | None
) -> tuple[IntArray, int, BoolArray]:
    """Map volunteers to skill groups; pooled volunteers share the last group.

    Returns:
        ``(group_of_worker, n_groups, pooled)``.
    """
    counts = votes.worker_vote_counts()
    pooled = np.zeros(votes.n_workers, dtype=bool)
    if pool_below:
        pooled |= counts < pool_below
    if pool_workers is not None:
        marked = np.asarray(pool_workers)
        if marked.dtype == np.bool_:
            if marked.shape != (votes.n_workers,):
                raise ValueError("a boolean pool_workers must have shape (n_workers,)")
            pooled |= marked
        else:
            pooled[index_array(marked, "pool_workers")] = True
    # Keep the original order among individual volunteers so the output is order-independent.
    group = np.empty(votes.n_workers, dtype=np.int64)
    n_individual = int((~pooled).sum())
    group[~pooled] = np.arange(n_individual)
    group[pooled] = n_individual
    n_groups = n_individual + int(pooled.any())
    return group, n_groups, pooled


def _succession(mass: FloatArray, pseudo: float | None) -> FloatArray:
    """The smallest error rate a record of ``mass`` votes supports: Laplace's rule of succession.

    With ``pseudo`` = 1, ``1 / (n + 2)``: after n right answers and no wrong one, the chance that
    the next answer is wrong. 0 when the bound is off (``pseudo`` None or 0).
    """
    if not pseudo:
        return np.zeros_like(mass)
    return pseudo / (mass + 2.0 * pseudo)


def _crowd_error(
    hits: FloatArray, mass: FloatArray, succession: float | None, floor: float = _PROB_CLIP
) -> FloatArray:
    """``(n_concepts,)`` the crowd's pooled error rate per concept: all groups' errors / mass.

    Kept within the rule of succession on the crowd's whole record, so that a concept on which
    nobody has erred yet (a small project, or EM talking itself into a tidy story) does not
    make every volunteer infallible on it.
    """
    errors = np.maximum(mass - hits, 0.0)
    total = mass.sum(axis=0)
    crowd = errors.sum(axis=0) / np.maximum(total, 1e-12)
    bound = _succession(total, succession)
    crowd = np.clip(crowd, bound, 1.0 - bound)
    return np.clip(crowd, floor, 1 - floor)


def _unseen_skill(
    hits: FloatArray,
    mass: FloatArray,
    sharing: float | None,
    succession: float | None,
    floor: float = _PROB_CLIP,
) -> FloatArray:
    """``(n_concepts,)`` what ``_shrink`` gives a group without votes: the Beta prior's mean.

    With no errors and no mass the cross-concept factor is ``sharing / sharing`` = 1, and the
    estimate is the prior itself, whatever the prior strength.
    """
    error = _crowd_error(hits, mass, succession, floor)
    if sharing is not None:
        error = np.clip(error, floor, 0.5)
    return np.clip(1.0 - error, floor, 1 - floor)


def _shrink(
    hits: FloatArray,
    mass: FloatArray,
    strength: FloatArray,
    sharing: float | None,
    succession: float | None,
    record: FloatArray,
    floor: float = _PROB_CLIP,
) -> FloatArray:
    """MAP rate per group and concept under a Beta prior of ``strength`` pseudo-votes.

    The prior is placed on the error rate (1 - rate). Its mean is the crowd's pooled error rate
    for the concept, scaled by how error-prone this group is across *all* concepts compared with
    the crowd (``sharing`` pseudo-errors keep that factor near 1 for sparse volunteers), because
    carefulness is a trait of the volunteer more than of the concept: a volunteer who misses
    "bridge" tends to miss "boat" too, which per-concept models (crowd-kit's BinaryRelevance)
    cannot use.

    The estimate is then kept no more extreme than both the crowd's rate and the rule of
    succession on the group's record (``_succession``; ``record`` is ``(n_groups, 1)``
    classifications): a volunteer with n classifications gets a skill of at most the larger of
    the crowd's skill and ``(n + 1) / (n + 2)``, and at least the smaller of the crowd's and
    ``1 / (n + 2)``. The whole record counts, not only the votes on this coin, for the reason
    the prior mean is shared across concepts: carefulness shows in every classification (and
    bounding by the per-coin mass cost accuracy on the simulated crowd, whose rare concepts
    give careful volunteers few positives). The Beta prior alone does not bound skills, because
    its mean is itself near 1 wherever the crowd has not erred yet, and a few perfect-looking
    volunteers then veto clear majorities.
    """
    errors = np.maximum(mass - hits, 0.0)
    crowd = _crowd_error(hits, mass, succession, floor)
    prior = np.broadcast_to(crowd[None, :], errors.shape)
    if sharing is not None:
        expected = (mass * crowd[None, :]).sum(axis=1, keepdims=True)
        factor = (errors.sum(axis=1, keepdims=True) + sharing) / (expected + sharing)
        # A prior error rate above 0.5 would mean "worse than a coin"; leave that to the data.
        prior = np.clip(crowd[None, :] * factor, floor, 0.5)
    denominator = mass + strength
    # A group with no mass at all (no votes, or a zero prior strength) falls back to the prior.
    error = np.where(
        denominator > 1e-12,
        (errors + strength * prior) / np.maximum(denominator, 1e-12),
        prior,
    )
    if succession:
        bound = _succession(record, succession)
        # For a group without votes the bounds are the crowd's and 1/2: its prior lies between.
        error = np.clip(
            error, np.minimum(crowd[None, :], bound), np.maximum(crowd[None, :], 1.0 - bound)
        )
    return np.clip(1.0 - error, floor, 1 - floor)


@dataclass(frozen=True)
class _ClearMajorities:
    """Where an item's votes on a concept form a clear majority, and the rule that guards it.

    A clear majority: at least ``CLEAR_MAJORITY_VOTES`` classifications asked about the concept,
    of which at least ``CLEAR_MAJORITY_SHARE`` agree (ticked, or did not). ``ticked`` lists the flat
    ``item * n_concepts + concept`` cells where such a majority ticked (few: concepts are
    sparse); ``unticked`` marks the cells where one did not (most).
    """

    ticked: IntArray
    unticked: BoolArray  # (n_items * n_concepts,)

    @classmethod
    def build(cls, ticks: FloatArray, asked: IntArray) -> _ClearMajorities:
        """From ``(n_items, n_concepts)`` tick counts and classifications asked about them."""
        n = asked.astype(np.float64)
        # The slack keeps 2 of 3 a clear majority although 2/3 is inexact in floating point.
        needed = CLEAR_MAJORITY_SHARE * n - 1e-9
        enough = n >= CLEAR_MAJORITY_VOTES
        ticked = enough & (ticks >= needed)
        unticked = enough & (n - ticks >= needed)
        return cls(np.flatnonzero(ticked), unticked.ravel())

    def hold(self, log_odds: FloatArray, factor: float) -> FloatArray:
        """Apply the ``overrule_factor`` rule to an E-step's log-odds (in place where they are
        contiguous) and return them.

        Where the model's log-odds against a clear majority exceed ``-_HELD_LOG_ODDS``, they
        become ``max(-_HELD_LOG_ODDS, log_odds_against - log(factor))``: the odds against the
        majority divided by the factor, and never past the held value on the majority's side.
        Items where the model sides with the majority are left alone, and the result is
        continuous and monotone in the model's log-odds.
        """
        if factor < 1.0:
            raise ValueError(f"overrule_factor must be at least 1 (None: no rule), got {factor}")
        flat = log_odds.reshape(-1)
        shift = np.log(factor)
        # A clear majority ticked; the model leans (or nearly leans) towards "absent".
        lean = flat[self.ticked]
        doubt = lean < _HELD_LOG_ODDS
        flat[self.ticked[doubt]] = np.minimum(_HELD_LOG_ODDS, lean[doubt] + shift)
        # A clear majority did not tick; the model leans towards "present". Found through the
        # few cells leaning that way, not the many unticked ones.
        leaning = np.flatnonzero(flat > -_HELD_LOG_ODDS)
        doubt_cells = leaning[self.unticked[leaning]]
        flat[doubt_cells] = np.maximum(-_HELD_LOG_ODDS, flat[doubt_cells] - shift)
        return flat.reshape(log_odds.shape)


def dawid_skene_binary(
    votes: VoteMatrix,
    anchors: AnchorsLike = None,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    prior_strength: float = 2.0,
    sharing_strength: float | None = 5.0,
    succession: float | None = 1.0,
    overrule_factor: float | None = OVERRULE_FACTOR,
    pool_below: int | None = 0,
    pool_workers: ArrayLike | None = None,
) -> AggregationResult:
    """Two-coin Dawid-Skene per concept, fitted by EM over all votes and concepts at once.

    Model, for item i and concept c: the concept applies with prior probability ``prior[c]``;
    volunteer w ticks it with probability ``sensitivity[w, c]`` if it applies and
    ``1 - specificity[w, c]`` if not, independently across volunteers. The M-step is a MAP
    estimate under Beta priors centred on the crowd's pooled rate (``prior_strength``
    pseudo-votes), so a volunteer with three votes stays close to the average volunteer.

    Small data must not be overfitted (issue 17). Every skill stays within the rule of
    succession (``succession``): a volunteer with n classifications gets at most the larger of
    the crowd's skill and ``(n + 1) / (n + 2)``, never 1.0, and the crowd's own skill is bounded
    the same way by its whole record. And a clear majority (at least ``CLEAR_MAJORITY_VOTES`` = 3
    votes, at least ``CLEAR_MAJORITY_SHARE`` = 2/3 of them agreeing) is overruled only on
    evidence the item page can show: **the posterior lands on the minority's side only if the
    volunteers' skills and the concept's prior make the minority's answer at least
    ``overrule_factor`` times as likely as the majority's, and then with those odds divided by
    the factor; short of that it is held just on the majority's side of 0.5** (uncertain, so
    the item keeps collecting votes). The rule acts inside EM too, so a contested item cannot
    teach the skills that would overrule it. ``dawid_skene_binary_posteriors`` applies the same
    rule, so incremental and full passes agree. See ``OVERRULE_FACTOR`` for its default.

    Anchored (item, concept) pairs have their posterior fixed at 0/1 throughout EM, so curator
    decisions and gold-standard items teach the model how reliable each volunteer is.

    The defaults won on the benchmarks (``bench/README.md``): count-based pooling is off because
    pooling volunteers with fewer than 20 classifications cost accuracy both on D_Product (0.939
    to 0.937) and on the simulated crowd (micro-F1 -0.002), where the Beta prior already handles
    sparse volunteers; pass ``pool_below=20`` to follow the design note literally. Anonymous
    sessions should still be pooled through ``pool_workers``: they are not one person.

    Args:
        votes: the multi-label votes.
        anchors: known labels (curator decisions, gold standard).
        max_iter: upper bound on EM iterations.
        tol: stop when the log-likelihood changes by less than ``tol`` per vote and concept.
        prior_strength: pseudo-votes of the Beta prior towards the crowd's average skill.
        sharing_strength: pseudo-errors behind each volunteer's cross-concept error factor;
            None uses the plain per-concept crowd average as the prior mean.
        succession: pseudo-votes of the rule of succession that bounds every skill (1:
            Laplace's ``(n + 1) / (n + 2)`` for n classifications); None or 0 turns it off.
        overrule_factor: the odds a dissent needs against a clear majority
            (``OVERRULE_FACTOR``); None turns the rule off (plain Dawid-Skene).
        pool_below: volunteers with fewer classifications share one pooled skill
            (0 or None disables it).
        pool_workers: volunteers always pooled (boolean mask or indices), e.g. anonymous
            ``not-logged-in-*`` sessions.

    Returns:
        An ``AggregationResult`` with ``method="dawid_skene"``.
    """
    n_items, n_concepts = votes.n_items, votes.n_concepts
    fixed = anchors_to_array(anchors, n_items, n_concepts)
    known = ~np.isnan(fixed)
    item_votes = votes.item_vote_counts()
    asked = votes.asked_counts()
    # The class prior is estimated from items that carry information; unseen items (or items
    # nobody was asked about the concept) would only drag it towards itself.
    informative = (asked > 0) | known

    group, n_groups, pooled = _worker_groups(votes, pool_below, pool_workers)
    design = VoteDesign.build(votes, group, n_groups)
    # The pooled group is already a crowd average; shrinking it again would make the result
    # depend on how many volunteers happen to be pooled.
    strength = np.full((n_groups, 1), float(prior_strength))
    if pooled.any():
        strength[-1] = 0.0
    record = design.group_votes[:, None]

    crowd: list[FloatArray] = []  # the latest M-step's (sensitivity, specificity) prior means

    def m_step(post: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        stats = design.skill_counts(post)
        shrink = (strength, sharing_strength, succession, record)
        sensitivity = _shrink(stats.true_pos, stats.mass_pos, *shrink)
        specificity = _shrink(stats.true_neg, stats.mass_neg, *shrink)
        crowd[:] = [
            _unseen_skill(stats.true_pos, stats.mass_pos, sharing_strength, succession),
            _unseen_skill(stats.true_neg, stats.mass_neg, sharing_strength, succession),
        ]
        # With no information at all about a concept, the prior is an honest 0.5.
        prior = informative_mean(post, informative, np.full(n_concepts, 0.5))
        return sensitivity, specificity, np.clip(prior, _PROB_CLIP, 1 - _PROB_CLIP)

    # Initialise from the vote fractions, like crowd-kit's DawidSkene.
    ticks = np.asarray(design.ticks.sum(axis=1)).reshape(n_items, n_concepts)
    posteriors, _ = tick_fractions(ticks, asked, fixed)
    majorities = None
    if overrule_factor is not None:
        majorities = _ClearMajorities.build(ticks, asked)
    anchored = bool(known.any())
    sensitivity, specificity, prior = m_step(posteriors)
    trace: list[float] = []
    converged = False
    scale = max(int(asked.sum()) if votes.asked is not None else votes.n_votes * n_concepts, 1)
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        present, absent = design.log_evidence(sensitivity, specificity)
        log_present = np.log(prior)[None, :] + present
        log_absent = np.log1p(-prior)[None, :] + absent
        log_odds = log_present - log_absent
        if majorities is not None and overrule_factor is not None:
            log_odds = majorities.hold(log_odds, overrule_factor)
        posteriors = expit(log_odds)
        # Marginal log-likelihood of the votes; anchored pairs contribute their known branch.
        per_pair = np.logaddexp(log_present, log_absent)
        if anchored:
            posteriors[known] = fixed[known]
            per_pair[known] = np.where(fixed[known] == 1.0, log_present[known], log_absent[known])
        trace.append(float(per_pair.sum()))
        if len(trace) > 1 and abs(trace[-1] - trace[-2]) < tol * scale:
            converged = True
            break
        # No M-step after the last E-step: the returned skills and priors are the ones that
        # produced the returned posteriors (an unclassified item's posterior equals the prior).
        if iterations < max_iter:
            sensitivity, specificity, prior = m_step(posteriors)

    return AggregationResult(
        method="dawid_skene",
        posteriors=posteriors,
        sensitivity=sensitivity[group],
        specificity=specificity[group],
        worker_votes=votes.worker_asked_counts(),
        item_votes=item_votes,
        priors=prior,
        iterations=iterations,
        log_likelihood=trace,
        converged=converged,
        pooled=pooled,
        crowd_sensitivity=crowd[0],
        crowd_specificity=crowd[1],
        overrule_factor=overrule_factor,
    )


@dataclass(frozen=True, eq=False)
class TwoCoinParameters:
    """Fixed parameters of the two-coin model, for ``dawid_skene_binary_posteriors``.

    Attributes:
        sensitivity: ``(n_workers, n_concepts)`` P(tick | applies) per volunteer; NaN where the
            volunteer (or this concept of theirs) is unknown to the parameters.
        specificity: ``(n_workers, n_concepts)`` P(no tick | does not apply); NaN where unknown.
        priors: ``(n_concepts,)`` share of items to which each concept applies.
        crowd_sensitivity: ``(n_concepts,)`` what an unknown volunteer gets: the full pass's Beta
            prior mean (``AggregationResult.crowd_sensitivity``).
        crowd_specificity: ``(n_concepts,)`` likewise for the specificity.
        pooled_sensitivity: ``(n_concepts,)`` the skill every pooled volunteer shares, or None
            when the full pass pooled nobody.
        pooled_specificity: ``(n_concepts,)`` likewise, or None.
        overrule_factor: the full pass's odds for overruling a clear majority
            (``dawid_skene_binary``'s ``overrule_factor``); None for no such rule.
    """

    sensitivity: FloatArray
    specificity: FloatArray
    priors: FloatArray
    crowd_sensitivity: FloatArray
    crowd_specificity: FloatArray
    pooled_sensitivity: FloatArray | None = None
    pooled_specificity: FloatArray | None = None
    overrule_factor: float | None = OVERRULE_FACTOR

    @classmethod
    def from_result(cls, result: AggregationResult) -> TwoCoinParameters:
        """The parameters behind a ``dawid_skene_binary`` result's posteriors.

        Raises:
            ValueError: for a result without crowd-level skills (majority vote).
        """
        if result.crowd_sensitivity is None or result.crowd_specificity is None:
            raise ValueError(f"a {result.method!r} result has no crowd-level skill")
        # Every pooled volunteer carries the same pooled skill; the first one's will do.
        pooled = np.flatnonzero(result.pooled)[:1]
        return cls(
            sensitivity=result.sensitivity,
            specificity=result.specificity,
            priors=result.priors,
            crowd_sensitivity=result.crowd_sensitivity,
            crowd_specificity=result.crowd_specificity,
            pooled_sensitivity=result.sensitivity[pooled[0]] if pooled.size else None,
            pooled_specificity=result.specificity[pooled[0]] if pooled.size else None,
            overrule_factor=result.overrule_factor,
        )


def dawid_skene_binary_posteriors(
    votes: VoteMatrix,
    parameters: TwoCoinParameters,
    anchors: AnchorsLike = None,
    *,
    pool_workers: ArrayLike | None = None,
) -> AggregationResult:
    """The two-coin model's E-step alone: posteriors of ``votes``' items under fixed parameters.

    What an incremental aggregation runs on the items that got new votes, with the skills and
    priors of the last full ``dawid_skene_binary`` pass: given that pass's parameters, an item's
    posterior depends only on its own votes, so the E-step over a subset of items reproduces the
    full pass's posteriors for them. Skills are not re-estimated. A clear majority is overruled
    only as the full pass allows (``parameters.overrule_factor``; see ``dawid_skene_binary``):
    the rule, too, depends on nothing but the item's own votes and the parameters.

    A volunteer (or volunteer x concept) that ``parameters`` does not know (NaN) gets the crowd's
    average skill, the Beta prior mean the full pass gives a volunteer without votes. Volunteers
    in ``pool_workers`` (anonymous sessions) share the pooled skill, as in the full pass, when
    ``parameters`` has one; without one they are treated like everyone else.

    Args:
        votes: the votes of the items to score; ``worker_idx`` indexes ``parameters``' rows.
        parameters: fixed skills, class priors and crowd-level skills.
        anchors: known labels, which win over the votes.
        pool_workers: volunteers that share the pooled skill (boolean mask or indices).

    Returns:
        An ``AggregationResult`` (``method="dawid_skene"``, ``iterations=0``) whose
        ``sensitivity``/``specificity`` are the skills actually used.

    Raises:
        ValueError: when the parameters' shapes do not match the votes.
    """
    n_workers, n_concepts = votes.n_workers, votes.n_concepts
    skills = (n_workers, n_concepts)

    pooled = np.zeros(n_workers, dtype=bool)
    if pool_workers is not None:
        marked = np.asarray(pool_workers)
        if marked.dtype == np.bool_:
            if marked.shape != (n_workers,):
                raise ValueError("a boolean pool_workers must have shape (n_workers,)")
            pooled |= marked
        else:
            pooled[index_array(marked, "pool_workers")] = True

    def used(given: ArrayLike, crowd: ArrayLike, pooled_skill: ArrayLike | None) -> FloatArray:
        rates = np.asarray(given, dtype=np.float64)
        average = np.asarray(crowd, dtype=np.float64)
        if rates.shape != skills or average.shape != (n_concepts,):
            raise ValueError(
                f"skills must be {skills} and crowd skills ({n_concepts},), "
                f"got {rates.shape} and {average.shape}"
            )
        rates = np.where(np.isnan(rates), average[None, :], rates)
        if pooled_skill is not None and pooled.any():
            rates[pooled] = np.asarray(pooled_skill, dtype=np.float64)
        return np.clip(rates, _PROB_CLIP, 1 - _PROB_CLIP)

    sensitivity = used(
        parameters.sensitivity, parameters.crowd_sensitivity, parameters.pooled_sensitivity
    )
    specificity = used(
        parameters.specificity, parameters.crowd_specificity, parameters.pooled_specificity
    )
    prior = np.asarray(parameters.priors, dtype=np.float64)
    if prior.shape != (n_concepts,):
        raise ValueError(f"priors must be ({n_concepts},), got {prior.shape}")
    prior = np.clip(prior, _PROB_CLIP, 1 - _PROB_CLIP)

    fixed = anchors_to_array(anchors, votes.n_items, n_concepts)
    known = ~np.isnan(fixed)
    # Each volunteer is its own group: pooled ones already carry the shared skill.
    design = VoteDesign.build(votes, np.arange(n_workers), n_workers)
    present, absent = design.log_evidence(sensitivity, specificity)
    log_present = np.log(prior)[None, :] + present
    log_absent = np.log1p(-prior)[None, :] + absent
    log_odds = log_present - log_absent
    if parameters.overrule_factor is not None:
        ticks = np.asarray(design.ticks.sum(axis=1)).reshape(votes.n_items, n_concepts)
        majorities = _ClearMajorities.build(ticks, votes.asked_counts())
        log_odds = majorities.hold(log_odds, parameters.overrule_factor)
    posteriors = expit(log_odds)
    per_pair = np.logaddexp(log_present, log_absent)
    if known.any():
        posteriors[known] = fixed[known]
        per_pair[known] = np.where(fixed[known] == 1.0, log_present[known], log_absent[known])

    return AggregationResult(
        method="dawid_skene",
        posteriors=posteriors,
        sensitivity=sensitivity,
        specificity=specificity,
        worker_votes=votes.worker_asked_counts(),
        item_votes=votes.item_vote_counts(),
        priors=prior,
        iterations=0,
        log_likelihood=[float(per_pair.sum())],
        converged=True,
        pooled=pooled,
        crowd_sensitivity=np.asarray(parameters.crowd_sensitivity, dtype=np.float64),
        crowd_specificity=np.asarray(parameters.crowd_specificity, dtype=np.float64),
        overrule_factor=parameters.overrule_factor,
    )


# --------------------------------------------------------------------------------------------
# Retirement and registry
# --------------------------------------------------------------------------------------------


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
