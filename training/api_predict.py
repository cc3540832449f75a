"""predict/: an uploaded image or an image URL in, the active model's concept scores and Grad-CAM
maps out.

The image is checked the way every image is (``ml.images``: format allowlist, pixel and byte
caps, decompression bombs refused); a URL goes through the SSRF guard
(``annotate.security.fetch_image``: every address checked, pinned connection, redirects re-checked,
byte cap, timeout). The model is the training app's active version, loaded from its verified
checkpoint. ``image_predict`` is the service; the view only parses, calls it and renders.
"""

from __future__ import annotations

import base64
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.api.permissions import CanPredict, PolicyMixin
from annotate.security import FetchError, fetch_image

if TYPE_CHECKING:
    from ml.models import MultiLabelNet

FETCH_TIMEOUT_S = 10.0
MAX_MAPS = 5


class NoActiveModel(Exception):
    pass


@dataclass
class PredictResult:
    model_version: dict[str, Any]
    scores: dict[str, float]
    labels: list[str]
    thresholds: dict[str, float]
    maps: list[dict[str, Any]] = field(default_factory=list)


def image_predict(*, data: bytes, maps: int = 3) -> PredictResult:
    """Scores of the active model for one image, and Grad-CAM overlays of its top concepts.

    Raises:
        ml.images.ImageError: the image was refused.
        NoActiveModel: no model version is active.
    """
    from ml import images
    from ml.explain import explain_image, overlay_png
    from training.selectors import model_version_active
    from training.services.model_cache import model_version_loaded
    from training.services.scoring import probabilities

    images.inspect_image(
        data, max_pixels=settings.IMAGE_MAX_PIXELS, max_bytes=settings.IMAGE_MAX_BYTES
    )
    version = model_version_active()
    if version is None:
        raise NoActiveModel("there is no active model version")
    keys = list(version.concepts)
    thresholds = [float(t) for t in (version.thresholds or [])] + [0.5] * len(keys)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "image"  # our own name; the upload's name is never used
        path.write_bytes(data)
        probs, ok, failures = probabilities(version, [str(path)])
        if not ok[0]:
            raise images.ImageError(failures.get(0, "the image could not be read"))
        scores = {k: round(float(p), 6) for k, p in zip(keys, probs[0], strict=True)}
        overlays = []
        if maps:
            # probabilities() above refused a checkpoint that is not a full network.
            model = cast("MultiLabelNet", model_version_loaded(version).model)
            top = sorted(range(len(keys)), key=lambda i: -probs[0][i])[:maps]
            for i in top:
                cam, resized = explain_image(model, str(path), i)
                png = overlay_png(resized, cam)
                overlays.append(
                    {
                        "concept": keys[i],
                        "score": scores[keys[i]],
                        "png_base64": base64.b64encode(png).decode("ascii"),
                    }
                )
    return PredictResult(
        model_version={"id": version.pk, "backbone": version.backbone, "val_map": version.val_map},
        scores=scores,
        labels=[k for i, k in enumerate(keys) if scores[k] >= thresholds[i]],
        thresholds=dict(zip(keys, thresholds, strict=False)),
        maps=overlays,
    )


class PredictApi(PolicyMixin, APIView):
    """Score one image with the active model: upload ``image`` (multipart) or give ``url``."""

    policy = {"post": CanPredict}
    parser_classes = (MultiPartParser, FormParser, JSONParser)

    @extend_schema_serializer(component_name="PredictInput")
    class InputSerializer(serializers.Serializer):
        image = serializers.FileField(required=False, allow_empty_file=False, max_length=255)
        url = serializers.URLField(required=False, max_length=2000)
        maps = serializers.IntegerField(
            min_value=0, max_value=MAX_MAPS, default=3, help_text="Grad-CAM maps of the top k."
        )

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if bool(attrs.get("image")) == bool(attrs.get("url")):
                raise serializers.ValidationError("give either an image or a url, not both")
            upload = attrs.get("image")
            if upload is not None and upload.size > settings.IMAGE_MAX_BYTES:
                raise serializers.ValidationError({"image": ["the file is too large"]})
            return attrs

    @extend_schema_serializer(component_name="PredictOutput")
    class OutputSerializer(serializers.Serializer):
        model_version = serializers.DictField()
        scores = serializers.DictField(child=serializers.FloatField())
        labels = serializers.ListField(child=serializers.CharField())
        thresholds = serializers.DictField(child=serializers.FloatField())
        maps = serializers.ListField(child=serializers.DictField())

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer})
    def post(self, request: Request) -> Response:
        from ml.images import ImageError

        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if values.get("url"):
            try:
                raw = fetch_image(
                    values["url"], max_bytes=settings.IMAGE_MAX_BYTES, timeout=FETCH_TIMEOUT_S
                ).data
            except FetchError as exc:
                raise serializers.ValidationError({"url": [f"{exc.state}: {exc}"]}) from exc
        else:
            raw = values["image"].read(settings.IMAGE_MAX_BYTES + 1)
        try:
            result = image_predict(data=raw, maps=values["maps"])
        except ImageError as exc:
            raise serializers.ValidationError({"image": [str(exc)]}) from exc
        except NoActiveModel as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(self.OutputSerializer(result.__dict__).data)
