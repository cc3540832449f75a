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
