"""Choosing the next round: the items the model is least sure of, plus a random control share.

The pool is every checked image not shown to volunteers yet. With an active model version its
stored predictions rank the pool; strategies that need more than scores (BALD's Monte-Carlo
samples, k-center's embeddings) look again at a shortlist of the most uncertain items with the
model itself. With no model yet, the round is a cold start: typical, varied images, chosen on
the features of an untrained network (random convolutions still group images by look); or, when
a zero-shot version has scored the pool, the images it is least sure of, spread by k-center over
its image embeddings (``training.services.zero_shot``). Already
classified items whose crowd label is still contested compete with new items for places
(ActiveLab's relabel-or-new decision); they are put back in the queue on Zooniverse instead of
being pushed again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Q

from annotate.models import AggregatedLabel, Item, Round, RoundPick, Subject, Workflow
from annotate.services.media import image_path
from ml import acquisition
from ml.embeddings import compute_embeddings
from ml.models import MultiLabelNet, create_model
from training.models import ModelVersion, Prediction
from training.selectors import model_version_active
from training.services.scoring import pool_items
from training.services.versions import model_version_load
from training.services.zero_shot import zero_shot_cold_start_pool

logger = logging.getLogger(__name__)

COLD_START = "typical_diverse"
# With a zero-shot version's scores: entropy-weighted k-center over its most uncertain images.
ZERO_SHOT_COLD_START = acquisition.ZERO_SHOT_COLD_START


class SelectionError(ValueError):
    """A round that cannot be chosen (empty pool, unknown strategy)."""


@dataclass
class SelectionResult:
    round: Round
    picks: list[RoundPick]
    strategy: str
    model_version: ModelVersion | None
    pool_size: int
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        reasons: dict[str, int] = {}
        for pick in self.picks:
            reasons[pick.reason] = reasons.get(pick.reason, 0) + 1
        parts = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
        version = f"model v{self.model_version.pk}" if self.model_version else "no model"
        return (
            f"{self.round.name}: {len(self.picks)} of {self.pool_size} candidates by "
            f"{self.strategy} ({version}): {parts}"
        )


def _candidates() -> list[tuple[int, str]]:
    """(item id, image path) of pool items no volunteer has been shown yet."""
    shown = Subject.objects.filter(item__isnull=False).values("item_id")
    return list(
        pool_items()
        .exclude(pk__in=shown)
        .exclude(review_state=Item.ReviewState.REJECTED)
        .order_by("pk")
        .values_list("pk", "image_file")
    )


def _model_view(
    version: ModelVersion, sources: list[str], *, mc_samples: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Probabilities, embeddings and MC-dropout samples of a shortlist, and which images loaded."""
    loaded = model_version_load(version)
    model = loaded.model
    if not isinstance(model, MultiLabelNet):
        raise SelectionError("selection needs a full network checkpoint")
    result = compute_embeddings(
        model, sources, max_pixels=settings.IMAGE_MAX_PIXELS, max_bytes=settings.IMAGE_MAX_BYTES
    )
    feats = torch.from_numpy(result.features)
    with torch.inference_mode():
        model.head.eval()
        probs = torch.sigmoid(model.head(feats)).numpy().astype(np.float64)
        samples = None
        has_dropout = any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.head.modules())
        if mc_samples and has_dropout:
            model.head.train()  # dropout on: each pass samples the posterior over weights
            torch.manual_seed(0)
            samples = np.stack(
                [torch.sigmoid(model.head(feats)).numpy() for _ in range(mc_samples)]
            ).astype(np.float64)
            model.head.eval()
    return probs, result.features.astype(np.float64), samples, result.ok


def concept_prevalence(concepts: list[str]) -> np.ndarray | None:
    """(C,) share of crowd-labelled items that show each concept, in ``concepts``' order.

    What the rare-concept strategies weigh by (``ml.acquisition.rarity_weights``); None while no
    item has a crowd label (the strategies then use the model's own mean score).
    """
    rows = (
        AggregatedLabel.objects.filter(concept__key__in=concepts)
        .values("concept__key")
        .annotate(items=Count("item_id"), positive=Count("item_id", filter=Q(posterior__gt=0.5)))
    )
    counts = {row["concept__key"]: (row["positive"], row["items"]) for row in rows}
    if not counts:
        return None
    return np.array(
        [counts[k][0] / counts[k][1] if counts.get(k, (0, 0))[1] else 0.0 for k in concepts]
    )


def _cold_start_features(sources: list[str]) -> tuple[np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    model = create_model("small_cnn", num_concepts=1)
    result = compute_embeddings(
        model, sources, max_pixels=settings.IMAGE_MAX_PIXELS, max_bytes=settings.IMAGE_MAX_BYTES
    )
    return result.features.astype(np.float64), result.ok


def _relabel_candidates(
    version: ModelVersion, limit: int
) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """Contested, already classified items: ids, crowd posteriors, votes, model scores."""
    items = list(
        Item.objects.filter(
            consensus=Item.Consensus.UNCERTAIN, review_state=Item.ReviewState.UNREVIEWED
        )
        .filter(predictions__model_version=version)
        .order_by("-uncertainty", "pk")
        .values_list("pk", "n_classifications")[:limit]
    )
    if not items:
        return [], np.empty((0, 0)), np.empty(0), np.empty((0, 0))
    ids = [pk for pk, _ in items]
    keys = list(version.concepts)
    column = {k: j for j, k in enumerate(keys)}
    row = {pk: i for i, pk in enumerate(ids)}
    crowd = np.full((len(ids), len(keys)), 0.5)
    for item_id, key, posterior in AggregatedLabel.objects.filter(item_id__in=ids).values_list(
        "item_id", "concept__key", "posterior"
    ):
        if key in column:
            crowd[row[item_id], column[key]] = posterior
    model = np.zeros((len(ids), len(keys)))
    for item_id, blob in Prediction.objects.filter(
        model_version=version, item_id__in=ids
    ).values_list("item_id", "scores"):
        model[row[item_id]] = np.frombuffer(bytes(blob), dtype="<f4")
    votes = np.array([n for _, n in items], dtype=np.float64)
    return ids, crowd, votes, model


def round_select(
    *,
    size: int,
    strategy: str | None = None,
    random_share: float | None = None,
    workflow: Workflow | None = None,
    model_version: ModelVersion | None = None,
    relabel: bool | None = None,
    seed: int = 0,
    on_recorded: Callable[[Round], None] | None = None,
) -> SelectionResult:
    """Choose and record the next round (a draft: push it with ``round_push``).

    Args:
        size: items in the round.
        strategy: an ``ml.acquisition`` strategy (default ACQUISITION_STRATEGY); ignored for a
            cold start.
        random_share: the random control share (default ACQUISITION_RANDOM_SHARE, 15%).
        workflow: the Zooniverse workflow it goes to (default: the only active one).
        model_version: whose predictions to use (default: the active version).
        relabel: let contested, already classified items compete for places (default
            ACQUISITION_RELABEL).
        seed: makes the random parts reproducible.
        on_recorded: called with the new round inside the transaction that records it (a round
            request links itself there, so the round and the link commit together or not at all).
    """
    if size < 1:
        raise SelectionError("a round needs at least one item")
    random_share = (
        random_share
        if random_share is not None
        else getattr(settings, "ACQUISITION_RANDOM_SHARE", 0.15)
    )
    wanted = strategy or getattr(settings, "ACQUISITION_STRATEGY", "entropy")
    if wanted not in acquisition.STRATEGIES:
        raise SelectionError(
            f"unknown strategy {wanted!r}; "
            f"choose one of: {', '.join(acquisition.list_strategies())}"
        )
    if workflow is None:
        workflow = Workflow.objects.filter(active=True).order_by("pk").first()
    version = model_version or model_version_active()
    candidates = _candidates()
    if not candidates:
        raise SelectionError("no item is waiting: every checked image has been shown already")
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    shortlist_size = min(len(candidates), max(5 * size, size + 50))

    cold = (
        version is None
        or version.kind == ModelVersion.Kind.ZERO_SHOT
        or (version.scored_at is None and not version.predictions.exists())
    )
    zero_shot = (
        zero_shot_cold_start_pool(
            candidates, shortlist_size=shortlist_size, extra=size, rng=rng, version=version
        )
        if cold
        else None
    )
    if zero_shot is not None:
        # Cold start with a zero-shot version: the images it is least sure of, kept varied.
        used, version, relabel = ZERO_SHOT_COLD_START, zero_shot.version, False
        shortlist = zero_shot.shortlist
        feats, ok = zero_shot.embeddings, np.ones(len(shortlist), dtype=bool)
        if feats is None:
            feats, ok = _cold_start_features([str(image_path(rel)) for _, rel in shortlist])
        pool = acquisition.Pool(probs=zero_shot.probs[ok], embeddings=feats[ok])
        shortlist = [c for c, good in zip(shortlist, ok, strict=True) if good]
        notes.append(f"cold start: zero-shot v{version.pk}'s scores, uncertain and diverse")
    elif cold:
        used = COLD_START
        sample = rng.permutation(len(candidates))[:shortlist_size]
        shortlist = [candidates[i] for i in np.sort(sample)]
        feats, ok = _cold_start_features([str(image_path(rel)) for _, rel in shortlist])
        pool = acquisition.Pool(probs=np.full((len(shortlist), 1), 0.5)[ok], embeddings=feats[ok])
        shortlist = [c for c, good in zip(shortlist, ok, strict=True) if good]
        version = None
        notes.append("cold start: no scored model version yet")
    else:
        assert version is not None  # not cold
        used = wanted
        # The stored uncertainty picks the shortlist without decoding a single score blob.
        by_id = dict(candidates)
        ranked = (
            list(
                Prediction.objects.filter(model_version=version, item_id__in=list(by_id))
                .order_by("-uncertainty", "item_id")
                .values_list("item_id", flat=True)[:shortlist_size]
            )
            if len(by_id) < 10_000
            else list(
                Prediction.objects.filter(model_version=version)
                .order_by("-uncertainty", "item_id")
                .values_list("item_id", flat=True)[: shortlist_size * 4]
            )
        )
        ranked = [pk for pk in ranked if pk in by_id][:shortlist_size]
        # The random control draws from the whole pool, not only the uncertain shortlist.
        extra = [
            pk
            for pk in rng.permutation([pk for pk, _ in candidates]).tolist()
            if pk not in set(ranked)
        ]
        shortlist_ids = ranked + extra[: max(size, 1)]
        shortlist = [(pk, by_id[pk]) for pk in shortlist_ids]
        probs, feats, samples, ok = _model_view(
            version,
            [str(image_path(rel)) for _, rel in shortlist],
            mc_samples=int(getattr(settings, "ACQUISITION_MC_SAMPLES", 20)),
        )
        if used == "bald" and samples is None:
            used = "entropy"
            notes.append("the model's head has no dropout: BALD fell back to entropy")
        shortlist = [c for c, good in zip(shortlist, ok, strict=True) if good]
        pool = acquisition.Pool(
            probs=probs[ok],
            thresholds=np.asarray(version.thresholds, dtype=np.float64)
            if version.thresholds
            else None,
            mc_probs=samples[:, ok] if samples is not None else None,
            embeddings=feats[ok],
            prevalence=concept_prevalence(list(version.concepts)),
        )
    if not shortlist:
        raise SelectionError("no candidate image could be read")

    selection = acquisition.select(used, pool, size, random_share=random_share, seed=seed)
    picks: list[tuple[int, float | None, str]] = [
        (shortlist[i][0], None if np.isnan(s) else float(s), reason)
        for i, s, reason in zip(
            selection.indices.tolist(), selection.scores, selection.reasons, strict=True
        )
    ]

    if relabel is None:
        relabel = bool(getattr(settings, "ACQUISITION_RELABEL", False))
    if relabel and version is not None:
        picks = _with_relabels(
            picks, version=version, pool=pool, chosen=selection.indices, size=size
        )

    with transaction.atomic():
        number = (Round.objects.aggregate(n=Max("number"))["n"] or 0) + 1
        round_ = Round.objects.create(
            number=number,
            name=f"round-{number}",
            workflow=workflow,
            strategy=used,
            model_version=version,
            random_share=random_share,
            notes="; ".join(notes),
        )
        rows = RoundPick.objects.bulk_create(
            RoundPick(round=round_, item_id=item_id, rank=rank, score=score, reason=reason)
            for rank, (item_id, score, reason) in enumerate(picks, start=1)
        )
        if on_recorded is not None:
            on_recorded(round_)
    result = SelectionResult(
        round=round_,
        picks=rows,
        strategy=used,
        model_version=version,
        pool_size=len(candidates),
        notes=notes,
    )
    logger.info("select_round %s", result.summary())
    return result


def _with_relabels(
    picks: list[tuple[int, float | None, str]],
    *,
    version: ModelVersion,
    pool: acquisition.Pool,
    chosen: np.ndarray,
    size: int,
) -> list[tuple[int, float | None, str]]:
    """Let contested items take the places of the weakest model picks when a vote is worth more."""
    max_share = float(getattr(settings, "ACQUISITION_MAX_RELABEL_SHARE", 0.3))
    ids, crowd, votes, model = _relabel_candidates(version, limit=size)
    if not ids:
        return picks
    decision = acquisition.relabel_or_new(
        crowd_posteriors=crowd,
        n_votes=votes,
        model_labelled=model,
        model_unlabelled=pool.probs[chosen],
    )
    order, is_relabel = decision.order()
    model_picks = [p for p in picks if p[2] != "random"]
    control = [p for p in picks if p[2] == "random"]
    picked = {p[0] for p in picks}
    top = [i for i in order[:size][is_relabel[:size]].tolist() if ids[i] not in picked]
    # A relabel takes the place of a model pick, never of the random control: the round keeps
    # its size, and a random round (the anchor of every comparison) stays all random.
    top = top[: min(int(size * max_share), len(model_picks))]
    if not top:
        return picks
    keep = model_picks[: max(0, len(model_picks) - len(top))]
    relabels = [(ids[i], float(decision.labelled[i]), RoundPick.Reason.RELABEL.value) for i in top]
    return keep + relabels + control
