"""Reads of the model side for other screens (review, selection): predictions and their maps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from annotate.models import Item
from annotate.services.media import image_path
from training.models import ModelVersion, Prediction
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
    thresholds = version.thresholds or [0.5] * len(version.concepts)
    return {
        item_id: [ConceptScore(k, round(float(p), 6), float(t))
                  for k, p, t in zip(version.concepts, np.frombuffer(bytes(blob), dtype="<f4"),
                                     thresholds, strict=True)]
        for item_id, blob in rows
    }


def prediction_explain_png(
    *, item: Item, concept_key: str, version: ModelVersion | None = None
) -> bytes:
    """Grad-CAM of one concept over the item's image, as PNG bytes (for the review screens).

    Raises:
        LookupError: no active version, or the concept is not one of the version's outputs.
        ml.images.ImageError: the image was refused.
        ml.checkpoint.CheckpointError: the version's checkpoint does not verify.
    """
    version = version or model_version_active()
    if version is None:
        raise LookupError("there is no active model version")
    if concept_key not in version.concepts:
        raise LookupError(f"v{version.pk} does not predict {concept_key!r}")
    # PyTorch is imported only when a map is drawn, not by every process loading the URLconf.
    from ml.explain import explain_image, overlay_png
    from training.services.scoring import _loaded

    model = _loaded(version).model
    cam, image = explain_image(model, str(image_path(item.image_file)),
                               version.concepts.index(concept_key))
    return overlay_png(image, cam)
