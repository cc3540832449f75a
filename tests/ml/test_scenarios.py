"""The hard scenario: long-tailed concepts, hard images, a noisier crowd, the same pool by seed."""

from __future__ import annotations

import numpy as np
import pytest

from ml.crowd import SimulatedCrowd
from ml.scenarios import (
    HARD_CROWD,
    HARD_VOTES,
    HardScenario,
    make_hard_pool,
    scenario_crowd,
    scenario_pool,
)

SMALL = HardScenario(size=32)


@pytest.fixture(scope="module")
def pool():  # type: ignore[no-untyped-def]
    return make_hard_pool(3000, seed=5, config=SMALL)


def test_the_zipf_law_puts_the_commonest_concept_at_40_percent_and_the_rarest_at_1_5(pool):
    law = SMALL.prevalence()
    assert law[0] == pytest.approx(0.40) and law[-1] == pytest.approx(0.015)
    assert np.all(np.diff(law) < 0)
    seen = pool.labels.mean(axis=0)
    assert abs(seen[0] - 0.40) < 0.03
    assert 0.01 <= seen[-1] <= 0.02
    # every concept within four binomial standard deviations of the law
    sd = np.sqrt(law * (1 - law) / len(pool.labels))
    assert np.all(np.abs(seen - law) < 4 * sd)


def test_objects_come_at_many_scales_some_hidden_among_clutter(pool):
    present = pool.labels
    scales = pool.scale[present]
    assert np.isnan(pool.scale[~present]).all() and np.isfinite(scales).all()
    assert scales.min() < SMALL.min_scale * 1.1 and scales.max() > SMALL.max_scale * 0.9
    assert 0.2 < pool.occluded[present].mean() < 0.4
    assert 3.5 < pool.clutter.mean() < 4.5
    # images with no concept still show clutter: they are not plain backgrounds
    empty = pool.images[~present.any(axis=1) & (pool.clutter > 0)]
    flat = make_hard_pool(50, seed=6, config=HardScenario(size=32, clutter_mean=0.0))
    flat_empty = flat.images[~flat.labels.any(axis=1)]
    assert len(empty) > 100 and len(flat_empty) > 5
    assert _dark_share(empty) > 2 * _dark_share(flat_empty)


def _dark_share(images: np.ndarray) -> float:
    """Share of pixels much darker than their image's median: ink."""
    grey = images.astype(np.float64).mean(axis=3)
    median = np.median(grey.reshape(len(grey), -1), axis=1)[:, None, None]
    return float((grey < median - 50).mean())


def _probe_auc(name: str) -> float:
    """Mean ROC AUC of a ridge regression on raw grey pixels, trained and tested on fresh pools."""
    train, test = (
        scenario_pool(name, 1500, seed=1, size=32),
        scenario_pool(name, 600, seed=2, size=32),
    )

    def pixels(images: np.ndarray) -> np.ndarray:
        return images.astype(np.float64).mean(axis=3).reshape(len(images), -1)

    x, x_test = pixels(train.images), pixels(test.images)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    x = np.c_[(x - mean) / std, np.ones(len(x))]
    x_test = np.c_[(x_test - mean) / std, np.ones(len(x_test))]
    w = np.linalg.solve(x.T @ x + 100 * np.eye(x.shape[1]), x.T @ train.labels.astype(float))
    scores = x_test @ w
    aucs = []
    for c in range(test.labels.shape[1]):
        pos = test.labels[:, c]
        ranks = scores[:, c].argsort().argsort() + 1
        n_pos, n_neg = pos.sum(), (~pos).sum()
        if n_pos and n_neg:
            aucs.append((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs))


def test_a_linear_probe_on_pixels_does_clearly_worse_than_on_the_easy_mosaics():
    easy, hard = _probe_auc("easy"), _probe_auc("hard")
    assert easy > 0.85  # the easy mosaics' fixed tiles are nearly linearly separable
    assert hard < easy - 0.2


def test_the_same_seed_gives_the_same_pool_and_another_seed_another():
    a = make_hard_pool(40, seed=11, config=SMALL)
    b = make_hard_pool(40, seed=11, config=SMALL)
    c = make_hard_pool(40, seed=12, config=SMALL)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.scale, b.scale, equal_nan=True)
    assert not np.array_equal(a.images, c.images)


def _hard_votes(pool, seed: int = 0):  # type: ignore[no-untyped-def]
    crowd = SimulatedCrowd(n_volunteers=300, mix=dict(HARD_CROWD), seed=seed)
    items = np.arange(len(pool.labels))
    item_idx, workers, ticks = crowd.classify(pool.labels, items, HARD_VOTES, scale=pool.scale)
    profile = crowd.kind  # which profile each volunteer has
    assert abs(np.mean(profile == "careless") - HARD_CROWD["careless"][0]) < 0.1
    return item_idx, workers, ticks.astype(bool), profile


def test_careless_volunteers_miss_small_objects_more_than_big_ones(pool):
    item_idx, workers, ticks, profile = _hard_votes(pool)
    careless = profile[workers] == "careless"
    present = pool.labels[item_idx]
    scale = pool.scale[item_idx]
    small = present & (scale < 0.2) & careless[:, None]
    big = present & (scale > 0.35) & careless[:, None]
    miss_small, miss_big = 1 - ticks[small].mean(), 1 - ticks[big].mean()
    assert small.sum() > 200 and big.sum() > 200
    assert miss_small > miss_big + 0.3
    # careful volunteers lose far fewer of the small ones
    careful_small = present & (scale < 0.2) & (profile[workers] == "careful")[:, None]
    assert 1 - ticks[careful_small].mean() < miss_small - 0.2


def test_spammers_answer_at_chance_whatever_the_image_shows(pool):
    item_idx, workers, ticks, profile = _hard_votes(pool)
    spam = profile[workers] == "spammer"
    present = pool.labels[item_idx]
    on_present = ticks[spam[:, None] & present].mean()
    on_absent = ticks[spam[:, None] & ~present].mean()
    assert abs(on_present - 0.5) < 0.05 and abs(on_absent - 0.5) < 0.05


def test_an_item_gets_one_to_three_votes(pool):
    item_idx, _, _, _ = _hard_votes(pool)
    counts = np.bincount(item_idx, minlength=len(pool.labels))
    assert counts.min() == 1 and counts.max() == 3
    assert set(np.unique(counts)) == {1, 2, 3}


def test_the_crowd_without_sizes_or_size_blind_profiles_sees_every_object_alike(pool):
    crowd = SimulatedCrowd(n_volunteers=50, mix=dict(HARD_CROWD), seed=1)
    workers = np.arange(50)
    seen = crowd.seen_probability(np.full((50, 10), 0.16), workers)
    size_blind = crowd.half_seen == 0
    assert size_blind.any() and (~size_blind).any()
    assert np.all(seen[size_blind] == 1.0) and np.all(seen[~size_blind] < 1.0)
    # the easy scenario's crowd is the default one, with a fixed number of votes
    assert scenario_crowd("easy").mix is None and scenario_crowd("easy").votes is None
    assert scenario_crowd("hard").votes == (1, 3)


def test_an_unknown_scenario_is_refused():
    with pytest.raises(ValueError, match="unknown scenario 'medium'"):
        scenario_pool("medium", 3, seed=0)
