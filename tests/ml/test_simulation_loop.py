"""The feature-cache campaign of ``bench/active_learning.py``: budgets, determinism, relabels."""

from __future__ import annotations

import numpy as np
import pytest

from ml import simulation
from ml.simulation import LoopConfig, run_loop

N_POOL, N_CONCEPTS, DIM = 300, 4, 12


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    weights = rng.normal(size=(DIM, N_CONCEPTS))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(n, DIM)).astype(np.float32)
        return x, (x @ weights + rng.normal(scale=0.5, size=(n, N_CONCEPTS))) > 0.8

    pool_x, pool_y = draw(N_POOL)
    test_x, test_y = draw(200)
    return {"pool_features": pool_x, "pool_truth": pool_y, "test_features": test_x,
            "test_truth": test_y}  # fmt: skip


CONFIG = dict(seed_round=40, rounds=3, round_size=20, votes_each=3, epochs=5)


def campaign(data, strategy: str, **config) -> simulation.Curve:  # type: ignore[no-untyped-def]
    return run_loop(strategy=strategy, config=LoopConfig(**{**CONFIG, **config}), seed=1, **data)


@pytest.mark.parametrize("relabel", [False, True])
def test_every_round_spends_the_same_votes_and_the_curve_has_a_point_per_round(data, relabel):
    curve = campaign(data, "entropy", relabel=relabel)
    assert curve.classifications == [120, 180, 240, 300]
    assert len(curve.test_map) == 4 and all(0.0 <= m <= 1.0 for m in curve.test_map)


def test_a_campaign_is_the_same_twice_under_one_seed(data):
    first, second = campaign(data, "entropy"), campaign(data, "entropy")
    assert first.test_map == second.test_map


def test_relabels_take_only_model_places_and_never_touch_a_random_round(data, monkeypatch):
    asked: list[np.ndarray] = []
    swapped = []
    original = simulation._with_relabels

    def spy(picks, chosen, **kwargs):  # type: ignore[no-untyped-def]
        out = original(picks, chosen, **kwargs)
        asked.append(out)
        swapped.append(len(set(out.tolist()) - set(picks.tolist())))
        n_random = sum(1 for reason in chosen.reasons if reason == "random")
        assert len(out) == len(picks)
        assert list(out[len(out) - n_random :]) == list(picks[len(picks) - n_random :])
        return out

    monkeypatch.setattr(simulation, "_with_relabels", spy)
    campaign(data, "random", relabel=True)
    assert asked == []
    campaign(data, "entropy", relabel=True, max_relabel_share=0.5)
    assert len(asked) == 3
    assert sum(swapped) > 0  # contested items did win places


def test_the_zero_shot_cold_start_chooses_the_first_round_from_the_zero_shot_scores(data):
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.0, 0.1, size=(N_POOL, N_CONCEPTS))
    doubtful = rng.choice(N_POOL, 60, replace=False)
    scores[doubtful] = 0.5  # the items the zero-shot model cannot call
    config = LoopConfig(**{**CONFIG, "cold_start": "zero_shot"})
    first = simulation._seed_round(
        config, data["pool_features"], scores, seed=1, rng=np.random.default_rng(1)
    )
    random_first = simulation._seed_round(
        LoopConfig(**CONFIG), data["pool_features"], None, seed=1, rng=np.random.default_rng(1)
    )
    n_model = CONFIG["seed_round"] - round(CONFIG["seed_round"] * config.random_share)
    assert len(first) == CONFIG["seed_round"] == len(set(first.tolist()))
    assert set(first[:n_model].tolist()) <= set(doubtful.tolist())
    assert set(first.tolist()) != set(random_first.tolist())
    curve = run_loop(strategy="entropy", config=config, seed=1, zero_shot_scores=scores, **data)
    assert curve.classifications[0] == CONFIG["seed_round"] * CONFIG["votes_each"]


def test_the_zero_shot_cold_start_says_what_it_needs(data):
    with pytest.raises(ValueError, match="zero_shot_scores"):
        campaign(data, "entropy", cold_start="zero_shot")
    with pytest.raises(ValueError, match="unknown cold start"):
        campaign(data, "entropy", cold_start="psychic")


def test_the_curve_keeps_each_concepts_test_ap_per_round(data):
    curve = campaign(data, "rare_entropy")
    assert len(curve.test_ap) == len(curve.test_map)
    assert all(ap.shape == (N_CONCEPTS,) for ap in curve.test_ap)
    assert curve.test_map[-1] == pytest.approx(float(np.nanmean(curve.test_ap[-1])))
