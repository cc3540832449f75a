"""Triggers that decide for themselves: new final labels, and the nightly schedule."""

from __future__ import annotations

import logging

from django.conf import settings

from annotate.models import Review
from training.models import DEFAULT_FAMILY, TrainingRun
from training.services.dataset import training_set_count
from training.services.runs import training_run_request

logger = logging.getLogger(__name__)


def training_new_labels_count(*, family: str = DEFAULT_FAMILY) -> int:
    """Final labels that arrived since the last run took its snapshot.

    Counted as the growth of the trainable set plus the curator decisions made since that run
    was created (an edit changes a label without adding an item). With no earlier run, every
    final label is new.
    """
    last = (
        TrainingRun.objects.filter(family=family, n_items__isnull=False)
        .order_by("-created_at", "-id")
        .first()
    )
    now_count = training_set_count()
    if last is None:
        return now_count
    reviews = Review.objects.filter(created_at__gt=last.created_at).exclude(
        action=Review.Action.SKIP).count()
    # Counted the same way then and now: the snapshot itself keeps only confident crowd labels,
    # so comparing with its size would see "new" labels that no run can ever take in, and ask
    # for a retrain after every aggregation.
    baseline = last.labels_counted if last.labels_counted is not None else last.n_items or 0
    return max(0, now_count - baseline) + reviews


def training_maybe_trigger(*, family: str = DEFAULT_FAMILY) -> TrainingRun | None:
    """Request a retrain when TRAIN_AFTER_NEW_LABELS new final labels have arrived.

    Aggregation and review code call this after they change labels; it is cheap (two counts)
    and safe to call often: a run in flight is returned, or marked for one follow-up when it is
    already training. Returns the run in flight or created, or None when below the threshold
    (or when TRAIN_AFTER_NEW_LABELS is 0, which turns it off).
    """
    threshold = int(settings.TRAIN_AFTER_NEW_LABELS)
    if threshold <= 0:
        return None
    new = training_new_labels_count(family=family)
    if new < threshold:
        return None
    run, created = training_run_request(trigger=TrainingRun.Trigger.AUTO, params={}, family=family)
    logger.info("%d new final labels: training run %s %s", new, run.pk,
                "requested" if created else "already in flight")
    return run


def training_nightly(*, family: str = DEFAULT_FAMILY) -> TrainingRun | None:
    """The nightly retrain: skipped when no label changed since the last run."""
    from training.selectors import model_version_active

    if model_version_active(family=family) is not None and not training_new_labels_count(
        family=family
    ):
        logger.info("nightly retrain skipped: no new final labels")
        return None
    run, _ = training_run_request(trigger=TrainingRun.Trigger.BEAT, params={}, family=family)
    return run
