"""Reads of the model side for other screens (review, selection): predictions and their maps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from annotate.models import Item
from training.models import DEFAULT_FAMILY, ModelVersion, Prediction
from training.services.versions import model_version_active


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
        "item_id", "scores")
    return {item_id: _scores(version, blob) for item_id, blob in rows}


def _scores(version: ModelVersion, blob: bytes) -> list[ConceptScore]:
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


def prediction_explain_png(
    *,
    item: Item,
    concept_key: str,
    version: ModelVersion | None = None,
    size: int = 512,
    layer: str = "overlay",
) -> bytes:
    """Grad-CAM of one concept on the item's image, as PNG bytes (for the review screens).

    Read from the version's map cache, or drawn once and cached there
    (:mod:`training.services.explain`).

    Args:
        version: default the active version.
        size: the longest side in pixels, clamped to 64..1024 and rounded up to a multiple of 32;
            the aspect ratio is the image's.
        layer: ``"overlay"`` (the map blended over the image) or ``"map"`` (the bare map,
            45% opaque).

    Raises:
        LookupError: no usable image, no active version, or the concept is not one of the
            version's outputs (``MapUnavailable``).
        ml.images.ImageError: the image was refused.
        ml.checkpoint.CheckpointError: the version's checkpoint does not verify.
    """
    from training.services.explain import explain_map_png, explain_map_request

    return explain_map_png(explain_map_request(
        item=item, concept_key=concept_key, size=size, layer=layer, version=version))


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
