"""Scoring the pool: predictions of a model version for every item with a usable image.

The pool is cut into contiguous id ranges (:class:`ScoringChunk`), one Celery task each on the
``train`` queue. A chunk is claimed with a conditional UPDATE that counts its attempts (the
poison guard), upserts its predictions in bulk (a redelivered chunk rewrites the same rows) and
is counted done once; one that raises (other than a transient database error, retried) is marked
failed, and the version stays unscored until ``scoring_start(resume=True)``. The reconciler
re-sends chunks left undone. Zero-shot versions use the same chunks
(:func:`training.services.zero_shot.zero_shot_items_score`); their last chunk refreshes the
prior-doubt flags instead of announcing ``pool_scored`` ("the active model scored the pool").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from annotate.services.media import image_path
from config.task_kinds import broker_errors, task_named
from ml.embeddings import EmbeddingCache, compute_embeddings, model_key
from ml.models import MultiLabelNet
from training.models import ModelVersion, Prediction, ScoringChunk
from training.selectors import model_version_active
from training.services.model_cache import model_version_loaded
from training.services.params import training_device
from training.services.predictions import pool_items, predictions_store
from training.services.zero_shot import (
    zero_shot_items_score,
    zero_shot_scoring_finished,
    zero_shot_sidecar,
)
from training.signals import pool_scored

logger = logging.getLogger(__name__)


def embedding_cache(model: MultiLabelNet) -> EmbeddingCache:
    return EmbeddingCache(
        Path(settings.ARTIFACT_ROOT) / "embeddings", model_key(model), model.num_features
    )


def probabilities(
    version: ModelVersion, sources: list[str]
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Scores (n, C) of image files under a version, an ok mask (n,), and refusals by index."""
    # Kept per worker process: the chunks of one version share one loaded model.
    loaded = model_version_loaded(version)
    model = loaded.model
    if not isinstance(model, MultiLabelNet):
        raise TypeError("scoring needs a full network checkpoint, not a bare head")
    # Head-mode versions share their trunk with training: its cached features are reused.
    cache = embedding_cache(model) if version.mode == "head" else None
    result = compute_embeddings(
        model,
        sources,
        cache=cache,
        device=training_device(),
        batch_size=int(settings.TRAINING_SCORE_BATCH_SIZE),
        max_pixels=settings.IMAGE_MAX_PIXELS,
        max_bytes=settings.IMAGE_MAX_BYTES,
    )
    probs = np.zeros((len(sources), len(version.concepts)), dtype=np.float32)
    if result.ok.any():
        model.head.to("cpu").eval()
        with torch.inference_mode():
            logits = model.head(torch.from_numpy(result.features[result.ok]))  # (m, C)
        probs[result.ok] = torch.sigmoid(logits).numpy()
    return probs, result.ok, result.failures


def items_score(version: ModelVersion, items: list[tuple[int, str]]) -> tuple[int, int]:
    """Score (item id, relative image path) pairs and store them; (stored, refused).

    A zero-shot version scores with its image-text model, and only the items it has not scored.
    """
    if version.kind == ModelVersion.Kind.ZERO_SHOT:
        return zero_shot_items_score(version=version, items=items)
    sources = [str(image_path(rel)) for _, rel in items]
    probs, ok, failures = probabilities(version, sources)
    ids = [items[i][0] for i in np.flatnonzero(ok)]
    stored = predictions_store(version, ids, probs[ok])
    for i, reason in failures.items():
        logger.warning("v%s: item %s not scored: %s", version.pk, items[i][0], reason)
    return stored, len(items) - stored


# ---------------------------------------------------------------------------- chunks


#: Errors a chunk leaves to the task's bounded retry instead of failing on them.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)


def _chunk_bounds(size: int, *, after: int = 0) -> Iterator[tuple[int, int]]:
    """Contiguous (first id, last id) ranges of ``size`` pool items with ids above ``after``,
    streamed by primary key."""
    first = last = None
    count = 0
    ids = pool_items().filter(pk__gt=after).order_by("pk").values_list("pk", flat=True)
    for pk in ids.iterator(chunk_size=10000):
        if first is None:
            first = pk
        last, count = pk, count + 1
        if count == size:
            yield first, last
            first, count = None, 0
    if first is not None:
        assert last is not None  # set with first, from the same pk
        yield first, last


def scoring_start(*, model_version_id: int, resume: bool = False) -> int:
    """Cut the pool into chunks for a version (once), send those not done; return how many.

    With ``resume``, failed chunks are tried again (their attempts start over) and pool items
    added after the last chunk get chunks of their own; ``scored_at`` of an earlier complete
    scoring is kept until the new chunks are done.
    """
    version = ModelVersion.objects.get(pk=model_version_id)
    if resume:
        _failed_chunks_reopen(version)
    if resume or not version.scoring_chunks:
        size = max(1, int(settings.TRAINING_SCORE_CHUNK_SIZE))
        max_attempts = int(settings.TRAINING_MAX_ATTEMPTS)
        edge = ScoringChunk.objects.filter(model_version=version).aggregate(
            last=Max("last_item_id"), index=Max("index")
        )
        start = 0 if edge["index"] is None else edge["index"] + 1
        chunks = [
            ScoringChunk(
                model_version=version,
                index=i,
                first_item_id=a,
                last_item_id=b,
                max_attempts=max_attempts,
            )
            for i, (a, b) in enumerate(_chunk_bounds(size, after=edge["last"] or 0), start)
        ]
        if chunks or not version.scoring_chunks:
            with transaction.atomic():
                ScoringChunk.objects.bulk_create(chunks, batch_size=1000, ignore_conflicts=True)
                n = ScoringChunk.objects.filter(model_version=version).count()
                ModelVersion.objects.filter(pk=version.pk).update(scoring_chunks=n)
                if n == 0:
                    ModelVersion.objects.filter(pk=version.pk).update(scored_at=timezone.now())
                    _scored_on_commit(version.pk)
    pending = list(
        ScoringChunk.objects.filter(
            model_version=version, done_at__isnull=True, error=""
        ).values_list("pk", flat=True)
    )
    return chunks_send(pending)


def _failed_chunks_reopen(version: ModelVersion) -> int:
    """Give the version's failed chunks a fresh start (no error, no attempts); return how many."""
    with transaction.atomic():
        reopened = (
            ScoringChunk.objects.filter(model_version=version, done_at__isnull=True)
            .exclude(error="")
            .update(error="", attempts=0, sent_at=None)
        )
        if reopened:
            failed = ScoringChunk.objects.filter(model_version=version).exclude(error="").count()
            ModelVersion.objects.filter(pk=version.pk).update(scoring_chunks_failed=failed)
    if reopened:
        logger.info("v%s: %d failed scoring chunks tried again", version.pk, reopened)
    return reopened


@dataclass(frozen=True)
class ZeroShotQueued:
    version: ModelVersion
    sent: int
    chunks: int
    done: int
    failed: int

    def summary(self) -> str:
        v = self.version
        if self.failed:
            state = "not scored: run the command again with --model-version to retry them"
        elif self.done == self.chunks and v.scored_at is not None:
            state = "scored"
        else:
            state = "scoring; progress in the admin's model versions, column scoring"
        return (
            f"zero-shot v{v.pk} ({v.backbone}): {self.sent} chunks sent to the train queue; "
            f"{self.done}/{self.chunks} chunks done, {self.failed} failed ({state})"
        )


def zero_shot_scoring_start(*, version: ModelVersion) -> ZeroShotQueued:
    """Score the pool with a zero-shot version in workers: the scoring chunks of trained versions.

    The pool is cut into chunks (``TRAINING_SCORE_CHUNK_SIZE`` items) sent to the ``train``
    queue; each one scores the items of its id range that the version has not scored yet. Called
    again (resume), it sends the chunks not done, tries the failed ones again, and cuts chunks
    for items added after the last one. When the last chunk is done ``scored_at`` is set and the
    prior-doubt flags are refreshed in a task, as :func:`zero_shot_pool_score` does in-process.
    A chunk that fails is recorded on its row and counted in ``scoring_chunks_failed``; the
    version is then not scored (not the latest, no flags) until a resume scores it.

    Raises:
        ZeroShotServiceError: not a zero-shot version, its sidecar missing or changed.
    """
    zero_shot_sidecar(version)
    sent = scoring_start(model_version_id=version.pk, resume=True)
    version.refresh_from_db()
    return ZeroShotQueued(
        version=version,
        sent=sent,
        chunks=version.scoring_chunks,
        done=version.scoring_chunks_done,
        failed=version.scoring_chunks_failed,
    )


def _chunk_fail(chunk: ScoringChunk, error: str) -> bool:
    """Mark an unfinished chunk failed and count it on its version (once); False if it was not
    open any more."""
    with transaction.atomic():
        if not ScoringChunk.objects.filter(pk=chunk.pk, done_at__isnull=True, error="").update(
            error=error[:2000]
        ):
            return False
        ModelVersion.objects.filter(pk=chunk.model_version_id).update(
            scoring_chunks_failed=F("scoring_chunks_failed") + 1
        )
    return True


def _scored_on_commit(version_id: int) -> None:
    kind = ModelVersion.objects.filter(pk=version_id).values_list("kind", flat=True).first()
    if kind == ModelVersion.Kind.ZERO_SHOT:
        transaction.on_commit(partial(zero_shot_scoring_finished, version_id=version_id))
        return

    def send() -> None:
        failed = (
            ModelVersion.objects.filter(pk=version_id)
            .values_list("scoring_chunks_failed", flat=True)
            .first()
        )
        pool_scored.send(sender=ModelVersion, version_id=version_id, failed=failed or 0)

    transaction.on_commit(send)


def chunks_send(chunk_ids: Iterable[int]) -> int:
    """Send chunk tasks as one group; a broker outage leaves them for the reconciler."""
    from celery import group

    training_score_chunk = task_named("training.tasks.training_score_chunk")

    ids = list(chunk_ids)
    if not ids:
        return 0
    ScoringChunk.objects.filter(pk__in=ids).update(sent_at=timezone.now())
    try:
        group(training_score_chunk.si(chunk_id=pk) for pk in ids).apply_async()
    except broker_errors() as exc:
        logger.error("scoring chunks not sent (the reconciler will retry): %s", exc)
        return 0
    return len(ids)


def scoring_chunk_execute(*, chunk_id: int) -> str:
    """Score one chunk; safe to run twice. Returns what happened, for the task's result."""
    now = timezone.now()
    with transaction.atomic():
        chunk = (
            ScoringChunk.objects.select_for_update(skip_locked=True)
            .filter(pk=chunk_id, done_at__isnull=True, error="")
            .first()
        )
        if chunk is None:
            return "done, given up, or being claimed"
        if chunk.attempts_spent:
            # Poison guard: every earlier attempt died with its worker.
            _chunk_fail(chunk, f"gave up after {chunk.attempts} attempts")
            return "gave up"
        ScoringChunk.objects.filter(pk=chunk.pk).count_attempt()
    version = ModelVersion.objects.get(pk=chunk.model_version_id)
    items = list(
        pool_items()
        .filter(pk__gte=chunk.first_item_id, pk__lte=chunk.last_item_id)
        .order_by("pk")
        .values_list("pk", "image_file")
    )
    try:
        stored, refused = items_score(version, items)
    except TRANSIENT_ERRORS:
        raise  # the task retries; the attempt is counted
    except Exception as exc:  # a permanent error: recorded where staff look, never done
        logger.exception("chunk %s of v%s failed", chunk.index, version.pk)
        _chunk_fail(chunk, f"{type(exc).__name__}: {exc}")
        return f"chunk {chunk.index} of v{version.pk} failed: {type(exc).__name__}: {exc}"
    with transaction.atomic():
        if ScoringChunk.objects.filter(pk=chunk.pk, done_at__isnull=True, error="").update(
            done_at=now
        ):
            ModelVersion.objects.filter(pk=version.pk).update(
                scoring_chunks_done=F("scoring_chunks_done") + 1
            )
            # Each chunk counts once, so exactly one reaches the total: the version's row is
            # locked from the increment to the commit. (Not "scored_at is null": a resumed
            # zero-shot version keeps its earlier scored_at until its new chunks are done.)
            finished = ModelVersion.objects.filter(
                pk=version.pk,
                scoring_chunks_done__gte=F("scoring_chunks"),
            ).update(scored_at=timezone.now())
            if finished:
                _scored_on_commit(version.pk)
    return f"chunk {chunk.index} of v{version.pk}: {stored} scored, {refused} refused"


def scoring_reconcile(*, now: datetime, stale_after_s: float) -> int:
    """Send again the chunks of unfinished scorings whose message went out too long ago."""
    stale = now - timedelta(seconds=stale_after_s)
    ids = (
        ScoringChunk.objects.filter(done_at__isnull=True, error="")
        .filter(Q(sent_at__isnull=True) | Q(sent_at__lt=stale))
        .values_list("pk", flat=True)
    )
    return chunks_send(list(ids[:10000]))


# ---------------------------------------------------------------------------- export


def _read_ids(path: Path) -> list[str]:
    """External ids from a JSONL/CSV manifest (column external_id) or a plain list, one a line."""
    import csv

    text = path.read_text(encoding="utf-8-sig")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    if lines[0].lstrip().startswith("{"):
        return [str(json.loads(line)["external_id"]) for line in lines]
    if "external_id" in lines[0].split(","):
        return [row["external_id"] for row in csv.DictReader(lines)]
    return [line.strip() for line in lines]


def predictions_export(
    *, out: Path, items_path: Path | None = None, model_version_id: int | None = None
) -> dict[str, Any]:
    """Write JSONL ``{"external_id", "scores": {key: p}}`` for the pool or the listed items.

    Stored predictions are read; items not scored yet are scored now (and stored).

    Raises:
        ValueError: no such version, or no active version.
    """
    if model_version_id is not None:
        version = ModelVersion.objects.filter(pk=model_version_id).first()
        if version is None:
            raise ValueError(f"no model version {model_version_id}")
    else:
        version = model_version_active()
        if version is None:
            raise ValueError("there is no active model version: train one first")
    wanted = _read_ids(items_path) if items_path else None
    queryset = pool_items().order_by("pk")
    missing_ids: list[str] = []
    if wanted is not None:
        known = set(queryset.filter(external_id__in=wanted).values_list("external_id", flat=True))
        missing_ids = [e for e in wanted if e not in known]
        queryset = queryset.filter(external_id__in=wanted)
    written = refused = 0
    keys = version.concepts
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        last = 0
        while True:
            # Keyset pages: a million-item pool is never held in memory at once.
            block = list(
                queryset.filter(pk__gt=last).values_list("pk", "external_id", "image_file")[:2000]
            )
            if not block:
                break
            last = block[-1][0]
            ids = [pk for pk, _, _ in block]
            stored = dict(
                Prediction.objects.filter(model_version=version, item_id__in=ids).values_list(
                    "item_id", "scores"
                )
            )
            todo = [(pk, image) for pk, _, image in block if pk not in stored]
            if todo:
                items_score(version, todo)
                stored.update(
                    Prediction.objects.filter(
                        model_version=version, item_id__in=[pk for pk, _ in todo]
                    ).values_list("item_id", "scores")
                )
            for pk, external_id, _ in block:
                if pk not in stored:
                    refused += 1
                    continue
                probs = np.frombuffer(bytes(stored[pk]), dtype="<f4")
                scores = {k: round(float(p), 6) for k, p in zip(keys, probs, strict=True)}
                fh.write(json.dumps({"external_id": external_id, "scores": scores}) + "\n")
                written += 1
    return {
        "model_version": version.pk,
        "written": written,
        "refused": refused,
        "unknown": len(missing_ids),
    }
