"""Zero-shot model versions: an image-text model scores the pool before the crowd said anything.

A version of kind ``zero_shot`` has a JSON sidecar for checkpoint (``ARTIFACT_ROOT/zero_shot/``:
architecture, weights file and sha256, concepts, prompts; :mod:`ml.zero_shot` states the score
rule) whose hash is the row's ``checkpoint_sha256``, so a changed prompt or weights file is
refused on load. Its scores are :class:`Prediction` rows, its image embeddings go to the embedding
cache. It is never made active (what loads the active version expects a trained network, and
even a weak trained model knows the vocabulary as the crowd uses it): until a trained model is
scored it chooses the first round (``training.services.selection``) and flags doubtful prior
labels (``training.services.conflicts``). The pool is scored here (:func:`zero_shot_pool_score`)
or in the workers' scoring chunks (:func:`zero_shot_items_score`), to the same scores and flags;
PyTorch and open_clip are imported only inside the functions that score.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotate.models import Concept
from config.task_kinds import broker_errors, task_named
from ml.checkpoint import atomic_write_bytes, sha256_file
from training.models import ModelVersion, Prediction
from training.selectors import zero_shot_version_latest
from training.services.model_cache import VersionCache
from training.services.params import training_device
from training.services.predictions import pool_items, predictions_store

logger = logging.getLogger(__name__)

SIDECAR_FORMAT = "crowdloop-zero-shot"
SIDECAR_VERSION = 1
SCORE_RULE = "sigmoid(scale * (cos(image, concept prompts) - cos(image, neutral prompts)))"

Progress = Callable[[int, int], None]


class ZeroShotServiceError(ValueError):
    """A zero-shot version that cannot be made or used (no concepts, missing or changed files)."""


@dataclass(frozen=True)
class ZeroShotScoring:
    version: ModelVersion
    stored: int
    refused: int
    skipped: int
    flags_changed: int

    def summary(self) -> str:
        return (
            f"zero-shot v{self.version.pk} ({self.version.backbone}): {self.stored} items scored, "
            f"{self.refused} images refused, {self.skipped} already scored; "
            f"{self.flags_changed} prior-doubt flags changed"
        )


def _artifact_root() -> Path:
    return Path(settings.ARTIFACT_ROOT).resolve()


def zero_shot_sidecar(version: ModelVersion) -> dict[str, Any]:
    """The version's sidecar, after it hashes to the row's ``checkpoint_sha256``.

    Raises:
        ZeroShotServiceError: not a zero-shot version, a path outside ARTIFACT_ROOT, a missing
            or changed sidecar.
    """
    if version.kind != ModelVersion.Kind.ZERO_SHOT:
        raise ZeroShotServiceError(f"v{version.pk} is not a zero-shot version")
    root = _artifact_root()
    path = (root / version.checkpoint_path).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise ZeroShotServiceError(f"v{version.pk}: sidecar missing: {version.checkpoint_path}")
    if sha256_file(path) != version.checkpoint_sha256:
        raise ZeroShotServiceError(f"v{version.pk}: the sidecar was changed since it was made")
    meta = json.loads(path.read_text())
    if meta.get("format") != SIDECAR_FORMAT or meta.get("version") != SIDECAR_VERSION:
        raise ZeroShotServiceError(f"v{version.pk}: {path.name} is not a zero-shot sidecar")
    return meta


def _weights_path(meta: dict[str, Any]) -> Path:
    path = Path(meta["weights_file"])
    return path if path.is_absolute() else _artifact_root() / path


def zero_shot_model_load(version: ModelVersion):  # -> ml.zero_shot.ZeroShotModel
    """The version's image-text model with its concepts' text embeddings, weights verified."""
    from ml.zero_shot import ZeroShotError, create_zero_shot_model, weights_fetch

    meta = zero_shot_sidecar(version)
    try:
        path, _ = weights_fetch(
            f"{_weights_path(meta)}#sha256={meta['weights_sha256']}",
            cache_dir=_weights_cache(),
            name=meta["model"],
        )
        model = create_zero_shot_model(meta["model"], weights=path, config=meta["config"])
    except ZeroShotError as exc:
        raise ZeroShotServiceError(f"v{version.pk}: {exc}") from exc
    model.set_concepts(meta["prompts"])
    return model


def _weights_cache() -> Path:
    return Path(settings.ARTIFACT_ROOT) / "weights"


def zero_shot_version_create(
    *,
    model_name: str,
    weights: str,
    config: dict[str, Any] | None = None,
) -> ModelVersion:
    """Record a zero-shot version of the active vocabulary (not scored yet, never active).

    Args:
        model_name: an open_clip model name (``ViT-B-32``), or a name for ``config``.
        weights: a weights spec (:mod:`ml.weights`): a local file, or an http(s) URL pinned as
            ``URL#sha256=<hex>``, downloaded once into ``ARTIFACT_ROOT/weights/``; a local file
            may be pinned the same way.
        config: an open_clip architecture dict instead of the one registered under the name.

    Raises:
        ZeroShotServiceError: no active concepts, weights refused (hash, format, architecture).
    """
    from ml.zero_shot import (
        NEUTRAL,
        TEMPLATES,
        ZeroShotError,
        clip_config,
        concept_prompts,
        create_zero_shot_model,
        embedding_key,
        neutral_prompts,
        weights_fetch,
    )

    concepts = list(
        Concept.objects.filter(active=True)
        .order_by("position", "key")
        .values_list("key", "label", "description")
    )
    if not concepts:
        raise ZeroShotServiceError("there are no active concepts to score")
    try:
        path, sha = weights_fetch(weights, cache_dir=_weights_cache(), name=model_name)
        cfg = clip_config(model_name, config)
        # Built once here so that weights that do not fit the architecture never become a row.
        create_zero_shot_model(model_name, weights=path, config=cfg)
    except ZeroShotError as exc:
        raise ZeroShotServiceError(str(exc)) from exc
    root = _artifact_root()
    resolved = path.resolve()
    weights_file = (
        str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(resolved)
    )
    size = int(cfg["vision_cfg"].get("image_size", 224))
    meta = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "model": model_name,
        "config": cfg,
        "weights": weights,
        "weights_file": weights_file,
        "weights_sha256": sha,
        "concepts": [key for key, _, _ in concepts],
        "prompts": [
            concept_prompts(label or key, description) for key, label, description in concepts
        ],
        "templates": list(TEMPLATES),
        "neutral": NEUTRAL,
        "neutral_prompts": neutral_prompts(),
        "rule": SCORE_RULE,
        "embedding_key": embedding_key(model_name, sha, size),
        "embedding_dim": int(cfg["embed_dim"]),
        "created_at": timezone.now().isoformat(),
    }
    data = json.dumps(meta, indent=1, sort_keys=True).encode()
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S-%f")
    rel = Path("zero_shot") / f"zero-shot-{stamp}-{sha[:12]}.json"
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(root / rel, data)
    version = ModelVersion.objects.create(
        kind=ModelVersion.Kind.ZERO_SHOT,
        status=ModelVersion.Status.CANDIDATE,
        backbone=model_name[:64],
        mode="zero_shot",
        weights=weights[:500],
        weights_sha256=sha,
        concepts=meta["concepts"],
        checkpoint_path=str(rel),
        checkpoint_sha256=sha256_file(root / rel),
        metrics={"zero_shot": {"rule": SCORE_RULE, "templates": list(TEMPLATES)}},
    )
    logger.info("zero-shot v%s recorded: %s, weights %s", version.pk, model_name, sha[:12])
    return version


def _embedding_cache(meta: dict[str, Any]):  # -> ml.embeddings.EmbeddingCache
    from ml.embeddings import EmbeddingCache

    return EmbeddingCache(
        Path(settings.ARTIFACT_ROOT) / "embeddings", meta["embedding_key"], meta["embedding_dim"]
    )


def _items_score(
    version: ModelVersion, model: Any, meta: dict[str, Any], items: list[tuple[int, str]]
) -> tuple[int, int]:
    """Embed (through the embedding cache), score and store (item id, image path) pairs with a
    loaded model; return (stored, refused). The one scoring step of both paths, in-process and
    in workers, so that both store the same scores."""
    from annotate.services.media import image_path
    from ml.embeddings import compute_embeddings

    if not items:
        return 0, 0
    result = compute_embeddings(
        model,  # duck-typed: embed(), data_config and num_features, like a backbone
        [str(image_path(rel)) for _, rel in items],
        cache=_embedding_cache(meta),
        device=training_device(),
        batch_size=int(settings.TRAINING_SCORE_BATCH_SIZE),
        max_pixels=settings.IMAGE_MAX_PIXELS,
        max_bytes=settings.IMAGE_MAX_BYTES,
    )
    model.to("cpu")
    probs = model.scores(result.features[result.ok])  # (m, C)
    ids = [items[i][0] for i in np.flatnonzero(result.ok)]
    with transaction.atomic():
        stored = predictions_store(version, ids, probs)
    for i, reason in result.failures.items():
        logger.warning("zero-shot v%s: item %s not scored: %s", version.pk, items[i][0], reason)
    return stored, len(items) - len(ids)


def zero_shot_pool_score(
    *, version: ModelVersion, batch_items: int = 1000, progress: Progress | None = None
) -> ZeroShotScoring:
    """Score every pool item the version has not scored yet, then refresh the prior-doubt flags.

    In this process; ``scoring.zero_shot_scoring_start`` does the same in workers. Batches of
    ``batch_items`` items are embedded (through the embedding cache), scored and stored; a run
    that stops part-way keeps what it stored, and running it again scores only the rest.
    ``scored_at`` is set when the whole pool is done.

    Args:
        version: a zero-shot version.
        batch_items: items stored per transaction.
        progress: called with ``(items done, items to do)``.
    """
    from training.services.conflicts import item_zero_shot_prior_refresh

    meta = zero_shot_sidecar(version)
    model = zero_shot_model_load(version)
    done_ids = set(
        Prediction.objects.filter(model_version=version).values_list("item_id", flat=True)
    )
    todo = [
        (pk, rel)
        for pk, rel in pool_items().order_by("pk").values_list("pk", "image_file")
        if pk not in done_ids
    ]
    stored = refused = 0
    for start in range(0, len(todo), max(1, batch_items)):
        batch = todo[start : start + batch_items]
        batch_stored, batch_refused = _items_score(version, model, meta, batch)
        stored += batch_stored
        refused += batch_refused
        if progress is not None:
            progress(min(start + len(batch), len(todo)), len(todo))
    ModelVersion.objects.filter(pk=version.pk).update(scored_at=timezone.now())
    version.refresh_from_db()
    changed = item_zero_shot_prior_refresh()
    scoring = ZeroShotScoring(
        version=version,
        stored=stored,
        refused=refused,
        skipped=len(done_ids),
        flags_changed=changed,
    )
    logger.info("%s", scoring.summary())
    return scoring


# ---------------------------------------------------------------------------- in workers

#: Zero-shot models kept loaded in one worker process: the chunks of one version share one.
_MODELS: VersionCache[Any] = VersionCache(keep=1)


def zero_shot_model_loaded(version: ModelVersion):  # -> ml.zero_shot.ZeroShotModel
    """The version's model, loaded once per process for the scoring chunks that follow.

    The sidecar is checked against the row on every call (a small file), so a sidecar changed
    after the model was loaded is still refused; the weights' hash is checked when loading.

    Raises:
        ZeroShotServiceError: as :func:`zero_shot_model_load` (nothing is kept).
    """
    zero_shot_sidecar(version)
    return _MODELS.get(version, zero_shot_model_load)


def zero_shot_model_cache_clear() -> None:
    """Forget the loaded zero-shot models (tests)."""
    _MODELS.clear()


def zero_shot_items_score(
    *, version: ModelVersion, items: list[tuple[int, str]]
) -> tuple[int, int]:
    """Score the (item id, image path) pairs the version has not scored yet; (stored, refused).

    What a scoring chunk of a zero-shot version runs (``training.services.scoring.items_score``).
    Items it already scored are left as they are, so a redelivered or re-run chunk stores
    nothing twice and does not load the model when nothing is left.
    """
    if not items:
        return 0, 0
    ids = [pk for pk, _ in items]
    scored = set(
        Prediction.objects.filter(
            model_version=version, item_id__gte=min(ids), item_id__lte=max(ids)
        ).values_list("item_id", flat=True)
    )
    todo = [(pk, rel) for pk, rel in items if pk not in scored]
    if not todo:
        return 0, 0
    meta = zero_shot_sidecar(version)
    return _items_score(version, zero_shot_model_loaded(version), meta, todo)


def zero_shot_scoring_finished(*, version_id: int) -> None:
    """After a worker scored a zero-shot version's last chunk (on commit): refresh the
    prior-doubt flags of every item in a task on the default queue, since the version is now
    the latest scored one."""
    item_zero_shot_prior_refresh_task = task_named(
        "training.tasks.item_zero_shot_prior_refresh_task"
    )

    try:
        item_zero_shot_prior_refresh_task.delay(item_ids=None)
    except broker_errors() as exc:
        logger.error("zero-shot v%s: the prior-doubt refresh was not sent: %s", version_id, exc)


# ---------------------------------------------------------------------------- cold start


@dataclass(frozen=True)
class ZeroShotPool:
    """What a zero-shot version says about a cold start's shortlist.

    ``embeddings`` is None when some shortlisted image has no cached image embedding (the cache
    was cleared, or the file changed since scoring); the caller then computes other features.
    """

    version: ModelVersion
    shortlist: list[tuple[int, str]]
    probs: np.ndarray  # (n, C)
    embeddings: np.ndarray | None  # (n, D)


def zero_shot_cold_start_pool(
    candidates: list[tuple[int, str]],
    *,
    shortlist_size: int,
    extra: int,
    rng: np.random.Generator,
    version: ModelVersion | None = None,
) -> ZeroShotPool | None:
    """The most uncertain candidates by the latest zero-shot version, plus random others.

    The shortlist is the ``shortlist_size`` candidates with the largest stored uncertainty and
    ``extra`` more drawn at random among the other scored candidates (the random control share
    must come from the whole pool, not only the uncertain). ``version`` is used when it is a
    zero-shot version, else the latest scored one. None when there is none, or it scored fewer
    than ``extra`` of the candidates.
    """
    from annotate.services.media import image_path
    from ml.data import source_sha256
    from ml.images import ImageError

    if version is None or version.kind != ModelVersion.Kind.ZERO_SHOT:
        version = zero_shot_version_latest()
    if version is None:
        return None
    by_id = dict(candidates)
    scored = [
        (pk, unc)
        for pk, unc in Prediction.objects.filter(model_version=version)
        .order_by("-uncertainty", "item_id")
        .values_list("item_id", "uncertainty")
        if pk in by_id
    ]
    if len(scored) < max(1, extra):
        return None
    ranked = [pk for pk, _ in scored[:shortlist_size]]
    rest = np.asarray([pk for pk, _ in scored[shortlist_size:]], dtype=np.int64)
    ids = ranked + rng.permutation(rest)[:extra].tolist()
    row = {pk: i for i, pk in enumerate(ids)}
    probs = np.zeros((len(ids), len(version.concepts)), dtype=np.float64)
    for item_id, blob in Prediction.objects.filter(
        model_version=version, item_id__in=ids
    ).values_list("item_id", "scores"):
        probs[row[item_id]] = np.frombuffer(bytes(blob), dtype="<f4")
    shortlist = [(pk, by_id[pk]) for pk in ids]
    embeddings = None
    try:
        meta = zero_shot_sidecar(version)
        hashes = [
            source_sha256(str(image_path(rel)), max_bytes=settings.IMAGE_MAX_BYTES)
            for _, rel in shortlist
        ]
        feats, found = _embedding_cache(meta).get(hashes)
        if found.all():
            embeddings = feats.astype(np.float64)
    except (ZeroShotServiceError, ImageError, OSError, ValueError) as exc:
        logger.warning(
            "zero-shot v%s: no cached embeddings for the cold start: %s", version.pk, exc
        )
    return ZeroShotPool(version=version, shortlist=shortlist, probs=probs, embeddings=embeddings)
