"""Predictions of a model version, stored: the pool they cover and one upserted row per item.

Shared by the scoring of trained versions (``training.services.scoring``) and of zero-shot ones
(``training.services.zero_shot``); it needs neither PyTorch nor the embedding pipeline.
"""

from __future__ import annotations

import numpy as np

from annotate.models import Item
from training.models import ModelVersion, Prediction


def pool_items():
    """The pool: every item whose image was checked and stored."""
    return Item.objects.filter(image_state=Item.ImageState.OK).exclude(image_file="")


def uncertainty(probs: np.ndarray) -> np.ndarray:
    """Per item, the largest closeness of any concept's score to 0.5: 1 at 0.5, 0 at 0 or 1."""
    return (1.0 - np.abs(2.0 * probs - 1.0)).max(axis=1) if probs.size else np.zeros(len(probs))


def predictions_store(version: ModelVersion, item_ids: list[int], probs: np.ndarray) -> int:
    """Upsert one prediction row per item: a re-run writes the same rows, never duplicates."""
    if not item_ids:
        return 0
    unc = uncertainty(probs)
    rows = [
        Prediction(
            model_version=version,
            item_id=item_id,
            scores=Prediction.pack(probs[i]),
            uncertainty=float(unc[i]),
        )
        for i, item_id in enumerate(item_ids)
    ]
    Prediction.objects.bulk_create(
        rows,
        batch_size=1000,
        update_conflicts=True,
        unique_fields=["model_version", "item"],
        update_fields=["scores", "uncertainty", "created_at"],
    )
    return len(rows)
