"""Acquisition: which images should the crowd see next?

Every strategy scores a pool of candidate items from the model's view of them (predicted
probabilities, optionally Monte-Carlo samples and embeddings); higher means more worth a
volunteer's time. :func:`select` turns scores into a round: the strategy's picks plus a random
control share, so the model's choices can always be audited against chance (the Galaxy Zoo
pattern). :func:`relabel_or_new` weighs another vote on an already classified item against a
first vote on a new one (after ActiveLab, Goh & Mueller 2023, per concept with K = 2).

Strategies are registered by name, so settings, commands and the admin can refer to them.
Plain numpy, and scikit-learn for k-means: no Django, no torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

_EPS = 1e-12


@dataclass(frozen=True)
class Pool:
    """What the model knows about the candidate items.

    Attributes:
        probs: ``(n, C)`` predicted probability of each concept (sigmoid of the logits).
        thresholds: ``(C,)`` tuned decision thresholds, 0.5 when None.
        mc_probs: ``(S, n, C)`` probabilities from S stochastic passes (MC dropout or an
            ensemble), needed by BALD.
        embeddings: ``(n, D)`` features, needed by the diversity strategies.
        prevalence: ``(C,)`` how common each concept is (the share of positives among the
            classified items, say), for the rare-concept strategies; the pool's mean predicted
            probability when None.
    """

    probs: FloatArray
    thresholds: FloatArray | None = None
    mc_probs: FloatArray | None = None
    embeddings: FloatArray | None = None
    prevalence: FloatArray | None = None

    def __post_init__(self) -> None:
        probs = np.asarray(self.probs, dtype=np.float64)
        if probs.ndim != 2:
            raise ValueError(f"probs must be (n, C), got shape {probs.shape}")
        object.__setattr__(self, "probs", probs)
        if self.mc_probs is not None and np.shape(self.mc_probs)[1:] != probs.shape:
            raise ValueError("mc_probs must be (S, n, C) with the same n and C as probs")
        if self.embeddings is not None and len(self.embeddings) != len(probs):
            raise ValueError("embeddings must have one row per pool item")
        if self.prevalence is not None and np.shape(self.prevalence) != (probs.shape[1],):
            raise ValueError("prevalence must have one value per concept")

    @property
    def n(self) -> int:
        return int(self.probs.shape[0])


@dataclass(frozen=True)
class Selection:
    """A chosen round, best first.

    Attributes:
        indices: ``(k,)`` pool indices in rank order.
        scores: ``(k,)`` the strategy's score of each pick (NaN for random control picks).
        reasons: one of "uncertain", "diverse", "typical", "random" per pick.
    """

    indices: IntArray
    scores: FloatArray
    reasons: list[str] = field(default_factory=list)


#: The cold-start strategy on a zero-shot version's scores: k-center among the items it is
#: least sure of (``training.services.selection`` in the product, ``ml.simulation`` in the
#: benches).
ZERO_SHOT_COLD_START = "kcenter"

StrategyFn = Callable[[Pool, int, np.random.Generator], tuple[IntArray, FloatArray, str]]
STRATEGIES: dict[str, StrategyFn] = {}


def register_strategy(name: str) -> Callable[[StrategyFn], StrategyFn]:
    def wrap(fn: StrategyFn) -> StrategyFn:
        STRATEGIES[name] = fn
        return fn

    return wrap


def list_strategies() -> list[str]:
    return sorted(STRATEGIES)


# -- uncertainty measures -----------------------------------------------------------------------


def binary_entropy(p: FloatArray) -> FloatArray:
    """Entropy in bits of Bernoulli(p), elementwise."""
    p = np.clip(p, _EPS, 1 - _EPS)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def mean_entropy(pool: Pool) -> FloatArray:
    """Mean binary entropy over concepts: ``(n,)`` in [0, 1]."""
    return binary_entropy(pool.probs).mean(axis=1)


def threshold_margin(pool: Pool) -> FloatArray:
    """How close the most ambiguous concept is to its threshold: ``(n,)``, 1 = on it."""
    thresholds = np.full(pool.probs.shape[1], 0.5) if pool.thresholds is None else pool.thresholds
    return 1.0 - np.abs(pool.probs - np.asarray(thresholds)[None, :]).min(axis=1)


def bald_score(pool: Pool) -> FloatArray:
    """Mutual information between the labels and the model (BALD), mean over concepts."""
    if pool.mc_probs is None:
        raise ValueError("BALD needs mc_probs: several stochastic predictions of the pool")
    samples = np.asarray(pool.mc_probs, dtype=np.float64)  # (S, n, C)
    predictive = binary_entropy(samples.mean(axis=0))  # H[E p]
    expected = binary_entropy(samples).mean(axis=0)  # E H[p]
    return np.clip(predictive - expected, 0.0, None).mean(axis=1)


#: Rarity weights stop growing below this prevalence, so that a concept nobody has seen yet does
#: not take every pick.
RARE_FLOOR = 0.01


def rarity_weights(pool: Pool) -> FloatArray:
    """``(C,)`` weights proportional to 1 / prevalence (floored), summing to 1."""
    prevalence = pool.probs.mean(axis=0) if pool.prevalence is None else pool.prevalence
    weights = 1.0 / np.maximum(np.asarray(prevalence, dtype=np.float64), RARE_FLOOR)
    return weights / weights.sum()


def rare_entropy(pool: Pool) -> FloatArray:
    """Binary entropy per concept weighted by the concept's rarity: ``(n,)``.

    mAP counts every concept alike, so doubt about a concept in 2% of the images is worth more
    than doubt about one in 40%, which plenty of random picks already teach.
    """
    return binary_entropy(pool.probs) @ rarity_weights(pool)


def _top(scores: FloatArray, k: int, rng: np.random.Generator) -> IntArray:
    # Ties are broken at random (seeded), not by pool order, so no item is favoured for its id.
    order = np.lexsort((rng.random(len(scores)), -scores))
    return order[:k].astype(np.int64)


# -- strategies ---------------------------------------------------------------------------------


@register_strategy("random")
def random_strategy(
    pool: Pool, k: int, rng: np.random.Generator
) -> tuple[IntArray, FloatArray, str]:
    picks = rng.permutation(pool.n)[:k].astype(np.int64)
    return picks, np.full(len(picks), np.nan), "random"


@register_strategy("entropy")
def entropy_strategy(
    pool: Pool, k: int, rng: np.random.Generator
) -> tuple[IntArray, FloatArray, str]:
    scores = mean_entropy(pool)
    picks = _top(scores, k, rng)
    return picks, scores[picks], "uncertain"


@register_strategy("rare_entropy")
def rare_entropy_strategy(
    pool: Pool, k: int, rng: np.random.Generator
) -> tuple[IntArray, FloatArray, str]:
    """The items the model doubts most, each concept's doubt weighted by its rarity."""
    scores = rare_entropy(pool)
    picks = _top(scores, k, rng)
    return picks, scores[picks], "uncertain"


@register_strategy("rare_positive")
def rare_positive_strategy(
    pool: Pool, k: int, rng: np.random.Generator
) -> tuple[IntArray, FloatArray, str]:
    """The items expected to show the most rare concepts: sum over concepts of p / prevalence.

    Rare concepts are short of positive examples, and a random round brings them few; this
    looks for them where the model thinks they might be.
    """
    scores = pool.probs @ rarity_weights(pool)
    picks = _top(scores, k, rng)
    return picks, scores[picks], "uncertain"


@register_strategy("per_concept")
def per_concept_strategy(
    pool: Pool, k: int, rng: np.random.Generator
) -> tuple[IntArray, FloatArray, str]:
    """Each concept in turn takes the item it is least sure of, until the round is full.

    Every concept, rare or common, gets an equal share of the round, as mAP weighs them.
    """
    entropy = binary_entropy(pool.probs)  # (n, C)
    k = min(k, pool.n)
    tie = rng.random(pool.n)
    orders = [np.lexsort((tie, -entropy[:, c])) for c in range(entropy.shape[1])]
    cursor = np.zeros(len(orders), dtype=np.int64)  # next place to look in each concept's order
    taken = np.zeros(pool.n, dtype=bool)
    picks: list[int] = []
    scores: list[float] = []
    while len(picks) < k:
        for c in rng.permutation(len(orders)):
            order = orders[c]
            while taken[order[cursor[c]]]:
                cursor[c] += 1
            item = int(order[cursor[c]])
            taken[item] = True
            picks.append(item)
            scores.append(float(entropy[item, c]))
            if len(picks) == k:
                break
    return np.asarray(picks, dtype=np.int64), np.asarray(scores), "uncertain"


@register_strategy("margin")
def margin_strategy(
    pool: Pool, k: int, rng: np.random.Generator
) -> tuple[IntArray, FloatArray, str]:
    scores = threshold_margin(pool)
    picks = _top(scores, k, rng)
    return picks, scores[picks], "uncertain"


@register_strategy("bald")
def bald_strategy(pool: Pool, k: int, rng: np.random.Generator) -> tuple[IntArray, FloatArray, str]:
    scores = bald_score(pool)
    picks = _top(scores, k, rng)
    return picks, scores[picks], "uncertain"


def k_center_greedy(
    embeddings: FloatArray, k: int, *, first: int = 0, weights: FloatArray | None = None
) -> IntArray:
    """Greedy k-center: each next point is the one farthest from all chosen so far.

    Args:
        embeddings: ``(m, D)`` candidate features.
        k: how many to choose.
        first: the index to start from (the most uncertain candidate, say).
        weights: ``(m,)`` optional multipliers of the distances (uncertainty-weighted coverage).
    """
    x = np.asarray(embeddings, dtype=np.float64)
    m = len(x)
    k = min(k, m)
    chosen = [first]
    nearest = np.linalg.norm(x - x[first], axis=1)
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64)
    for _ in range(1, k):
        gain = nearest * w
        gain[chosen] = -np.inf
        nxt = int(np.argmax(gain))
        chosen.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(x - x[nxt], axis=1))
    return np.asarray(chosen, dtype=np.int64)


@register_strategy("kcenter")
def kcenter_strategy(
    pool: Pool, k: int, rng: np.random.Generator
) -> tuple[IntArray, FloatArray, str]:
    """Diversity among the uncertain: k-center over the top 5k by entropy (batch-aware)."""
    if pool.embeddings is None:
        raise ValueError("kcenter needs embeddings of the pool")
    scores = mean_entropy(pool)
    shortlist = _top(scores, min(pool.n, 5 * k), rng)
    feats = np.asarray(pool.embeddings, dtype=np.float64)[shortlist]
    chosen = k_center_greedy(feats, k, first=0, weights=0.5 + scores[shortlist])
    picks = shortlist[chosen]
    return picks, scores[picks], "diverse"


def local_density(embeddings: FloatArray, neighbours: int = 20, block: int = 1024) -> FloatArray:
    """How typical each item is of the pool: mean cosine similarity to its nearest neighbours.

    ``(n,)`` in [0, 1] (cosine mapped from [-1, 1]), on centred features; computed in blocks so
    a large pool never needs the whole ``n x n`` similarity matrix at once.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    x = x - x.mean(axis=0)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)
    n = len(unit)
    k = min(neighbours, n - 1)
    if k < 1:
        return np.ones(n)
    density = np.empty(n)
    for start in range(0, n, block):
        sim = unit[start : start + block] @ unit.T
        rows = np.arange(len(sim))
        sim[rows, start + rows] = -np.inf  # not its own neighbour
        density[start : start + block] = np.partition(sim, -k, axis=1)[:, -k:].mean(axis=1)
    return (density + 1.0) / 2.0


@register_strategy("density")
def density_strategy(
    pool: Pool, k: int, rng: np.random.Generator
) -> tuple[IntArray, FloatArray, str]:
    """Information density (Settles & Craven 2008): entropy times how typical the item is.

    Uncertain outliers teach less than uncertain items that stand for many others.
    """
    if pool.embeddings is None:
        raise ValueError("density needs embeddings of the pool")
    scores = mean_entropy(pool) * local_density(pool.embeddings)
    picks = _top(scores, k, rng)
    return picks, scores[picks], "uncertain"


def kmeans(x: FloatArray, k: int, rng: np.random.Generator) -> IntArray:
    """Cluster the rows of ``x`` into ``k`` groups; returns each row's cluster in ``[0, k)``.

    scikit-learn's k-means (Lloyd's, one k-means++ start) seeded from ``rng``, so a round is
    reproducible from its seed. A cluster may come out empty where ``x`` has fewer distinct rows.
    """
    if k <= 1 or len(x) <= 1:
        return np.zeros(len(x), dtype=np.int64)
    # Imported here: scikit-learn costs the web processes, which list the strategies, a second.
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    model = KMeans(
        n_clusters=k, init="k-means++", n_init=1, max_iter=20, random_state=int(rng.integers(2**31))
    )
    with warnings.catch_warnings():
        # Fewer distinct rows than clusters: some clusters stay empty, which the callers allow.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit_predict(x).astype(np.int64)


@register_strategy("cluster_margin")
def cluster_margin_strategy(
    pool: Pool, k: int, rng: np.random.Generator
) -> tuple[IntArray, FloatArray, str]:
    """Cluster-Margin (Citovsky et al. 2021): the 10k most uncertain, clustered, taken round-robin.

    k-means groups the shortlist; clusters are visited smallest first, each giving its most
    uncertain item in turn, so a round covers many kinds of uncertain image rather than k
    near-copies of one. The picks are ranked by uncertainty.
    """
    if pool.embeddings is None:
        raise ValueError("cluster_margin needs embeddings of the pool")
    scores = mean_entropy(pool)
    shortlist = _top(scores, min(pool.n, 10 * k), rng)
    if k == 0 or len(shortlist) == 0:
        return shortlist[:0], scores[shortlist[:0]], "diverse"
    feats = np.asarray(pool.embeddings, dtype=np.float64)[shortlist]
    assign = kmeans(feats, min(k, len(shortlist)), rng)
    clusters = [shortlist[assign == j] for j in range(int(assign.max()) + 1)]
    clusters = [c[np.argsort(-scores[c], kind="stable")] for c in clusters if len(c)]
    clusters.sort(key=len)
    picks: list[int] = []
    depth = 0
    while len(picks) < min(k, len(shortlist)):
        for members in clusters:
            if depth < len(members) and len(picks) < k:
                picks.append(int(members[depth]))
        depth += 1
    chosen = np.asarray(picks, dtype=np.int64)
    chosen = chosen[np.argsort(-scores[chosen], kind="stable")]
    return chosen, scores[chosen], "diverse"


@register_strategy("typical_diverse")
def typical_diverse_strategy(
    pool: Pool, k: int, rng: np.random.Generator
) -> tuple[IntArray, FloatArray, str]:
    """Cold start with no trustworthy model: the most typical item of each of k clusters.

    Typicality is the inverse mean distance to the 10 nearest neighbours within the cluster
    (after TypiClust, Hacohen et al. 2022): a first round of typical, varied images teaches more
    than outliers when there are few labels.
    """
    if pool.embeddings is None:
        raise ValueError("typical_diverse needs embeddings of the pool")
    x = np.asarray(pool.embeddings, dtype=np.float64)
    x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), _EPS)
    k = min(k, pool.n)
    assign = kmeans(x, k, rng)
    picks, scores = [], []
    for j in range(k):
        members = np.flatnonzero(assign == j)
        if len(members) == 0:
            continue
        sub = x[members]
        d = np.sqrt(
            np.maximum((sub**2).sum(1)[:, None] - 2 * sub @ sub.T + (sub**2).sum(1)[None, :], 0)
        )
        nn = np.sort(d, axis=1)[:, 1 : min(11, len(members))]
        typicality = 1.0 / (nn.mean(axis=1) + _EPS) if nn.size else np.ones(len(members))
        best = int(np.argmax(typicality))
        picks.append(members[best])
        scores.append(float(typicality[best]))
    order = np.argsort(-np.asarray(scores), kind="stable")
    picks_arr = np.asarray(picks, dtype=np.int64)[order]
    # Fill up when clusters came out empty.
    if len(picks_arr) < k:
        rest = np.setdiff1d(np.arange(pool.n), picks_arr)
        picks_arr = np.concatenate([picks_arr, rng.permutation(rest)[: k - len(picks_arr)]])
    return picks_arr, np.resize(np.asarray(scores)[order], len(picks_arr)), "typical"


# -- rounds -------------------------------------------------------------------------------------


def select(
    strategy: str,
    pool: Pool,
    k: int,
    *,
    random_share: float = 0.15,
    seed: int = 0,
) -> Selection:
    """Choose ``k`` items: the strategy's best plus a random control share, best first.

    Args:
        strategy: a registered strategy name (see :func:`list_strategies`).
        pool: the candidates.
        k: round size.
        random_share: fraction of the round drawn uniformly at random from the rest of the pool,
            so the model's picks can be compared with chance.
        seed: makes the selection reproducible.

    Raises:
        ValueError: an unknown strategy, or what the strategy needs is missing from the pool.
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            f"unknown strategy {strategy!r}; choose one of: {', '.join(list_strategies())}"
        )
    if not 0.0 <= random_share <= 1.0:
        raise ValueError("random_share must be between 0 and 1")
    rng = np.random.default_rng(seed)
    k = min(k, pool.n)
    n_random = int(round(k * random_share)) if strategy != "random" else k
    n_model = k - n_random
    picks, scores, reason = (
        STRATEGIES[strategy](pool, n_model, rng)
        if n_model
        else (np.empty(0, np.int64), np.empty(0), "uncertain")
    )
    rest = np.setdiff1d(np.arange(pool.n), picks)
    control = rng.permutation(rest)[:n_random].astype(np.int64)
    return Selection(
        indices=np.concatenate([picks, control]),
        scores=np.concatenate([scores, np.full(len(control), np.nan)]),
        reasons=[reason] * len(picks) + ["random"] * len(control),
    )


@dataclass(frozen=True)
class RelabelDecision:
    """ActiveLab-style scores on one scale; lower means a vote there is worth more.

    Attributes:
        labelled: ``(n_labelled,)`` score of asking for one more vote on each classified item.
        unlabelled: ``(n_unlabelled,)`` score of a first vote on each new item.
    """

    labelled: FloatArray
    unlabelled: FloatArray

    def order(self) -> tuple[IntArray, NDArray[np.bool_]]:
        """All candidates, most useful first: (index within its group, is_relabel)."""
        scores = np.concatenate([self.labelled, self.unlabelled])
        relabel = np.concatenate(
            [np.ones(len(self.labelled), bool), np.zeros(len(self.unlabelled), bool)]
        )
        index = np.concatenate([np.arange(len(self.labelled)), np.arange(len(self.unlabelled))])
        order = np.argsort(scores, kind="stable")
        return index[order].astype(np.int64), relabel[order]


def relabel_or_new(
    *,
    crowd_posteriors: FloatArray,
    n_votes: IntArray,
    model_labelled: FloatArray,
    model_unlabelled: FloatArray,
    annotator_weight: float = 1.0,
    model_weight: float = 1.0,
) -> RelabelDecision:
    """Score another vote on classified items against a first vote on new ones, per concept.

    For each concept (K = 2 classes), a classified item's consensus quality is the probability of
    its crowd consensus under the blend of crowd and model, weighted by the evidence behind each
    (``n_votes * annotator_weight`` against ``model_weight``); it is averaged with the
    uninformative 1/K by the weight of one more vote. A new item's score is the model's
    confidence averaged with 1/K by the same weight. The item's score is its worst concept.

    Args:
        crowd_posteriors: ``(n_l, C)`` aggregated posteriors of classified items.
        n_votes: ``(n_l,)`` counted classifications of each.
        model_labelled: ``(n_l, C)`` model probabilities for the classified items (out of sample).
        model_unlabelled: ``(n_u, C)`` model probabilities for the new items.
        annotator_weight: the weight of one volunteer's vote relative to the model.
        model_weight: the model's weight.
    """
    crowd = np.asarray(crowd_posteriors, dtype=np.float64)
    model_l = np.asarray(model_labelled, dtype=np.float64)
    model_u = np.asarray(model_unlabelled, dtype=np.float64)
    votes = np.asarray(n_votes, dtype=np.float64)[:, None]
    evidence = votes * annotator_weight + model_weight  # (n_l, 1)
    blend = (votes * annotator_weight * crowd + model_weight * model_l) / np.maximum(evidence, _EPS)
    consensus = crowd > 0.5
    quality = np.where(consensus, blend, 1.0 - blend)  # P(consensus label is right)
    labelled = (
        ((evidence * quality + annotator_weight * 0.5) / (evidence + annotator_weight)).min(axis=1)
        if crowd.size
        else np.empty(len(crowd))
    )
    confidence = np.maximum(model_u, 1.0 - model_u)
    unlabelled = (
        (
            (model_weight * confidence + annotator_weight * 0.5) / (model_weight + annotator_weight)
        ).min(axis=1)
        if model_u.size
        else np.empty(len(model_u))
    )
    return RelabelDecision(labelled=labelled, unlabelled=unlabelled)
