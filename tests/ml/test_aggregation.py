"""Vote aggregation: hand-checked EM steps, invariants, and reference-dataset regressions.

Reference figures come from ``../shared/docs/aggregation.md`` (crowd-kit 1.4.2 on the zheng2017
datasets). These tests need no Django settings.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ml import aggregation as agg
from ml.aggregation import VoteMatrix
from ml.aggregation import dawid_skene as two_coin
from tests.ml.crowds import BARE, simulate

REPO = Path(__file__).resolve().parents[2]


def micro_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = (pred & truth).sum()
    return float(2 * tp / (2 * tp + (pred & ~truth).sum() + (~pred & truth).sum()))


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def test_a_vote_matrix_counts_items_and_volunteers_from_the_largest_index():
    votes = VoteMatrix.from_arrays([0, 2], [1, 0], [[1, 0, 1], [0, 0, 0]])
    assert (votes.n_items, votes.n_workers, votes.n_votes, votes.n_concepts) == (3, 2, 2, 3)
    assert votes.labels.dtype == np.uint8
    assert votes.item_vote_counts().tolist() == [1, 0, 1]


def test_a_vote_matrix_refuses_labels_other_than_zero_and_one():
    with pytest.raises(ValueError, match="0/1"):
        VoteMatrix.from_arrays([0], [0], [[2]])


def test_a_vote_matrix_refuses_arrays_of_different_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        VoteMatrix.from_arrays([0, 1], [0], [[1], [0]])


def test_anchors_given_as_a_mapping_arrays_or_dense_matrix_agree():
    as_mapping = agg.anchors_to_array({(0, 1): 1, (2, 0): 0}, 3, 2)
    as_arrays = agg.anchors_to_array(([0, 2], [1, 0], [1, 0]), 3, 2)
    as_dense = agg.anchors_to_array(as_mapping, 3, 2)
    for other in (as_arrays, as_dense):
        np.testing.assert_array_equal(as_mapping, other)
    assert np.isnan(as_mapping).sum() == 4


def test_an_anchor_outside_the_items_is_refused():
    with pytest.raises(ValueError, match="out of range"):
        agg.anchors_to_array({(5, 0): 1}, 3, 1)


# --------------------------------------------------------------------------------------------
# Majority vote
# --------------------------------------------------------------------------------------------


def test_majority_vote_is_the_share_of_classifications_that_ticked_the_concept():
    votes = VoteMatrix.from_arrays(
        [0, 0, 0, 1], [0, 1, 2, 0], [[1, 0], [1, 0], [0, 1], [0, 0]], n_items=3
    )
    result = agg.majority_vote(votes)
    np.testing.assert_allclose(result.posteriors[:2], [[2 / 3, 1 / 3], [0, 0]])
    # The unclassified item gets the overall tick rate instead of 0/0.
    np.testing.assert_allclose(result.posteriors[2], [2 / 4, 1 / 4])
    assert result.item_votes.tolist() == [3, 1, 0]


# --------------------------------------------------------------------------------------------
# Two-coin Dawid-Skene, checked by hand
# --------------------------------------------------------------------------------------------


def two_volunteers_four_items() -> VoteMatrix:
    # item 0: both tick; item 1: neither; item 2: only A; item 3: only B.
    return VoteMatrix.from_arrays(
        [0, 0, 1, 1, 2, 2, 3, 3], [0, 1, 0, 1, 0, 1, 0, 1], [1, 1, 0, 0, 1, 0, 0, 1]
    )


def test_one_em_step_matches_the_hand_computation():
    # Start: vote fractions (1, 0, .5, .5). M-step: each volunteer ticks 1.5 of the 2 expected
    # positives and leaves 1.5 of the 2 expected negatives, so sensitivity = specificity = 0.75
    # and the prior is 0.5. E-step: two agreeing ticks give odds 3 x 3 = 9, i.e. 0.9; split
    # votes cancel out to 0.5.
    result = agg.dawid_skene_binary(two_volunteers_four_items(), max_iter=1, **BARE)
    np.testing.assert_allclose(result.posteriors[:, 0], [0.9, 0.1, 0.5, 0.5])
    # Marginal likelihood per item: 0.5 * 0.75^2 + 0.5 * 0.25^2 = 0.3125 for the agreeing
    # items, 0.75 * 0.25 = 0.1875 for the split ones.
    expected = 2 * np.log(0.3125) + 2 * np.log(0.1875)
    assert result.log_likelihood == pytest.approx([expected])
    assert result.iterations == 1 and not result.converged


def test_em_runs_on_until_the_log_likelihood_settles():
    # Three volunteers who mostly agree: EM trusts them more with every step.
    item = np.repeat(np.arange(6), 3)
    worker = np.tile([0, 1, 2], 6)
    ticks = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1]]).ravel()
    votes = VoteMatrix.from_arrays(item, worker, ticks)
    one_step = agg.dawid_skene_binary(votes, max_iter=1, **BARE)
    result = agg.dawid_skene_binary(votes, **BARE)
    assert result.converged and 1 < result.iterations < 100
    assert abs(result.log_likelihood[-1] - result.log_likelihood[-2]) < 1e-6 * votes.n_votes
    assert result.log_likelihood[-1] > result.log_likelihood[0]
    assert result.posteriors[2, 0] > one_step.posteriors[2, 0] > 0.5
    assert result.posteriors[5, 0] < one_step.posteriors[5, 0] < 0.5


def test_without_priors_the_log_likelihood_never_decreases():
    votes, _ = simulate(seed=3)
    trace = np.array(agg.dawid_skene_binary(votes, tol=0.0, max_iter=30, **BARE).log_likelihood)
    assert (np.diff(trace) >= -1e-6 * np.abs(trace[1:])).all()


# --------------------------------------------------------------------------------------------
# Invariants
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(agg.AGGREGATORS))
def test_every_registered_aggregator_returns_probabilities_of_the_right_shape(method):
    votes, _ = simulate(n_items=120, seed=1)
    result = agg.aggregate(method, votes)
    assert result.method == method
    assert result.posteriors.shape == (votes.n_items, votes.n_concepts)
    assert np.isfinite(result.posteriors).all()
    assert ((result.posteriors >= 0) & (result.posteriors <= 1)).all()
    for skill in (result.sensitivity, result.specificity):
        assert skill.shape == (votes.n_workers, votes.n_concepts)
        assert ((skill > 0) & (skill < 1)).all()
    assert result.worker_votes.shape == (votes.n_workers, votes.n_concepts)
    again = agg.aggregate(method, votes)
    np.testing.assert_array_equal(result.posteriors, again.posteriors)


def test_an_unknown_method_name_says_which_ones_exist():
    votes, _ = simulate(n_items=10)
    with pytest.raises(ValueError, match="dawid_skene, majority"):
        agg.aggregate("glad", votes)


def test_renumbering_the_volunteers_changes_nothing():
    votes, _ = simulate(seed=5)
    base = agg.dawid_skene_binary(votes)
    perm = np.random.default_rng(0).permutation(votes.n_workers)  # old id -> new id
    renamed = VoteMatrix.from_arrays(
        votes.item_idx, perm[votes.worker_idx], votes.labels, n_workers=votes.n_workers
    )
    result = agg.dawid_skene_binary(renamed)
    np.testing.assert_allclose(result.posteriors, base.posteriors, atol=1e-10)
    np.testing.assert_allclose(result.sensitivity[perm], base.sensitivity, atol=1e-10)


def test_reordering_items_and_classifications_changes_nothing():
    votes, _ = simulate(seed=6)
    base = agg.dawid_skene_binary(votes)
    rng = np.random.default_rng(1)
    item_perm = rng.permutation(votes.n_items)  # old id -> new id
    rows = rng.permutation(votes.n_votes)
    shuffled = VoteMatrix.from_arrays(
        item_perm[votes.item_idx[rows]], votes.worker_idx[rows], votes.labels[rows],
        n_items=votes.n_items, n_workers=votes.n_workers,
    )  # fmt: skip
    result = agg.dawid_skene_binary(shuffled)
    np.testing.assert_allclose(result.posteriors[item_perm], base.posteriors, atol=1e-10)


@pytest.mark.parametrize("options", [{}, {"pool_below": 15}])
def test_an_exact_duplicate_of_the_whole_input_gives_the_same_output_twice(options):
    # The copy gets its own item and volunteer ids: output = the original's, once per copy.
    votes, _ = simulate(seed=7)
    base = agg.dawid_skene_binary(votes, **options)
    doubled = VoteMatrix.from_arrays(
        np.concatenate([votes.item_idx, votes.item_idx + votes.n_items]),
        np.concatenate([votes.worker_idx, votes.worker_idx + votes.n_workers]),
        np.concatenate([votes.labels, votes.labels]),
        n_items=2 * votes.n_items, n_workers=2 * votes.n_workers,
    )  # fmt: skip
    result = agg.dawid_skene_binary(doubled, **options)
    np.testing.assert_allclose(result.posteriors, np.tile(base.posteriors, (2, 1)), atol=1e-9)
    np.testing.assert_allclose(result.priors, base.priors, atol=1e-12)


def test_a_spammer_moves_the_posterior_less_than_a_careful_volunteer():
    votes, _ = simulate(n_items=400, n_concepts=4, seed=8)
    careful_id, spammer_id = votes.n_workers, votes.n_workers + 1
    rng = np.random.default_rng(2)
    # Give both newcomers a long track record: the careful one copies the crowd's majority,
    # the spammer ticks at random.
    majority = agg.majority_vote(votes).labels
    history = np.arange(votes.n_items)
    careful_ticks = majority.astype(np.uint8)
    spam_ticks = (rng.random((votes.n_items, votes.n_concepts)) < 0.5).astype(np.uint8)
    target = votes.n_items  # a new item with one tick and one "no" from ordinary volunteers
    ordinary = [0, 1]

    def posterior_with(extra_worker: int | None) -> float:
        item = [votes.item_idx, history, history, [target, target]]
        worker = [votes.worker_idx, np.full(votes.n_items, careful_id),
                  np.full(votes.n_items, spammer_id), ordinary]  # fmt: skip
        labels = [votes.labels, careful_ticks, spam_ticks, [[1, 0, 0, 0], [0, 0, 0, 0]]]
        if extra_worker is not None:
            item.append([target])
            worker.append([extra_worker])
            labels.append([[1, 0, 0, 0]])
        extended = VoteMatrix.from_arrays(
            np.concatenate(item), np.concatenate(worker), np.concatenate(labels),
            n_items=votes.n_items + 1, n_workers=votes.n_workers + 2,
        )  # fmt: skip
        return float(agg.dawid_skene_binary(extended).posteriors[target, 0])

    before = posterior_with(None)
    moved_by_careful = posterior_with(careful_id) - before
    moved_by_spammer = posterior_with(spammer_id) - before
    assert moved_by_careful > 0.2
    assert abs(moved_by_spammer) < moved_by_careful / 3


def test_anchors_fix_their_posteriors_and_teach_volunteer_skills():
    # Volunteer 0 always ticks, 1 and 2 never do; the crowd says "absent" everywhere, but a
    # curator says the concept is present on items 0-9, which shows that 1 and 2 miss it.
    n_items = 20
    item = np.repeat(np.arange(n_items), 3)
    worker = np.tile([0, 1, 2], n_items)
    labels = (worker == 0).astype(np.uint8)
    votes = VoteMatrix.from_arrays(item, worker, labels)
    free = agg.dawid_skene_binary(votes)
    anchors = {(i, 0): 1 for i in range(10)}
    anchored = agg.dawid_skene_binary(votes, anchors)
    np.testing.assert_array_equal(anchored.posteriors[:10, 0], 1.0)
    assert (free.posteriors[:10, 0] < 0.5).all()
    assert anchored.sensitivity[1, 0] < free.sensitivity[1, 0] - 0.2
    assert anchored.sensitivity[0, 0] > free.sensitivity[0, 0]


def test_anchors_fix_majority_vote_posteriors_too():
    votes = VoteMatrix.from_arrays([0, 0], [0, 1], [[1], [1]])
    result = agg.aggregate("majority", votes, anchors={(0, 0): 0})
    assert result.posteriors[0, 0] == 0.0


def test_items_nobody_classified_get_the_prior_and_nothing_is_nan():
    votes, _ = simulate(n_items=200, seed=9)
    padded = VoteMatrix.from_arrays(
        votes.item_idx, votes.worker_idx, votes.labels, n_items=250, n_workers=votes.n_workers + 5
    )
    result = agg.dawid_skene_binary(padded)
    np.testing.assert_allclose(result.posteriors[200:], np.tile(result.priors, (50, 1)))
    assert np.isfinite(result.sensitivity).all() and np.isfinite(result.specificity).all()


def test_no_votes_at_all_gives_an_even_prior():
    empty = VoteMatrix.from_arrays(
        np.zeros(0, dtype=int), np.zeros(0, dtype=int), np.zeros((0, 3)), n_items=4, n_workers=2
    )
    for method in agg.AGGREGATORS:
        np.testing.assert_allclose(agg.aggregate(method, empty).posteriors, 0.5)


def test_rare_and_marked_volunteers_share_one_pooled_skill():
    votes, _ = simulate(seed=10)
    counts = votes.worker_vote_counts()
    anonymous = np.zeros(votes.n_workers, dtype=bool)
    anonymous[np.argmax(counts)] = True
    result = agg.dawid_skene_binary(votes, pool_below=20, pool_workers=anonymous)
    expected = (counts < 20) | anonymous
    np.testing.assert_array_equal(result.pooled, expected)
    pooled_skills = result.sensitivity[expected]
    np.testing.assert_array_equal(pooled_skills, pooled_skills[[0] * len(pooled_skills)])
    assert not agg.dawid_skene_binary(votes).pooled.any()


def test_two_coin_beats_majority_vote_on_a_simulated_crowd_at_five_and_ten_votes():
    for votes_per_item in (5, 10):
        votes, truth = simulate(n_items=1500, votes_per_item=votes_per_item, seed=11)
        mv = agg.majority_vote(votes).labels
        ds = agg.dawid_skene_binary(votes).labels
        assert micro_f1(ds, truth) > micro_f1(mv, truth)
        assert (ds == truth).all(axis=1).mean() > (mv == truth).all(axis=1).mean()


# --------------------------------------------------------------------------------------------
# Retirement
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# The E-step alone, under fixed parameters (incremental aggregation)
# --------------------------------------------------------------------------------------------


def votes_of_items(votes: VoteMatrix, items: np.ndarray) -> VoteMatrix:
    """The votes of ``items`` (sorted), renumbered in that order; volunteers keep their index."""
    keep = np.isin(votes.item_idx, items)
    return VoteMatrix.from_arrays(
        np.searchsorted(items, votes.item_idx[keep]),
        votes.worker_idx[keep],
        votes.labels[keep],
        n_items=len(items),
        n_workers=votes.n_workers,
        asked=None if votes.asked is None else votes.asked[keep],
    )


def test_the_e_step_on_a_subset_of_items_reproduces_the_full_pass_for_them():
    votes, truth = simulate(n_items=600, seed=21)
    anonymous = np.zeros(votes.n_workers, dtype=bool)
    anonymous[::7] = True
    anchors = {(i, c): int(truth[i, c]) for i in range(0, 600, 25) for c in range(2)}
    full = agg.dawid_skene_binary(votes, anchors, pool_workers=anonymous)
    assert full.pooled.any()

    subset = np.arange(3, 600, 9)
    position = {int(item): k for k, item in enumerate(subset)}
    sub_anchors = {(position[i], c): v for (i, c), v in anchors.items() if i in position}
    assert sub_anchors  # the subset holds anchored items too
    result = agg.dawid_skene_binary_posteriors(
        votes_of_items(votes, subset),
        agg.TwoCoinParameters.from_result(full),
        sub_anchors,
        pool_workers=anonymous,
    )
    np.testing.assert_allclose(result.posteriors, full.posteriors[subset], rtol=0, atol=1e-6)
    assert result.iterations == 0 and result.method == "dawid_skene"
    np.testing.assert_array_equal(result.item_votes, full.item_votes[subset])


def test_a_volunteer_without_votes_in_the_full_pass_gets_the_crowd_skill_it_reports():
    votes, _ = simulate(seed=22)
    with_idle = VoteMatrix.from_arrays(
        votes.item_idx, votes.worker_idx, votes.labels, n_workers=votes.n_workers + 1
    )
    for options in ({}, {"sharing_strength": None}, {"prior_strength": 0.0}):
        full = agg.dawid_skene_binary(with_idle, **options)
        np.testing.assert_allclose(full.sensitivity[-1], full.crowd_sensitivity, atol=1e-12)
        np.testing.assert_allclose(full.specificity[-1], full.crowd_specificity, atol=1e-12)


def test_volunteers_unknown_to_the_parameters_get_the_crowd_average_or_the_pooled_skill():
    votes, _ = simulate(n_items=300, n_workers=40, seed=23)
    anonymous = np.zeros(votes.n_workers, dtype=bool)
    anonymous[:5] = True
    params = agg.TwoCoinParameters.from_result(
        agg.dawid_skene_binary(votes, pool_workers=anonymous)
    )
    # Three new volunteers: two logged in (one known on concept 0 only), one anonymous.
    n_workers = votes.n_workers + 3
    sensitivity = np.vstack([params.sensitivity, np.full((3, votes.n_concepts), np.nan)])
    specificity = np.vstack([params.specificity, np.full((3, votes.n_concepts), np.nan)])
    sensitivity[-3, 0], specificity[-3, 0] = 0.99, 0.98
    known = agg.TwoCoinParameters(
        sensitivity=sensitivity,
        specificity=specificity,
        priors=params.priors,
        crowd_sensitivity=params.crowd_sensitivity,
        crowd_specificity=params.crowd_specificity,
        pooled_sensitivity=params.pooled_sensitivity,
        pooled_specificity=params.pooled_specificity,
    )
    new_votes = VoteMatrix.from_arrays(
        [0, 0, 0, 1, 1],
        [n_workers - 3, n_workers - 2, n_workers - 1, n_workers - 2, 7],
        np.eye(5, votes.n_concepts, dtype=np.uint8),
        n_workers=n_workers,
    )
    pooled = np.concatenate([anonymous, [False, False, True]])
    result = agg.dawid_skene_binary_posteriors(new_votes, known, pool_workers=pooled)

    np.testing.assert_allclose(result.sensitivity[-3, 0], 0.99)
    np.testing.assert_allclose(result.sensitivity[-3, 1:], params.crowd_sensitivity[1:])
    np.testing.assert_allclose(result.sensitivity[-2], params.crowd_sensitivity)
    np.testing.assert_allclose(result.specificity[-2], params.crowd_specificity)
    np.testing.assert_allclose(result.sensitivity[-1], params.pooled_sensitivity)
    np.testing.assert_allclose(result.specificity[-1], params.pooled_specificity)
    np.testing.assert_allclose(result.sensitivity[7], params.sensitivity[7])
    assert not np.isnan(result.posteriors).any()

    # Spelling the crowd skill out for the unknown volunteer gives the same posteriors.
    explicit = np.array(sensitivity)
    explicit[-2] = params.crowd_sensitivity
    spelled = agg.TwoCoinParameters(
        sensitivity=explicit,
        specificity=np.where(np.isnan(specificity), params.crowd_specificity, specificity),
        priors=params.priors,
        crowd_sensitivity=params.crowd_sensitivity,
        crowd_specificity=params.crowd_specificity,
        pooled_sensitivity=params.pooled_sensitivity,
        pooled_specificity=params.pooled_specificity,
    )
    again = agg.dawid_skene_binary_posteriors(new_votes, spelled, pool_workers=pooled)
    np.testing.assert_allclose(again.posteriors, result.posteriors, atol=1e-12)


def test_in_the_e_step_anchors_win_and_unvoted_items_get_the_prior():
    votes, _ = simulate(n_items=200, seed=24)
    params = agg.TwoCoinParameters.from_result(agg.dawid_skene_binary(votes))
    everyone = VoteMatrix.from_arrays(
        [0] * 6, np.arange(6), np.ones((6, votes.n_concepts), dtype=np.uint8),
        n_items=2, n_workers=votes.n_workers,
    )  # fmt: skip
    free = agg.dawid_skene_binary_posteriors(everyone, params)
    assert (free.posteriors[0] > 0.9).all()
    np.testing.assert_allclose(free.posteriors[1], params.priors)
    anchored = agg.dawid_skene_binary_posteriors(everyone, params, {(0, 2): 0, (1, 0): 1})
    assert anchored.posteriors[0, 2] == 0.0 and anchored.posteriors[1, 0] == 1.0
    np.testing.assert_allclose(anchored.posteriors[0, :2], free.posteriors[0, :2])


def test_the_e_step_refuses_parameters_of_the_wrong_shape_and_majority_has_none():
    votes, _ = simulate(n_items=50, seed=25)
    params = agg.TwoCoinParameters.from_result(agg.dawid_skene_binary(votes))
    fewer = VoteMatrix.from_arrays([0], [0], np.ones((1, votes.n_concepts)), n_workers=3)
    with pytest.raises(ValueError, match="skills must be"):
        agg.dawid_skene_binary_posteriors(fewer, params)
    with pytest.raises(ValueError, match="no crowd-level skill"):
        agg.TwoCoinParameters.from_result(agg.majority_vote(votes))


def test_an_item_is_settled_only_when_every_concept_is_confidently_near_zero_or_one():
    posteriors = np.array([[0.99, 0.01], [0.99, 0.5], [0.96, 0.04], [0.949, 0.0]])
    decision = agg.retirement_decide(posteriors, confidence=0.95)
    assert decision.settled.tolist() == [True, False, True, False]
    assert decision.unsettled_concepts.tolist() == [0, 1, 0, 1]


def test_retirement_waits_for_the_minimum_votes_and_stops_at_the_cap():
    posteriors = np.array([[0.99], [0.99], [0.6]])
    decision = agg.retirement_decide(
        posteriors, confidence=[0.95], vote_counts=[2, 5, 12], min_votes=3, max_votes=12
    )
    assert decision.retire.tolist() == [False, True, True]


def test_retirement_refuses_a_confidence_at_or_below_one_half():
    with pytest.raises(ValueError, match="confidence"):
        agg.retirement_decide(np.array([[0.5]]), confidence=0.5)


# --------------------------------------------------------------------------------------------
# Small data: bounded skills and clear majorities (issue 17)
# --------------------------------------------------------------------------------------------

PLAYING = 1  # column of "Playing"; column 0 is "Other"


def three_playing_against_one_other() -> tuple[VoteMatrix, int]:
    """A small project in which several volunteers look perfect, then disagree.

    D, E and F tick "Playing" on six items and "Other" on six more, never wrong; A, B and C each
    saw two Playing items (ticked) and two Other items, on one of which they also ticked
    Playing. On the last item A, B and C tick "Playing" and D ticks "Other". Before issue 17,
    EM decided the last item shows no play, which made all six volunteers' sensitivity 1.0
    (above 0.9995) and D's missing tick a veto: posterior 0.002 against three votes.
    """
    a, b, c, d, e, f = range(6)
    rows: list[tuple[int, int, tuple[int, int]]] = []
    for i in range(6):
        rows += [(i, w, (0, 1)) for w in (d, e, f, (a, b, c)[i % 3])]
    for i in range(6):
        also = (a, b, c)[i % 3]
        rows += [(6 + i, w, (1, 0)) for w in (d, e, f)]
        rows.append((6 + i, also, (1, int(i < 3))))
    target = 12
    rows += [(target, w, (0, 1)) for w in (a, b, c)] + [(target, d, (1, 0))]
    item, worker, ticks = zip(*rows, strict=True)
    return VoteMatrix.from_arrays(item, worker, ticks), target


def test_three_playing_votes_are_not_overruled_by_one_perfect_looking_volunteer():
    votes, target = three_playing_against_one_other()
    result = agg.dawid_skene_binary(votes)
    assert result.posteriors[target, PLAYING] > 0.5
    assert result.labels[target, PLAYING]
    # Held, not settled: the item stays uncertain and keeps collecting votes.
    assert result.posteriors[target, PLAYING] < 0.51
    # The skills alone (bounded, but without the rule) would still have let D win, mildly.
    unruled = agg.dawid_skene_binary(votes, overrule_factor=None)
    assert 0.1 < unruled.posteriors[target, PLAYING] < 0.5


def test_no_volunteer_with_few_classifications_reaches_a_skill_of_one():
    small, _ = simulate(n_items=40, n_concepts=4, votes_per_item=4, n_workers=15, seed=31)
    for votes in (three_playing_against_one_other()[0], small):
        result = agg.dawid_skene_binary(votes)
        n = votes.worker_vote_counts()[:, None]
        few = n[:, 0] < 20
        assert few.sum() >= 6
        succession = (n + 1) / (n + 2)
        for skill, crowd in (
            (result.sensitivity, result.crowd_sensitivity),
            (result.specificity, result.crowd_specificity),
        ):
            # What the skills table stores (six decimals) is never 1.0 ...
            assert (np.round(skill, 6) < 1.0).all()
            assert (crowd < 0.999).all()
            # ... and nobody is surer than both the crowd and their own record allow.
            bound = np.maximum(crowd[None, :], succession)
            assert (skill[few] <= bound[few] + 1e-12).all()
    # Without the bound and the rule (the model before issue 17), all six look perfect.
    bare = agg.dawid_skene_binary(
        three_playing_against_one_other()[0], succession=None, overrule_factor=None
    )
    assert (bare.sensitivity[:, PLAYING] > 0.9995).all()


def skills_of(sensitivity: list[float], specificity: list[float], prior: float = 0.5):
    """One-concept parameters for volunteers with the given skills."""
    return agg.TwoCoinParameters(
        sensitivity=np.array(sensitivity)[:, None],
        specificity=np.array(specificity)[:, None],
        priors=np.array([prior]),
        crowd_sensitivity=np.array([0.8]),
        crowd_specificity=np.array([0.9]),
    )


def test_a_clear_majority_needs_odds_of_the_overrule_factor_against_it():
    # Three volunteers tick, volunteer 3 does not: a clear majority for "present".
    votes = VoteMatrix.from_arrays([0, 0, 0, 0], [0, 1, 2, 3], [1, 1, 1, 0])
    factor = agg.OVERRULE_FACTOR
    # Each tick multiplies the odds by 0.55 / 0.5 = 1.1; the dissent's missing tick divides
    # them by 0.95 / 0.05 = 19 (a clearly better volunteer) or by 0.6 / 0.4 = 1.5 (barely).
    clearly = skills_of([0.55, 0.55, 0.55, 0.95], [0.5, 0.5, 0.5, 0.95])
    barely = skills_of([0.55, 0.55, 0.55, 0.6], [0.5, 0.5, 0.5, 0.6])
    for parameters, against in ((clearly, 19 / 1.1**3), (barely, 1.5 / 1.1**3)):
        plain = dataclasses.replace(parameters, overrule_factor=None)
        unruled = agg.dawid_skene_binary_posteriors(votes, plain).posteriors[0, 0]
        assert unruled == pytest.approx(1 / (1 + against))
        ruled = agg.dawid_skene_binary_posteriors(votes, parameters).posteriors[0, 0]
        if against >= factor:  # the better volunteer wins, with odds divided by the factor
            assert ruled == pytest.approx(1 / (1 + against / factor))
            assert ruled < 0.1
        else:  # held just on the majority's side
            assert 0.5 < ruled < 0.51
    with pytest.raises(ValueError, match="at least 1"):
        agg.dawid_skene_binary_posteriors(votes, dataclasses.replace(clearly, overrule_factor=0.5))
    # The prior is evidence too: a rare concept lets even the barely better dissent win.
    rare = dataclasses.replace(barely, priors=np.array([0.2]))
    assert agg.dawid_skene_binary_posteriors(votes, rare).posteriors[0, 0] < 0.5
    # Two of three is a clear majority; two of four is not. Each dissent divides the odds by
    # 0.52 / 0.4 = 1.3, against 1.1 per tick: slightly better, not by the factor.
    params = skills_of([0.55, 0.55, 0.6, 0.6], [0.5, 0.5, 0.52, 0.52])
    two_of_three = VoteMatrix.from_arrays([0, 0, 0], [0, 1, 2], [1, 1, 0], n_workers=4)
    two_of_four = VoteMatrix.from_arrays([0, 0, 0, 0], [0, 1, 2, 3], [1, 1, 0, 0])
    assert 0.5 < agg.dawid_skene_binary_posteriors(two_of_three, params).posteriors[0, 0] < 0.51
    assert agg.dawid_skene_binary_posteriors(two_of_four, params).posteriors[0, 0] < 0.5


def expert_among_coin_flippers() -> tuple[VoteMatrix, dict[tuple[int, int], int], int]:
    """Gold items show an expert (volunteer 3) always right and three volunteers ticking at
    random; on the last item the three tick and the expert does not."""
    rng = np.random.default_rng(5)
    n_gold = 60
    truth = np.arange(n_gold) % 2
    item = np.repeat(np.arange(n_gold), 4)
    worker = np.tile([0, 1, 2, 3], n_gold)
    ticks = np.where(worker == 3, truth[item], rng.random(item.size) < 0.5)
    target = n_gold
    votes = VoteMatrix.from_arrays(
        np.concatenate([item, [target] * 4]),
        np.concatenate([worker, [0, 1, 2, 3]]),
        np.concatenate([ticks, [1, 1, 1, 0]]),
    )
    return votes, {(i, 0): int(truth[i]) for i in range(n_gold)}, target


def test_a_clear_majority_falls_to_a_dissent_from_clearly_better_volunteers():
    votes, gold, target = expert_among_coin_flippers()
    result = agg.dawid_skene_binary(votes, gold)
    assert result.specificity[3, 0] > 0.9 and result.sensitivity[3, 0] > 0.9
    assert (result.specificity[:3, 0] < 0.7).all()
    assert result.posteriors[target, 0] < 0.1


def test_posteriors_against_a_clear_majority_follow_the_rule_on_a_simulated_crowd():
    votes, _ = simulate(n_items=600, votes_per_item=5, seed=32)
    result = agg.dawid_skene_binary(votes)
    params = agg.TwoCoinParameters.from_result(result)
    unruled = agg.dawid_skene_binary_posteriors(
        votes, dataclasses.replace(params, overrule_factor=None)
    ).posteriors
    fraction = votes.positive_counts() / votes.item_vote_counts()[:, None]
    clear = np.abs(fraction - 0.5) >= 1 / 6 - 1e-9  # 5 votes: 4 or 5 agree
    majority = fraction > 0.5
    odds_against = np.where(majority, 1 - unruled, unruled) / np.where(
        majority, unruled, 1 - unruled
    )
    factor, hold = agg.OVERRULE_FACTOR, two_coin._HELD_LOG_ODDS
    against = clear & (result.labels != majority)
    assert against.any()  # the rule is not "the majority always wins"
    assert (odds_against[against] >= factor).all()
    # Beyond the factor, the odds against the majority are the model's divided by it ...
    beyond = clear & (odds_against >= factor * np.exp(-hold))
    assert (beyond >= against).all()
    posterior_odds = np.where(majority, 1 - result.posteriors, result.posteriors)
    posterior_odds = posterior_odds / (1 - posterior_odds)
    np.testing.assert_allclose(posterior_odds[beyond], odds_against[beyond] / factor)
    # ... and short of it, where the model leans against the majority, held on its side.
    held = clear & (odds_against > np.exp(-hold)) & ~beyond
    assert held.any()
    towards_majority = np.where(majority, result.posteriors, 1 - result.posteriors)
    np.testing.assert_allclose(towards_majority[held], 1 / (1 + np.exp(-hold)))
    # Where the votes are split, the model decides alone.
    split = ~clear
    np.testing.assert_allclose(result.posteriors[split], unruled[split], atol=1e-12)


def test_the_e_step_holds_and_overrules_clear_majorities_exactly_as_the_full_pass():
    small, target = three_playing_against_one_other()
    expert, gold, expert_target = expert_among_coin_flippers()
    for votes, anchors, item in ((small, None, target), (expert, gold, expert_target)):
        full = agg.dawid_skene_binary(votes, anchors)
        params = agg.TwoCoinParameters.from_result(full)
        assert params.overrule_factor == agg.OVERRULE_FACTOR
        alone = agg.dawid_skene_binary_posteriors(votes_of_items(votes, np.array([item])), params)
        np.testing.assert_allclose(alone.posteriors[0], full.posteriors[item], rtol=0, atol=1e-9)
        # The service builds its parameters without naming the factor: the default matches.
        rebuilt = agg.TwoCoinParameters(
            sensitivity=params.sensitivity,
            specificity=params.specificity,
            priors=params.priors,
            crowd_sensitivity=params.crowd_sensitivity,
            crowd_specificity=params.crowd_specificity,
        )
        again = agg.dawid_skene_binary_posteriors(votes_of_items(votes, np.array([item])), rebuilt)
        np.testing.assert_allclose(again.posteriors, alone.posteriors, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# A vote is only what the volunteer was asked (issue 17)
# --------------------------------------------------------------------------------------------


def with_unasked(votes: VoteMatrix, concept: int, share: float, seed: int) -> VoteMatrix:
    """``votes`` where a random ``share`` of the classifications was not asked about
    ``concept`` (an older workflow version without it); their ticks of it are dropped."""
    rng = np.random.default_rng(seed)
    asked = np.ones(votes.labels.shape, dtype=bool)
    asked[rng.random(votes.n_votes) < share, concept] = False
    return VoteMatrix.from_arrays(
        votes.item_idx,
        votes.worker_idx,
        votes.labels,
        n_items=votes.n_items,
        n_workers=votes.n_workers,
        asked=asked,
    )


def asked_only(votes: VoteMatrix, concept: int) -> VoteMatrix:
    """The one-concept matrix of ``concept`` without the classifications not asked about it."""
    keep = np.ones(votes.n_votes, dtype=bool) if votes.asked is None else votes.asked[:, concept]
    return VoteMatrix.from_arrays(
        votes.item_idx[keep],
        votes.worker_idx[keep],
        votes.labels[keep, concept],
        n_items=votes.n_items,
        n_workers=votes.n_workers,
    )


def test_a_mask_that_asks_everything_is_no_mask_and_a_wrong_shape_is_refused():
    votes = VoteMatrix.from_arrays([0, 1], [0, 1], [[1, 0], [0, 1]], asked=np.ones((2, 2)))
    assert votes.asked is None
    masked = VoteMatrix.from_arrays([0, 1], [0, 1], [[1, 0], [0, 1]], asked=[[1, 0], [1, 1]])
    assert masked.asked is not None
    assert masked.asked_counts().tolist() == [[1, 0], [1, 1]]
    assert masked.worker_asked_counts().tolist() == [[1, 0], [1, 1]]
    with pytest.raises(ValueError, match="asked"):
        VoteMatrix.from_arrays([0], [0], [[1, 0]], asked=[[True]])


def test_a_tick_where_the_concept_was_not_asked_is_dropped():
    votes = VoteMatrix.from_arrays([0, 0], [0, 1], [[1, 1], [1, 0]], asked=[[1, 0], [1, 1]])
    assert votes.labels.tolist() == [[1, 0], [1, 0]]


def test_majority_vote_counts_only_the_classifications_asked_about_the_concept():
    # Item 0: three classifications; the second was not asked about concept 1 (its tick is
    # dropped). Item 1: nobody was asked about concept 1, so it gets the concept's overall rate.
    votes = VoteMatrix.from_arrays(
        [0, 0, 0, 1, 1],
        [0, 1, 2, 0, 1],
        [[1, 1], [1, 1], [0, 0], [1, 0], [0, 0]],
        asked=[[1, 1], [1, 0], [1, 1], [1, 0], [1, 0]],
    )
    result = agg.majority_vote(votes)
    np.testing.assert_allclose(result.posteriors, [[2 / 3, 1 / 2], [1 / 2, 1 / 2]])
    assert result.item_votes.tolist() == [3, 2]
    assert result.worker_votes.tolist() == [[2, 1], [2, 0], [1, 1]]
    # The same as the votes without the unasked cells, concept by concept.
    alone = agg.majority_vote(asked_only(votes, 1))
    np.testing.assert_allclose(result.posteriors[:, 1], alone.posteriors[:, 0])
    np.testing.assert_allclose(result.sensitivity[:, 1], alone.sensitivity[:, 0])
    np.testing.assert_allclose(result.specificity[:, 1], alone.specificity[:, 0])


def test_a_concept_not_asked_gives_no_evidence_and_no_skill_counts():
    full, _ = simulate(n_items=300, n_concepts=3, seed=41)
    votes = with_unasked(full, concept=2, share=0.4, seed=42)
    alone = asked_only(votes, 2)
    workers = np.arange(votes.n_workers)
    design = agg.VoteDesign.build(votes, workers, votes.n_workers)
    plain = agg.VoteDesign.build(full, workers, votes.n_workers)
    single = agg.VoteDesign.build(alone, workers, votes.n_workers)
    rng = np.random.default_rng(43)
    posteriors = rng.random((votes.n_items, 3))
    sensitivity = rng.uniform(0.5, 0.95, (votes.n_workers, 3))
    specificity = rng.uniform(0.5, 0.95, (votes.n_workers, 3))

    # Concept 2 counts only the votes asked about it; the other concepts are untouched.
    counts, plain_counts = design.skill_counts(posteriors), plain.skill_counts(posteriors)
    single_counts = single.skill_counts(posteriors[:, 2:])
    for name in ("true_pos", "mass_pos", "true_neg", "mass_neg"):
        ours = getattr(counts, name)
        np.testing.assert_allclose(ours[:, 2:], getattr(single_counts, name), atol=1e-9)
        np.testing.assert_allclose(ours[:, :2], getattr(plain_counts, name)[:, :2], atol=1e-9)
    evidence = design.log_evidence(sensitivity, specificity)
    plain_evidence = plain.log_evidence(sensitivity, specificity)
    single_evidence = single.log_evidence(sensitivity[:, 2:], specificity[:, 2:])
    for ours, theirs, whole in zip(evidence, single_evidence, plain_evidence, strict=True):
        np.testing.assert_allclose(ours[:, 2:], theirs, atol=1e-9)
        np.testing.assert_allclose(ours[:, :2], whole[:, :2], atol=1e-9)

    # A whole EM run on one concept: the unasked classifications are as if they were not there.
    one = with_unasked(asked_only(full, 2), concept=0, share=0.4, seed=42)
    without = asked_only(one, 0)
    assert without.n_votes < one.n_votes
    masked_result, dropped_result = agg.dawid_skene_binary(one), agg.dawid_skene_binary(without)
    for name in ("posteriors", "sensitivity", "specificity", "priors", "worker_votes"):
        np.testing.assert_allclose(
            getattr(masked_result, name), getattr(dropped_result, name), atol=1e-9, err_msg=name
        )
    assert masked_result.iterations == dropped_result.iterations


def test_the_e_step_with_a_mask_reproduces_the_full_pass_and_ignores_unasked_cells():
    votes = with_unasked(simulate(n_items=600, seed=44)[0], concept=1, share=0.5, seed=45)
    full = agg.dawid_skene_binary(votes)
    parameters = agg.TwoCoinParameters.from_result(full)
    subset = np.arange(2, 600, 7)
    result = agg.dawid_skene_binary_posteriors(votes_of_items(votes, subset), parameters)
    np.testing.assert_allclose(result.posteriors, full.posteriors[subset], rtol=0, atol=1e-6)

    # Under fixed parameters, concept 1's posteriors are those of its asked votes alone, the
    # clear-majority rule included (it counts only asked votes).
    alone = agg.dawid_skene_binary_posteriors(
        asked_only(votes, 1),
        agg.TwoCoinParameters(
            sensitivity=parameters.sensitivity[:, 1:2],
            specificity=parameters.specificity[:, 1:2],
            priors=parameters.priors[1:2],
            crowd_sensitivity=parameters.crowd_sensitivity[1:2],
            crowd_specificity=parameters.crowd_specificity[1:2],
        ),
    )
    np.testing.assert_allclose(full.posteriors[:, 1], alone.posteriors[:, 0], rtol=0, atol=1e-9)


def test_a_clear_majority_counts_only_the_votes_asked_about_the_concept():
    # Two of three asked volunteers tick; two more classifications were never asked. Counted as
    # "no", they would make it 2 of 5, no clear majority; asked only, it is 2 of 3.
    ticks = two_coin._ClearMajorities.build(
        np.array([[2.0]]),
        VoteMatrix.from_arrays(
            [0] * 5, range(5), [[1], [1], [0], [0], [0]], asked=[[1], [1], [1], [0], [0]]
        ).asked_counts(),
    )
    assert ticks.ticked.tolist() == [0]


# --------------------------------------------------------------------------------------------
# Boundaries
# --------------------------------------------------------------------------------------------


def test_the_aggregation_package_imports_no_django_annotate_or_training():
    trees = [ast.parse(path.read_text()) for path in Path(agg.__file__).parent.glob("*.py")]
    imported = set()
    for node in (node for tree in trees for node in ast.walk(tree)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert not imported & {"django", "annotate", "training", "config"}
    probe = (
        "import sys, ml.aggregation; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'annotate', 'training')]; "
        "assert not bad, bad"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, check=True)
