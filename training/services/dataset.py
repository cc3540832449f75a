"""The training set: final labels as targets, written as a hashed snapshot the run trains on.

A curator's decision (``accepted`` or ``edited``) makes ``curated_concepts`` a hard target;
``rejected`` items are left out; every other item trains on the crowd's posteriors as soft
targets, if the crowd said enough, weighted by the classifications behind them. The snapshot
(JSON under ``ARTIFACT_ROOT/runs/<id>/``, its sha256 on the run) is what a retry after a killed
worker reads back, so a resumed run continues on the data it started with. Train or validation
comes from the sha256 of each item's external id alone (:func:`ml.splits.stable_split`): an item
never moves between the splits as the pool grows, so the promotion gate
(:mod:`training.services.gate`) scores the active version on items no version trained on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db.models import Q

from annotate.models import AggregatedLabel, Concept, Item, Subject
from ml.checkpoint import atomic_write_bytes
from ml.splits import stable_split

SNAPSHOT_FORMAT = "crowdloop-training-snapshot"


class TrainingDataError(ValueError):
    """The labels cannot make a training set (too few items, no validation split...)."""


@dataclass
class TrainingSet:
    """Items with targets (N, C) in [0, 1] and weights (N,), in concept order ``concepts``."""

    concepts: list[str]
    item_ids: list[int]
    external_ids: list[str]
    images: list[str]  # paths relative to MEDIA_ROOT
    targets: np.ndarray
    weights: np.ndarray
    sources: list[str]  # "curator" or "crowd" per item
    split: np.ndarray  # "train" or "val" per item

    def __len__(self) -> int:
        return len(self.item_ids)

    def subset(self, name: str) -> np.ndarray:
        return np.flatnonzero(self.split == name)

    def counts(self) -> dict[str, int]:
        return {
            "items": len(self),
            "train": int((self.split == "train").sum()),
            "val": int((self.split == "val").sum()),
            "curator": self.sources.count("curator"),
            "crowd": self.sources.count("crowd"),
        }


def _trainable_items():
    """Items with a stored image, not rejected, and not shown by a subject deleted upstream."""
    deleted = Subject.objects.filter(upstream_state=Subject.Upstream.DELETED).values("item_id")
    return (
        Item.objects.filter(image_state=Item.ImageState.OK)
        .exclude(image_file="")
        .exclude(review_state=Item.ReviewState.REJECTED)
        .exclude(Q(pk__in=deleted) & ~Q(review_state__in=Item.ReviewState.CURATED))
    )


def training_set_build(*, concepts: list[str] | None = None) -> TrainingSet:
    """Read the final labels of every trainable item into arrays.

    Args:
        concepts: concept keys in output order; default the active vocabulary.

    Raises:
        TrainingDataError: no concepts, or too few items for a train and a validation split.
    """
    if concepts is None:
        concepts = list(
            Concept.objects.filter(active=True).order_by("position", "key").values_list(
                "key", flat=True)
        )
    if not concepts:
        raise TrainingDataError("there are no active concepts to train on")
    column = {key: c for c, key in enumerate(concepts)}
    concept_column = {
        pk: column[key] for pk, key in Concept.objects.filter(key__in=concepts).values_list(
            "pk", "key")
    }
    min_votes = float(settings.TRAINING_MIN_VOTES)
    min_confidence = float(settings.TRAINING_MIN_CONFIDENCE)
    full_votes = max(1.0, float(settings.TRAINING_FULL_EVIDENCE_VOTES))
    curated_weight = float(settings.TRAINING_CURATED_WEIGHT)

    item_ids: list[int] = []
    external_ids: list[str] = []
    images: list[str] = []
    targets: list[np.ndarray] = []
    weights: list[float] = []
    sources: list[str] = []
    items = _trainable_items()

    # 1) curator decisions: hard targets, full weight.
    for pk, ext, image, keys in items.curated().values_list(
        "pk", "external_id", "image_file", "curated_concepts"
    ).order_by("pk").iterator(chunk_size=5000):
        row = np.zeros(len(concepts), dtype=np.float32)
        for key in keys or []:
            if key in column:
                row[column[key]] = 1.0
        item_ids.append(pk)
        external_ids.append(ext)
        images.append(image)
        targets.append(row)
        weights.append(curated_weight)
        sources.append("curator")

    # 2) the crowd: posteriors as soft targets where enough votes and confidence stand behind them.
    crowd = items.exclude(review_state__in=Item.ReviewState.CURATED).filter(
        n_classifications__gte=min_votes
    )
    info = {
        pk: (ext, image)
        for pk, ext, image in crowd.values_list("pk", "external_id", "image_file").iterator(
            chunk_size=5000)
    }
    labels = (
        AggregatedLabel.objects.filter(item__in=crowd, concept_id__in=list(concept_column))
        .order_by("item_id")
        .values_list("item_id", "concept_id", "posterior", "votes_for", "votes_against")
    )
    # row is None only while current is: flush() returns before reading it.
    current, row, votes = None, None, 0  # type: ignore[assignment]  # see above

    def flush() -> None:
        if current is None or current not in info:
            return
        # A concept without a label (added after the last aggregation) counts as absent: the
        # volunteers were never offered it, and nobody ticked it.
        confidence = float(np.abs(2 * row - 1).mean())
        if votes < min_votes or confidence < min_confidence:
            return
        ext, image = info[current]
        item_ids.append(current)
        external_ids.append(ext)
        images.append(image)
        targets.append(np.clip(row, 0.0, 1.0))
        weights.append(min(1.0, votes / full_votes))
        sources.append("crowd")

    for item_id, concept_id, posterior, votes_for, votes_against in labels.iterator(
        chunk_size=20000
    ):
        if item_id != current:
            flush()
            current, row, votes = item_id, np.zeros(len(concepts), dtype=np.float32), 0
        row[concept_column[concept_id]] = posterior
        votes = max(votes, votes_for + votes_against)
    flush()

    n = len(item_ids)
    split = (
        stable_split(external_ids, (0.8, 0.2), names=("train", "val"))
        if n else np.array([], dtype=str)
    )
    data = TrainingSet(
        concepts=list(concepts),
        item_ids=item_ids,
        external_ids=external_ids,
        images=images,
        targets=np.stack(targets) if n else np.zeros((0, len(concepts)), dtype=np.float32),
        weights=np.asarray(weights, dtype=np.float32),
        sources=sources,
        split=split,
    )
    min_items = int(settings.TRAINING_MIN_ITEMS)
    counts = data.counts()
    if n < min_items or not counts["train"] or not counts["val"]:
        raise TrainingDataError(
            f"not enough final labels to train: {n} items ({counts['train']} train, "
            f"{counts['val']} validation); at least {min_items} with both splits non-empty are "
            "needed. Aggregate more votes or review more items."
        )
    return data


def training_set_count() -> int:
    """How many items have a final label now (curated, or crowd with enough votes): cheap."""
    items = _trainable_items()
    min_votes = float(settings.TRAINING_MIN_VOTES)
    return (
        items.curated().count()
        + items.exclude(review_state__in=Item.ReviewState.CURATED)
        .filter(n_classifications__gte=min_votes)
        .count()
    )


# ---------------------------------------------------------------------------- snapshot


def _snapshot_bytes(data: TrainingSet) -> bytes:
    # No timestamps inside: the same labels give the same bytes, so the hash names the content.
    payload: dict[str, Any] = {
        "format": SNAPSHOT_FORMAT,
        "version": 1,
        "concepts": data.concepts,
        "counts": data.counts(),
        "items": [
            {
                "id": int(data.item_ids[i]),
                "external_id": data.external_ids[i],
                "image": data.images[i],
                "source": data.sources[i],
                "split": str(data.split[i]),
                "weight": round(float(data.weights[i]), 6),
                "targets": [round(float(t), 6) for t in data.targets[i]],
            }
            for i in range(len(data))
        ],
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def run_dir(run_id: int) -> Path:
    return Path(settings.ARTIFACT_ROOT) / "runs" / str(int(run_id))


def snapshot_write(*, run_id: int, data: TrainingSet) -> tuple[str, str]:
    """Write the snapshot atomically; return (path relative to ARTIFACT_ROOT, sha256)."""
    raw = _snapshot_bytes(data)
    path = run_dir(run_id) / "snapshot.json"
    atomic_write_bytes(path, raw)
    return str(path.relative_to(Path(settings.ARTIFACT_ROOT))), hashlib.sha256(raw).hexdigest()


def snapshot_load(*, path: str, sha256: str) -> TrainingSet:
    """Read a snapshot back, refusing it unless its bytes hash to ``sha256``.

    Raises:
        TrainingDataError: missing, changed, or not a snapshot.
    """
    root = Path(settings.ARTIFACT_ROOT).resolve()
    full = (root / path).resolve()
    if not full.is_relative_to(root):
        raise TrainingDataError(f"snapshot path leaves the artifact root: {path!r}")
    try:
        raw = full.read_bytes()
    except OSError as exc:
        raise TrainingDataError(f"training snapshot unreadable: {exc}") from exc
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise TrainingDataError(f"training snapshot {path} does not match its recorded sha256")
    payload = json.loads(raw)
    if payload.get("format") != SNAPSHOT_FORMAT:
        raise TrainingDataError(f"{path} is not a training snapshot")
    items = payload["items"]
    n_concepts = len(payload["concepts"])
    return TrainingSet(
        concepts=payload["concepts"],
        item_ids=[row["id"] for row in items],
        external_ids=[row["external_id"] for row in items],
        images=[row["image"] for row in items],
        targets=np.asarray([row["targets"] for row in items], dtype=np.float32).reshape(
            -1, n_concepts),
        weights=np.asarray([row["weight"] for row in items], dtype=np.float32),
        sources=[row["source"] for row in items],
        split=np.asarray([row["split"] for row in items], dtype=str),
    )
