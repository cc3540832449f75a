"""A small simulated multi-label crowd, shared by the aggregation tests."""

from __future__ import annotations

import numpy as np

from ml.aggregation import VoteMatrix

# No priors, no bounds, no majority rule: the bare EM step that the hand-checked cases below follow.
BARE = {
    "prior_strength": 0.0,
    "sharing_strength": None,
    "succession": None,
    "overrule_factor": None,
    "pool_below": 0,
}


def simulate(
    *,
    n_items: int = 400,
    n_concepts: int = 6,
    votes_per_item: int = 5,
    n_workers: int = 60,
    spammer_share: float = 0.1,
    seed: int = 0,
) -> tuple[VoteMatrix, np.ndarray]:
    """A small multi-label crowd: careful volunteers, careless ones, and spammers."""
    rng = np.random.default_rng(seed)
    prior = rng.uniform(0.05, 0.35, n_concepts)
    truth = rng.random((n_items, n_concepts)) < prior
    kind = rng.choice(3, n_workers, p=[0.6, 0.4 - spammer_share, spammer_share])
    shape = (n_workers, n_concepts)
    careful = kind[:, None] == 0
    sensitivity = np.where(careful, rng.beta(8, 2, shape), rng.beta(4, 3, shape))
    false_pos = np.where(careful, rng.beta(1, 12, shape), rng.beta(1, 6, shape))
    rate = rng.uniform(0.05, 0.5, n_workers)
    sensitivity[kind == 2] = rate[kind == 2, None]
    false_pos[kind == 2] = rate[kind == 2, None]
    activity = rng.lognormal(0.0, 1.0, n_workers)
    chosen = np.stack(
        [rng.choice(n_workers, votes_per_item, replace=False, p=activity / activity.sum())
         for _ in range(n_items)]
    )  # fmt: skip
    item = np.repeat(np.arange(n_items), votes_per_item)
    worker = chosen.ravel()
    p_tick = np.where(truth[item], sensitivity[worker], false_pos[worker])
    labels = rng.random(p_tick.shape) < p_tick
    votes = VoteMatrix.from_arrays(item, worker, labels, n_items=n_items, n_workers=n_workers)
    return votes, truth
