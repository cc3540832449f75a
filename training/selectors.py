"""Reads of the model side for other screens (review, selection): predictions and their maps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from training.models import DEFAULT_FAMILY, ModelVersion, Prediction


def model_version_active(*, family: str = DEFAULT_FAMILY) -> ModelVersion | None:
    """The version that scores the pool and answers predictions now, if any."""
    return ModelVersion.objects.filter(family=family, status=ModelVersion.Status.ACTIVE).first()


def zero_shot_version_latest() -> ModelVersion | None:
    """The newest zero-shot version whose pool scoring finished, or None."""
    return (
        ModelVersion.objects.filter(kind=ModelVersion.Kind.ZERO_SHOT, scored_at__isnull=False)
        .order_by("-scored_at", "-pk")
        .first()
    )


@dataclass(frozen=True)
class ConceptScore:
    key: str
    probability: float
    threshold: float

    @property
    def predicted(self) -> bool:
        return self.probability >= self.threshold


def predictions_for_items(
    item_ids: list[int], *, version: ModelVersion | None = None
) -> dict[int, list[ConceptScore]]:
    """Scores per item under a version (default: the active one), in concept order.

    Items the version has not scored are absent. One query, whatever the number of items.
    """
    version = version or model_version_active()
    if version is None:
        return {}
    rows = Prediction.objects.filter(model_version=version, item_id__in=item_ids).values_list(
        "item_id", "scores"
    )
    return {item_id: _scores(version, blob) for item_id, blob in rows}


def _scores(version: ModelVersion, blob: bytes | memoryview) -> list[ConceptScore]:
    thresholds = version.thresholds or [0.5] * len(version.concepts)
    return [ConceptScore(k, round(float(p), 6), float(t))
            for k, p, t in zip(version.concepts, np.frombuffer(bytes(blob), dtype="<f4"),
                               thresholds, strict=True)]  # fmt: skip


def active_prediction_for_item(item_id: int) -> tuple[ModelVersion | None, list[ConceptScore]]:
    """The active version and its scores of one item ([] when it has not scored the item).

    One query when the item is scored (the prediction with its version), two when it is not.
    """
    row = (
        Prediction.objects.filter(
            item_id=item_id,
            model_version__family=DEFAULT_FAMILY,
            model_version__status=ModelVersion.Status.ACTIVE,
        )
        .select_related("model_version")
        .first()
    )
    if row is None:
        return model_version_active(), []
    return row.model_version, _scores(row.model_version, row.scores)


def model_version_lineage() -> dict[str, Any] | None:
    """The active model version as a dataset lineage names it: id, name and the pretrained
    weights under its trunk, as asked and as read (registered for annotate's exports and
    releases by ``TrainingConfig.ready``)."""
    version = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).order_by("-pk").first()
    if version is None:
        return None
    return {
        "id": version.pk,
        "name": str(version),
        "weights": version.weights,
        "weights_sha256": version.weights_sha256,
    }
