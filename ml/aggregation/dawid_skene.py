"""Two-coin Dawid-Skene per concept, fitted by EM over all votes and concepts at once.

Each volunteer has a sensitivity (P(tick | concept applies)) and a specificity (P(no tick | it
does not)) per concept, shrunk by a Beta prior towards the crowd's average, scaled by how careful
the volunteer is across all concepts; no skill is more extreme than the rule of succession
allows, and a clear majority is overruled only on odds of ``OVERRULE_FACTOR`` or more.
``dawid_skene_binary_posteriors`` is the E-step alone under the fixed ``TwoCoinParameters`` of an
earlier full pass: the incremental aggregation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit

from ml.aggregation.design import VoteDesign
from ml.aggregation.majority import informative_mean, tick_fractions
from ml.aggregation.votes import (
    AggregationResult,
    AnchorsLike,
    BoolArray,
    FloatArray,
    IntArray,
    VoteMatrix,
    anchors_to_array,
    index_array,
)

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

Chosen by evidence (bench/README.md, "Small data is not overfitted", issue 17): leaving the
prior out of the rule cost accuracy on D_Product, and 1.25 is the largest factor tried at which
no reference figure drops; it still stops the small-data overrules that EM talks itself into
(tests/ml/test_aggregation.py).
"""

# Where the rule holds a posterior back, it sits this far (in log-odds) on the majority's side of
# 0.5 (posterior 0.5025 or 0.4975): a contested item, uncertain, so it is neither retired nor
# presented as settled, and keeps collecting votes until they decide it.
_HELD_LOG_ODDS = 0.01


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
    def build(cls, ticks: FloatArray | NDArray[np.integer], asked: IntArray) -> _ClearMajorities:
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

    The defaults won on the benchmarks (``bench/README.md``, "Vote aggregation"): count-based
    pooling is off because pooling volunteers with fewer than 20 classifications cost accuracy on
    D_Product and on the simulated crowd, where the Beta prior already handles sparse
    volunteers; pass ``pool_below=20`` to follow the design note literally. Anonymous sessions
    should still be pooled through ``pool_workers``: they are not one person.

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
