"""Progress of a training run for the admin page: a small JSON document and the metrics plot."""

from __future__ import annotations

import logging

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseNotModified,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.utils.http import parse_etags
from django.views.decorators.cache import never_cache

from annotate.models import Item
from ml.checkpoint import CheckpointError
from ml.images import ImageError
from training.models import TrainingRun
from training.plots import metrics_png
from training.services.explain import (
    DEFAULT_SIZE,
    MapUnavailable,
    explain_map_png,
    explain_map_request,
)

logger = logging.getLogger(__name__)


def _run_for(request: HttpRequest, pk: int) -> TrainingRun:
    if not request.user.has_perm("training.view_trainingrun"):
        raise PermissionDenied
    return get_object_or_404(TrainingRun.objects.select_related("model_version"), pk=pk)


@never_cache
@staff_member_required
def run_progress(request: HttpRequest, pk: int) -> JsonResponse:
    run = _run_for(request, pk)
    version = getattr(run, "model_version", None)
    return JsonResponse({
        "id": run.pk,
        "status": run.status,
        "finished": run.is_finished,
        "progress": run.progress,
        "attempts": run.attempts,
        "max_attempts": run.max_attempts,
        "epochs": len(run.metrics),
        "last_epoch": run.metrics[-1] if run.metrics else None,
        "error": run.error,
        "enqueue_error": run.enqueue_error,
        "log_tail": run.log.splitlines()[-15:],
        "plot_url": reverse("training:run-metrics-png", args=[run.pk]),
        "model_version": None if version is None else {
            "id": version.pk, "status": version.status, "val_map": version.val_map,
        },
    })


@never_cache
@staff_member_required
def run_metrics_png(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run_for(request, pk)
    return HttpResponse(metrics_png(run.metrics), content_type="image/png")


@staff_member_required
def item_explain_png(
    request: HttpRequest, item_id: int, concept: str, layer: str = "overlay"
) -> HttpResponse:
    """Grad-CAM evidence map of one concept on an item, under the active model.

    ``GET /training/items/<item_id>/explain/<concept>.png`` is the map blended over the item's
    image (RGB PNG); ``GET /training/items/<item_id>/explain/<concept>.map.png`` is the bare map
    (a palette PNG whose every pixel is 45% opaque, a quarter of the overlay's bytes): laid over
    the displayed ``<img>`` in the same box it looks like the overlay, and CSS ``opacity``
    toggles it without reloading the image.

    Query parameters:

    - ``size``: the longest side the page shows, in pixels (default 512). Clamped to 64..1024
      and rounded up to a multiple of 32; the image's aspect ratio is kept. Not an integer: 400.
    - ``v``: the model version id the page was drawn with. With it the answer is cached by the
      browser for a day; a ``v`` that is not the active version is redirected (302) to the same
      URL with the active one, so a promotion is never hidden by a cached map. Without it, the
      browser revalidates after a minute (the ETag makes that a 304).

    Answers: 200 ``image/png`` with ``ETag`` and ``X-Model-Version``; 304 for a matching
    ``If-None-Match``; 404 ``text/plain`` with the reason (no such item, no usable image, no
    active model, a concept the model does not predict, an unreadable image file); 503
    ``text/plain`` when the active checkpoint does not verify. Staff with ``annotate.view_item``
    (curators) only: others are sent to the login page, staff without it get 403.

    The first view of an item under a version runs the model once for all its concepts; every
    map is then drawn from that and kept on disk per version (``training.services.explain``).
    """
    if not request.user.has_perm("annotate.view_item"):
        raise PermissionDenied
    raw_size = request.GET.get("size", "")
    try:
        size = int(raw_size) if raw_size else DEFAULT_SIZE
    except ValueError:
        return _text(400, "size must be a whole number of pixels")
    item = Item.objects.filter(pk=item_id).first()
    if item is None:
        return _text(404, f"there is no item {item_id}")
    try:
        wanted = explain_map_request(item=item, concept_key=concept, size=size, layer=layer)
    except MapUnavailable as exc:
        return _text(404, str(exc))
    version_id = str(wanted.version.pk)
    pinned = "v" in request.GET
    if pinned and request.GET["v"] != version_id:
        query = request.GET.copy()
        query["v"] = version_id
        response: HttpResponse = HttpResponseRedirect(f"{request.path}?{query.urlencode()}")
        add_never_cache_headers(response)
        return response
    if wanted.etag in parse_etags(request.headers.get("If-None-Match", "")):
        response = HttpResponseNotModified()
    else:
        try:
            png = explain_map_png(wanted)
        except ImageError as exc:
            logger.warning("explain: item %s: image refused: %s", item_id, exc)
            return _text(404, f"the image of item {item_id} cannot be read ({exc.state})")
        except CheckpointError as exc:
            logger.error("explain: model v%s unusable: %s", version_id, exc)
            return _text(503, f"the active model v{version_id} cannot be loaded: its checkpoint "
                              "does not verify")
        response = HttpResponse(png, content_type="image/png")
    response["ETag"] = wanted.etag
    response["X-Model-Version"] = version_id
    response["Cache-Control"] = f"private, max-age={86400 if pinned else 60}"
    return response


def _text(status: int, reason: str) -> HttpResponse:
    response = HttpResponse(reason + "\n", status=status, content_type="text/plain; charset=utf-8")
    add_never_cache_headers(response)
    return response
