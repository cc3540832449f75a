"""A simulated crowdsourcing + active-learning loop, to measure what a strategy saves.

The loop is the one crowdloop runs, with the same parts: simulated volunteers (``ml.crowd``) vote
on the items a strategy picks (``ml.acquisition``), the votes are aggregated with two-coin
Dawid-Skene (``ml.aggregation``), a head is trained on the posteriors (``ml.train``), and the
model scores the pool for the next round. Test mAP is recorded against the number of
classifications spent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ml import acquisition, aggregation
from ml.crowd import DEFAULT_CROWD, CrowdProfile, SimulatedCrowd
from ml.metrics import average_precision, mean_average_precision
from ml.train import FeatureSet, TrainConfig, fit


@dataclass(frozen=True)
class LoopConfig:
    seed_round: int = 100
    rounds: int = 8
    round_size: int = 100
    votes_each: int | tuple[int, int] = 3  # or (low, high): each item gets low..high votes
    random_share: float = 0.15
    epochs: int = 60
    mc_samples: int = 10
    #: ActiveLab's relabel-or-new, as the product's ``select_round`` does it: contested items
    #: take the places of the weakest model picks (at most ``max_relabel_share`` of a round) when
    #: another round of votes on them is worth more; a random round stays all random.
    relabel: bool = False
    max_relabel_share: float = 0.3
    #: How the first round is chosen: "random", or "zero_shot" (the product's cold start with a
    #: zero-shot version: k-center among the items its scores are least sure of, with the
    #: random control share); "zero_shot" needs ``run_loop``'s ``zero_shot_scores``.
    cold_start: str = "random"


@dataclass
class Curve:
    strategy: str
    seed: int
    classifications: list[int] = field(default_factory=list)
    test_map: list[float] = field(default_factory=list)
    #: Per round, the test AP of each concept (C,), NaN where the test set has no positive.
    test_ap: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0


def _train_head(
    features: np.ndarray, targets: np.ndarray, weights: np.ndarray, *, seed: int, epochs: int
) -> torch.nn.Module:
    n = len(features)
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, n // 5)
    val, train = order[:n_val], order[n_val:]
    config = TrainConfig(
        mode="head",
        head="mlp",
        hidden=128,
        dropout=0.2,
        epochs=epochs,
        lr=3e-3,
        batch_size=64,
        patience=15,
        seed=seed,
        device="cpu",
    )
    result = fit(
        config,
        FeatureSet(features[train], targets[train], weights[train]),  # type: ignore[arg-type]  # FeatureSet takes arrays: __post_init__ converts
        FeatureSet(features[val], targets[val], weights[val]),  # type: ignore[arg-type]  # (same)
    )
    return result.model


def _predict(
    model: torch.nn.Module, features: np.ndarray, *, mc_samples: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    x = torch.as_tensor(features, dtype=torch.float32)
    with torch.inference_mode():
        model.eval()
        probs = torch.sigmoid(model(x)).numpy().astype(np.float64)
        samples = None
        if mc_samples:
            model.train()  # dropout on: each pass is one sample of the posterior over weights
            samples = np.stack([torch.sigmoid(model(x)).numpy() for _ in range(mc_samples)]).astype(
                np.float64
            )
            model.eval()
    return probs, samples


def run_loop(
    *,
    strategy: str,
    pool_features: np.ndarray,
    pool_truth: np.ndarray,
    test_features: np.ndarray,
    test_truth: np.ndarray,
    config: LoopConfig,
    seed: int,
    progress: Callable[[str], None] | None = None,
    crowd_mix: dict[str, tuple[float, CrowdProfile]] | None = None,
    pool_scale: np.ndarray | None = None,
    zero_shot_scores: np.ndarray | None = None,
) -> Curve:
    """One simulated campaign: a seed round, then ``rounds`` rounds by ``strategy``.

    ``crowd_mix`` replaces the default crowd (``ml.crowd.DEFAULT_CROWD``); ``pool_scale``
    (pool, C) is the size of each present object, for volunteers who miss small ones
    (``ml.crowd.CrowdProfile``).
    ``zero_shot_scores`` (pool, C) are concept probabilities from a model that has seen no
    campaign label, for ``config.cold_start == "zero_shot"``. The rarity the rare-concept
    strategies weigh by is the share of positive posteriors among the classified items.
    """
    started = time.monotonic()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    crowd = SimulatedCrowd(seed=seed, mix=dict(crowd_mix or DEFAULT_CROWD))
    n_pool, n_concepts = pool_truth.shape
    labelled = np.zeros(n_pool, dtype=bool)
    votes_items, votes_workers, votes_ticks = [], [], []
    curve = Curve(strategy=strategy, seed=seed)

    def ask(items: np.ndarray) -> None:
        i, w, t = crowd.classify(pool_truth, items, config.votes_each, scale=pool_scale)
        votes_items.append(i)
        votes_workers.append(w)
        votes_ticks.append(t)
        labelled[items] = True

    ask(_seed_round(config, pool_features, zero_shot_scores, seed=seed, rng=rng))
    for round_no in range(config.rounds + 1):
        items = np.concatenate(votes_items)
        votes = aggregation.VoteMatrix.from_arrays(
            items,
            np.concatenate(votes_workers),
            np.concatenate(votes_ticks),
            n_items=n_pool,
            n_workers=crowd.n_volunteers,
        )
        result = aggregation.dawid_skene_binary(votes)
        idx = np.flatnonzero(labelled)
        evidence = np.minimum(result.item_votes[idx], 5) / 5.0
        model = _train_head(
            pool_features[idx], result.posteriors[idx], evidence, seed=seed, epochs=config.epochs
        )
        test_probs, _ = _predict(model, test_features)
        curve.classifications.append(int(votes.n_votes))
        curve.test_ap.append(average_precision(test_truth, test_probs))
        curve.test_map.append(float(np.nanmean(curve.test_ap[-1])))
        if progress:
            progress(
                f"{strategy} seed {seed} round {round_no}: {votes.n_votes} classifications, "
                f"test mAP {curve.test_map[-1]:.3f}"
            )
        if round_no == config.rounds:
            break
        candidates = np.flatnonzero(~labelled)
        probs, samples = _predict(
            model,
            pool_features[candidates],
            mc_samples=config.mc_samples if strategy == "bald" else 0,
        )
        prevalence = (result.posteriors[idx] > 0.5).mean(axis=0)
        pool = acquisition.Pool(
            probs=probs,
            mc_probs=samples,
            embeddings=pool_features[candidates],
            prevalence=prevalence,
        )
        chosen = acquisition.select(
            strategy,
            pool,
            config.round_size,
            random_share=config.random_share,
            seed=seed * 1000 + round_no,
        )
        picks = candidates[chosen.indices]
        if config.relabel and strategy != "random":
            picks = _with_relabels(
                picks, chosen, model=model, features=pool_features, labelled_idx=idx,
                posteriors=result.posteriors[idx], n_votes=result.item_votes[idx],
                new_probs=probs[chosen.indices], max_share=config.max_relabel_share,
            )  # fmt: skip
        ask(picks)
    curve.seconds = time.monotonic() - started
    return curve


def _seed_round(
    config: LoopConfig,
    features: np.ndarray,
    zero_shot_scores: np.ndarray | None,
    *,
    seed: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """The first round's pool indices: at random, or by the zero-shot cold start."""
    if config.cold_start == "random":
        return rng.permutation(len(features))[: config.seed_round]
    if config.cold_start != "zero_shot":
        raise ValueError(f"unknown cold start {config.cold_start!r}: use random or zero_shot")
    if zero_shot_scores is None:
        raise ValueError("the zero-shot cold start needs zero_shot_scores for the pool")
    pool = acquisition.Pool(probs=zero_shot_scores, embeddings=features)
    chosen = acquisition.select(
        acquisition.ZERO_SHOT_COLD_START,
        pool,
        config.seed_round,
        random_share=config.random_share,
        seed=seed * 1000 + 999,  # the later rounds use seed * 1000 + round
    )
    return chosen.indices


def _with_relabels(
    picks: np.ndarray,
    chosen: acquisition.Selection,
    *,
    model: torch.nn.Module,
    features: np.ndarray,
    labelled_idx: np.ndarray,
    posteriors: np.ndarray,
    n_votes: np.ndarray,
    new_probs: np.ndarray,
    max_share: float,
) -> np.ndarray:
    """The round's pool indices with the weakest model picks swapped for contested items."""
    size = len(picks)
    labelled_probs, _ = _predict(model, features[labelled_idx])
    decision = acquisition.relabel_or_new(
        crowd_posteriors=posteriors,
        n_votes=n_votes,
        model_labelled=labelled_probs,
        model_unlabelled=new_probs,
    )
    order, is_relabel = decision.order()
    n_model = sum(1 for reason in chosen.reasons if reason != "random")
    top = order[:size][is_relabel[:size]][: min(int(size * max_share), n_model)]
    if not len(top):
        return picks
    model_picks, control = picks[:n_model], picks[n_model:]
    keep = model_picks[: n_model - len(top)]
    return np.concatenate([keep, labelled_idx[top], control])


def full_data_map(
    pool_features: np.ndarray,
    pool_truth: np.ndarray,
    test_features: np.ndarray,
    test_truth: np.ndarray,
    *,
    seed: int,
    epochs: int,
) -> float:
    """Test mAP of the same head trained on the whole pool with its true labels: the ceiling."""
    model = _train_head(
        pool_features,
        pool_truth.astype(np.float64),
        np.ones(len(pool_truth)),
        seed=seed,
        epochs=epochs,
    )
    probs, _ = _predict(model, test_features)
    return mean_average_precision(test_truth, probs)


def budget_to_reach(curve: Curve, target: float) -> int | None:
    """Classifications a curve needed to first reach ``target`` mAP (None if it never did)."""
    for spent, score in zip(curve.classifications, curve.test_map, strict=True):
        if score >= target:
            return spent
    return None
