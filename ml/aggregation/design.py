"""The sparse incidence matrices of a ``VoteMatrix`` that turn each EM step into a few matrix
products, shared by the majority vote (one M-step) and the two-coin model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from ml.aggregation.votes import FloatArray, IntArray, VoteMatrix


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
