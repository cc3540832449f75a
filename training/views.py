"""Progress of a training run for the admin page: a small JSON document and the metrics plot."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.cache import never_cache

from annotate.models import Item
from ml.checkpoint import CheckpointError
from ml.images import ImageError
from training.models import TrainingRun
from training.selectors import prediction_explain_png
from training.services.plots import metrics_png


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
def item_explain_png(request: HttpRequest, item_id: int, concept: str) -> HttpResponse:
    """Grad-CAM of one concept on an item, under the active model: for the review screens."""
    if not request.user.has_perm("annotate.view_item"):
        raise PermissionDenied
    item = get_object_or_404(Item, pk=item_id, image_state=Item.ImageState.OK)
    try:
        png = prediction_explain_png(item=item, concept_key=concept)
    except (LookupError, ImageError, CheckpointError) as exc:
        raise Http404(str(exc)) from exc
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response
