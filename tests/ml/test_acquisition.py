from __future__ import annotations

import numpy as np
import pytest

from ml import acquisition
from ml.acquisition import Pool, relabel_or_new, select


def make_pool(n: int = 60, c: int = 4, seed: int = 0) -> Pool:
    rng = np.random.default_rng(seed)
    probs = rng.choice([0.02, 0.98], size=(n, c))  # confident everywhere...
    probs[7] = 0.5  # ...but item 7, which the model cannot call at all
    mc = np.clip(probs[None] + rng.normal(0, 0.01, size=(8, n, c)), 0, 1)
    mc[:, 7] = rng.choice([0.05, 0.95], size=(8, c))  # and whose samples disagree
    emb = rng.normal(size=(n, 5))
    return Pool(probs=probs, thresholds=np.full(c, 0.5), mc_probs=mc, embeddings=emb)


@pytest.mark.parametrize("strategy", acquisition.list_strategies())
def test_every_strategy_returns_k_distinct_picks_deterministically(strategy):
    pool = make_pool()
    first = select(strategy, pool, 10, random_share=0.2, seed=3)
    again = select(strategy, pool, 10, random_share=0.2, seed=3)
    assert len(first.indices) == 10 == len(set(first.indices.tolist()))
    assert np.array_equal(first.indices, again.indices)
    assert len(first.scores) == len(first.reasons) == 10
    assert ((first.indices >= 0) & (first.indices < pool.n)).all()


@pytest.mark.parametrize(
    "strategy", ["entropy", "margin", "bald", "kcenter", "density", "cluster_margin"]
)
def test_uncertainty_strategies_pick_the_obviously_uncertain_item_first(strategy):
    selection = select(strategy, make_pool(), 5, random_share=0.0, seed=1)
    assert selection.indices[0] == 7
    assert selection.reasons[0] in {"uncertain", "diverse"}


def test_a_round_mixes_in_the_random_control_share():
    selection = select("entropy", make_pool(), 20, random_share=0.15, seed=0)
    assert selection.reasons.count("random") == 3
    assert selection.reasons[-3:] == ["random"] * 3
    assert np.isnan(selection.scores[-3:]).all()


def test_bald_and_diversity_say_what_they_need():
    pool = Pool(probs=np.full((5, 2), 0.5))
    with pytest.raises(ValueError, match="mc_probs"):
        select("bald", pool, 2, random_share=0)
    for needs_embeddings in ("kcenter", "density", "cluster_margin"):
        with pytest.raises(ValueError, match="embeddings"):
            select(needs_embeddings, pool, 2, random_share=0)
    with pytest.raises(ValueError, match="unknown strategy"):
        select("psychic", pool, 2)


def test_kcenter_spreads_picks_over_separate_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float)
    emb = np.concatenate([c + rng.normal(0, 0.1, size=(25, 2)) for c in centres])
    pool = Pool(probs=np.full((100, 3), 0.5), embeddings=emb)  # all equally uncertain
    picks = select("kcenter", pool, 4, random_share=0, seed=0).indices
    assert sorted(picks // 25) == [0, 1, 2, 3]


def test_cluster_margin_covers_every_cluster_of_uncertain_items():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float)
    emb = np.concatenate([c + rng.normal(0, 0.1, size=(25, 2)) for c in centres])
    pool = Pool(probs=np.full((100, 3), 0.5), embeddings=emb)  # all equally uncertain
    picks = select("cluster_margin", pool, 4, random_share=0, seed=0).indices
    assert sorted(picks // 25) == [0, 1, 2, 3]


def test_density_prefers_a_typical_uncertain_item_to_an_uncertain_outlier():
    rng = np.random.default_rng(0)
    emb = np.concatenate([rng.normal(0, 0.1, size=(40, 2)) + [5, 5], [[-50.0, 40.0]]])
    probs = np.full((41, 2), 0.02)
    probs[[3, 40]] = 0.5  # item 3 sits in the crowd, item 40 far from everything
    assert select("density", Pool(probs=probs, embeddings=emb), 1, random_share=0).indices[0] == 3


def test_the_cold_start_takes_one_typical_item_per_cluster():
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [20, 0], [0, 20]], float)
    emb = np.concatenate([c + rng.normal(0, 1, size=(30, 2)) for c in centres])
    pool = Pool(probs=np.full((90, 2), 0.5), embeddings=emb)
    picks = select("typical_diverse", pool, 3, random_share=0, seed=0).indices
    assert sorted(picks // 30) == [0, 1, 2]
    # Typical means near the middle of its cluster, not an outlier.
    for p in picks:
        assert np.linalg.norm(emb[p] - centres[p // 30]) < 1.5


def test_relabel_or_new_prefers_a_new_vote_on_a_contested_item_over_a_sure_new_one():
    decision = relabel_or_new(
        crowd_posteriors=np.array([[0.55, 0.99], [0.99, 0.01]]),  # item 0 is contested
        n_votes=np.array([2, 5]),
        model_labelled=np.array([[0.3, 0.9], [0.95, 0.05]]),  # and the model disagrees with it
        model_unlabelled=np.array([[0.97, 0.02], [0.6, 0.5]]),  # new item 1 is a coin toss
    )
    order, relabel = decision.order()
    assert (order[0], relabel[0]) in {(0, True), (1, False)}
    assert decision.labelled[0] < decision.labelled[1]
    assert decision.unlabelled[1] < decision.unlabelled[0]
    assert decision.labelled[1] > decision.unlabelled[1]  # a settled item needs no more votes


def test_the_pool_checks_its_shapes():
    with pytest.raises(ValueError, match="probs must be"):
        Pool(probs=np.zeros(3))
    with pytest.raises(ValueError, match="mc_probs"):
        Pool(probs=np.zeros((3, 2)), mc_probs=np.zeros((4, 3, 5)))
    with pytest.raises(ValueError, match="prevalence"):
        Pool(probs=np.zeros((3, 2)), prevalence=np.zeros(3))


def rare_and_common_pool() -> Pool:
    """Concept 0 is in 40% of the images, concept 1 in 2%; item 0 is in doubt about the common
    concept only, item 1 about the rare one only, the rest are settled."""
    probs = np.tile([0.02, 0.01], (50, 1))
    probs[0] = [0.5, 0.02]
    probs[1] = [0.01, 0.45]
    return Pool(probs=probs, prevalence=np.array([0.40, 0.02]))


def test_rare_entropy_asks_about_the_rare_concept_before_the_common_one():
    pool = rare_and_common_pool()
    assert acquisition.mean_entropy(pool)[0] == pytest.approx(
        acquisition.mean_entropy(pool)[1], 0.1
    )
    assert select("rare_entropy", pool, 2, random_share=0).indices.tolist() == [1, 0]


def test_rare_positive_looks_for_the_rare_concept_where_the_model_thinks_it_might_be():
    probs = np.tile([0.05, 0.01], (30, 1))
    probs[4] = [0.9, 0.01]  # surely shows the common concept
    probs[9] = [0.05, 0.3]  # might show the rare one
    pool = Pool(probs=probs, prevalence=np.array([0.40, 0.02]))
    assert select("rare_positive", pool, 1, random_share=0).indices.tolist() == [9]


def test_rarity_falls_back_on_the_models_own_mean_and_is_floored():
    probs = np.tile([0.6, 0.0], (10, 1))
    weights = acquisition.rarity_weights(Pool(probs=probs))
    assert weights.sum() == pytest.approx(1.0)
    # An unseen concept weighs 1 / RARE_FLOOR, not infinitely: 0.6 / 0.01 times the common one.
    assert weights[1] / weights[0] == pytest.approx(0.6 / acquisition.RARE_FLOOR)


def test_per_concept_gives_every_concept_its_most_doubtful_item():
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.0, 0.05, size=(40, 4))
    most_doubtful = [3, 11, 25, 38]
    for concept, item in enumerate(most_doubtful):
        probs[item, concept] = 0.5
    picks = select("per_concept", Pool(probs=probs), 4, random_share=0).indices
    assert sorted(picks.tolist()) == most_doubtful
