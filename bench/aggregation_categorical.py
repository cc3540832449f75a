"""Single-answer (one-of-K) vote aggregation, the reference the benchmarks compare against.

``majority_vote_categorical`` (plurality, ties to the lowest answer as crowd-kit does) and
``dawid_skene_categorical`` (classic Dawid-Skene, one full confusion matrix per volunteer) run on
the public reference datasets (zheng2017) in ``bench/aggregation.py`` and
``tests/bench/test_aggregation_categorical.py``; ``CategoricalVotes.to_vote_matrix`` recasts
their votes for crowdloop's two-coin model (``ml.aggregation``). The product aggregates
multi-label votes only, so none of this is imported outside bench/ and its tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse
from scipy.special import logsumexp

from ml.aggregation import FloatArray, IntArray, VoteMatrix, index_array, index_size


@dataclass(frozen=True, eq=False)
class CategoricalVotes:
    """Single-answer votes: each classification picks one of ``n_classes`` answers.

    Attributes:
        item_idx: ``(n_votes,)`` item of each vote.
        worker_idx: ``(n_votes,)`` volunteer of each vote.
        label: ``(n_votes,)`` chosen answer in ``[0, n_classes)``.
        n_items: number of items.
        n_workers: number of volunteers.
        n_classes: number of possible answers.
    """

    item_idx: IntArray
    worker_idx: IntArray
    label: IntArray
    n_items: int
    n_workers: int
    n_classes: int

    @classmethod
    def from_arrays(
        cls,
        item_idx: ArrayLike,
        worker_idx: ArrayLike,
        label: ArrayLike,
        *,
        n_items: int | None = None,
        n_workers: int | None = None,
        n_classes: int | None = None,
    ) -> CategoricalVotes:
        """Build and validate categorical votes from plain arrays.

        Args:
            item_idx: ``(n_votes,)`` integer item index of each vote.
            worker_idx: ``(n_votes,)`` integer volunteer index of each vote.
            label: ``(n_votes,)`` integer answer in ``[0, n_classes)``.
            n_items: total number of items (default: largest index + 1).
            n_workers: total number of volunteers (default: largest index + 1).
            n_classes: number of answers (default: largest label + 1).

        Returns:
            The validated ``CategoricalVotes``.
        """
        items = index_array(item_idx, "item_idx")
        workers = index_array(worker_idx, "worker_idx")
        answers = index_array(label, "label")
        if not (len(items) == len(workers) == len(answers)):
            raise ValueError(
                f"item_idx, worker_idx and label differ in length: "
                f"{len(items)}, {len(workers)}, {len(answers)}"
            )
        return cls(
            item_idx=items,
            worker_idx=workers,
            label=answers,
            n_items=index_size(items, n_items, "n_items"),
            n_workers=index_size(workers, n_workers, "n_workers"),
            n_classes=max(index_size(answers, n_classes, "n_classes"), 1),
        )

    @property
    def n_votes(self) -> int:
        return int(self.item_idx.shape[0])

    def to_vote_matrix(self) -> VoteMatrix:
        """Recast as multi-label votes for the two-coin model.

        With two classes the result has one concept, "answer 1"; with more it is one-vs-rest, one
        concept per class.
        """
        if self.n_classes <= 2:
            ticks = (self.label == 1)[:, None]
        else:
            ticks = self.label[:, None] == np.arange(self.n_classes)[None, :]
        return VoteMatrix(
            item_idx=self.item_idx,
            worker_idx=self.worker_idx,
            labels=ticks.astype(np.uint8),
            n_items=self.n_items,
            n_workers=self.n_workers,
        )


@dataclass(frozen=True, eq=False)
class CategoricalResult:
    """Aggregated single-answer votes.

    Attributes:
        method: name of the method.
        posteriors: ``(n_items, n_classes)`` probability of each answer; rows sum to 1.
        labels: ``(n_items,)`` most probable answer; ties go to the lowest answer index.
        priors: ``(n_classes,)`` class prior.
        errors: ``(n_workers, n_classes, n_classes)`` confusion matrices,
            ``errors[w, observed, true]`` = P(worker w answers ``observed`` | truth is ``true``).
        iterations: EM iterations run (0 for majority vote).
        log_likelihood: marginal log-likelihood of the votes after each iteration.
        converged: whether the log-likelihood change fell below the tolerance.
    """

    method: str
    posteriors: FloatArray
    labels: IntArray
    priors: FloatArray
    errors: FloatArray
    iterations: int
    log_likelihood: list[float]
    converged: bool


def _categorical_counts(votes: CategoricalVotes) -> FloatArray:
    flat = votes.item_idx * votes.n_classes + votes.label
    counts = np.bincount(flat, minlength=votes.n_items * votes.n_classes)
    return counts.reshape(votes.n_items, votes.n_classes).astype(np.float64)


def _vote_fractions(votes: CategoricalVotes) -> FloatArray:
    counts = _categorical_counts(votes)
    per_item = counts.sum(axis=1, keepdims=True)
    overall = counts.sum(axis=0)
    overall = (
        overall / overall.sum() if overall.sum() else np.full(votes.n_classes, 1 / votes.n_classes)
    )
    # Items without votes get the overall answer distribution instead of 0/0.
    return np.where(per_item > 0, counts / np.maximum(per_item, 1), overall[None, :])


def majority_vote_categorical(votes: CategoricalVotes) -> CategoricalResult:
    """Plurality vote for single-answer questions.

    Ties go to the lowest answer index, as in crowd-kit's ``MajorityVote`` (its ``idxmax`` over
    label columns sorted ascending returns the first maximum).

    Args:
        votes: the categorical votes.

    Returns:
        A ``CategoricalResult`` whose posteriors are vote fractions and whose confusion matrices
        are one M-step against those fractions.
    """
    posteriors = _vote_fractions(votes)
    design = _CategoricalDesign.build(votes)
    errors = design.confusion(posteriors, smoothing=0.0)
    return CategoricalResult(
        method="majority",
        posteriors=posteriors,
        labels=np.argmax(posteriors, axis=1).astype(np.int64),
        priors=posteriors.mean(axis=0) if votes.n_items else np.zeros(votes.n_classes),
        errors=errors,
        iterations=0,
        log_likelihood=[],
        converged=True,
    )


# --------------------------------------------------------------------------------------------
# Classic (full confusion matrix) Dawid-Skene for single-answer questions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CategoricalDesign:
    """``votes``: ``(n_items, n_workers * K)`` sparse, 1 where item got answer k from worker w."""

    votes: sparse.csr_matrix
    votes_t: sparse.csr_matrix
    n_workers: int
    n_classes: int

    @classmethod
    def build(cls, votes: CategoricalVotes) -> _CategoricalDesign:
        k = votes.n_classes
        matrix = sparse.csr_matrix(
            (np.ones(votes.n_votes), (votes.item_idx, votes.worker_idx * k + votes.label)),
            shape=(votes.n_items, votes.n_workers * k),
        )
        return cls(matrix, matrix.T.tocsr(), votes.n_workers, k)

    def confusion(self, posteriors: FloatArray, smoothing: float) -> FloatArray:
        """``errors[w, observed, true]`` from expected counts plus Dirichlet pseudo-counts."""
        k = self.n_classes
        counts = np.asarray(self.votes_t @ posteriors).reshape(self.n_workers, k, k) + smoothing
        totals = counts.sum(axis=1, keepdims=True)
        # A worker who never saw an item of some true class gets a uniform column, not 0/0.
        return np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), 1.0 / k)

    def log_evidence(self, errors: FloatArray) -> FloatArray:
        log_errors = np.log(np.clip(errors, 1e-10, 1.0)).reshape(-1, self.n_classes)
        return np.asarray(self.votes @ log_errors)  # (n_items, K)


def dawid_skene_categorical(
    votes: CategoricalVotes,
    true_labels: Mapping[int, int] | ArrayLike | None = None,
    *,
    max_iter: int = 100,
    tol: float = 1e-5,
    smoothing: float = 0.01,
) -> CategoricalResult:
    """Classic Dawid-Skene: one full confusion matrix per volunteer, fitted by EM.

    Initialised from the vote fractions (as crowd-kit does). The confusion matrices get
    ``smoothing`` Dirichlet pseudo-counts per cell, which keeps log(0) out of the E-step.

    Args:
        votes: the categorical votes.
        true_labels: known answers (gold standard / curator), as ``{item: label}`` or an
            ``(n_items,)`` array with -1 for unknown; those items are fixed throughout EM.
        max_iter: upper bound on EM iterations.
        tol: stop when the log-likelihood changes by less than ``tol`` per vote.
        smoothing: Dirichlet pseudo-count added to every confusion-matrix cell.

    Returns:
        A ``CategoricalResult`` with ``method="dawid_skene"``.
    """
    k = votes.n_classes
    gold = np.full(votes.n_items, -1, dtype=np.int64)
    if isinstance(true_labels, Mapping):
        for item, answer in true_labels.items():
            gold[int(item)] = int(answer)
    elif true_labels is not None:
        gold = np.asarray(true_labels, dtype=np.int64)
        if gold.shape != (votes.n_items,):
            raise ValueError(f"true_labels must have shape ({votes.n_items},)")
    if (gold >= k).any():
        raise ValueError("a true label is out of range")
    known = gold >= 0
    gold_onehot = np.eye(k)[gold[known]]
    informative = (np.bincount(votes.item_idx, minlength=votes.n_items) > 0) | known

    design = _CategoricalDesign.build(votes)

    def m_step(post: FloatArray) -> tuple[FloatArray, FloatArray]:
        errors = design.confusion(post, smoothing)
        prior = post[informative].mean(axis=0) if informative.any() else np.full(k, 1 / k)
        return errors, np.clip(prior, 1e-10, 1.0)

    posteriors = _vote_fractions(votes)
    posteriors[known] = gold_onehot
    errors, prior = m_step(posteriors)
    trace: list[float] = []
    converged = False
    iterations = 0
    scale = max(votes.n_votes, 1)
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        log_joint = np.log(prior)[None, :] + design.log_evidence(errors)
        norm = logsumexp(log_joint, axis=1, keepdims=True)
        posteriors = np.exp(log_joint - norm)
        posteriors[known] = gold_onehot
        ll = np.where(known, log_joint[np.arange(votes.n_items), np.maximum(gold, 0)], norm[:, 0])
        trace.append(float(ll[informative].sum()))
        if len(trace) > 1 and abs(trace[-1] - trace[-2]) < tol * scale:
            converged = True
            break
        if iterations < max_iter:  # keep the returned parameters those of the last E-step
            errors, prior = m_step(posteriors)

    return CategoricalResult(
        method="dawid_skene",
        posteriors=posteriors,
        labels=np.argmax(posteriors, axis=1).astype(np.int64),
        priors=prior,
        errors=errors,
        iterations=iterations,
        log_likelihood=trace,
        converged=converged,
    )
