"""The model side's own listeners: keep the model-vs-crowd conflict flag in step with both sides,
and the zero-shot model's doubts of the prior labels with new prior labels.

Each receiver only queues a refresh task (on the default queue, never behind a training), so the
sender's request or task is not held up by the refresh.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction


def _refresh(item_ids: list[int] | None) -> None:
    from training.tasks import item_model_conflicts_refresh_task

    transaction.on_commit(lambda: item_model_conflicts_refresh_task.delay(item_ids=item_ids))


def on_labels_aggregated(sender: Any, *, item_ids: list[int] | None, **kwargs: Any) -> None:
    if item_ids is not None and not item_ids:
        return
    _refresh(item_ids)


def on_model_version_promoted(sender: Any, **kwargs: Any) -> None:
    _refresh(None)


def on_pool_scored(sender: Any, *, version_id: int, **kwargs: Any) -> None:
    from training.selectors import model_version_active

    active = model_version_active()
    if active is not None and active.pk == version_id:
        _refresh(None)


def on_prior_labels_changed(sender: Any, *, item_ids: list[int], **kwargs: Any) -> None:
    from training.tasks import item_zero_shot_prior_refresh_task

    if item_ids:
        transaction.on_commit(lambda: item_zero_shot_prior_refresh_task.delay(item_ids=item_ids))


def connect() -> None:
    from annotate.signals import labels_aggregated, prior_labels_changed
    from training.signals import model_version_promoted, pool_scored

    labels_aggregated.connect(on_labels_aggregated, dispatch_uid="training.conflicts.labels")
    model_version_promoted.connect(
        on_model_version_promoted, dispatch_uid="training.conflicts.promoted"
    )
    pool_scored.connect(on_pool_scored, dispatch_uid="training.conflicts.scored")
    prior_labels_changed.connect(on_prior_labels_changed, dispatch_uid="training.zero_shot.priors")
