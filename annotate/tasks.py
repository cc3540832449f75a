"""Celery tasks of the crowd side: thin wrappers that take ids, call one service and return.

Every task here may run more than once for one request (``acks_late``; Redis redelivers after the
visibility timeout; deploys duplicate in-flight tasks), so each one checks the database first and
relies on idempotent services: a pull resumes at the stored cursor, a push finds what exists.
Retries are automatic only for transient Zooniverse errors (network, 5xx, 429, budget spent),
at most 5, with backoff kept below the visibility timeout; anything else fails the task at once.

Periodic pulls are sent by Celery beat (``CELERY_BEAT_SCHEDULE`` in settings, see
:data:`BEAT_SCHEDULE_ENTRY`) to :func:`sync_all_workflows`, which fans out one
:func:`sync_workflow` per active workflow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from celery import Task

from annotate.services.releases import RELEASE_BUILD_TASK, release_build
from annotate.zooniverse.client import TransientError, policy_from_settings
from config.task_kinds import at_least_once_task

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def _limits() -> tuple[int, int]:
    """(soft, hard) time limits of a Zooniverse task: the client stops itself at its budget (at
    most half the visibility timeout); the soft limit is the backstop."""
    soft = int(policy_from_settings().budget_s + 120)
    return soft, soft + 60


def zooniverse_task(*, redeliver_on_worker_loss: bool) -> Callable[[Callable[P, R]], Task[P, R]]:
    """The kind of Zooniverse tasks: at-least-once delivery, transient errors retried.

    ``redeliver_on_worker_loss`` sets ``reject_on_worker_lost``. Without a poison guard a task
    that kills its worker would loop forever (celery#8969), so only one-off tasks whose loss
    nobody would notice take it (a round push); a periodic sync does not need it, the next beat
    tick is its redelivery.
    """
    soft, hard = _limits()

    def decorate(func: Callable[P, R]) -> Task[P, R]:
        # The queue is the app's default ("default"); routing belongs in task_routes.
        return at_least_once_task(
            name=f"annotate.tasks.{func.__name__}",
            redeliver_on_worker_loss=redeliver_on_worker_loss,
            autoretry_for=(TransientError,),
            retry_backoff=30,
            soft_time_limit=soft,
            time_limit=hard,
        )(func)

    return decorate


@zooniverse_task(redeliver_on_worker_loss=False)
def sync_workflow(*, workflow_id: int) -> dict[str, Any]:
    """Pull new classifications of one workflow (its Zooniverse id); safe to run twice at once."""
    from annotate.models import Workflow
    from annotate.services.zooniverse.pull import classifications_pull

    workflow = Workflow.objects.filter(zooniverse_id=workflow_id).first()
    if workflow is None or not workflow.active:
        return {"workflow_id": workflow_id, "skipped": "unknown or inactive workflow"}
    result = classifications_pull(workflow=workflow)
    logger.info("sync_workflow: %s", result.summary())
    return {
        "workflow_id": workflow_id,
        "pages": result.pages,
        "created": result.counts.created,
        "quarantined": result.counts.quarantined,
        "last_id": result.last_id,
        "complete": result.complete,
    }


@zooniverse_task(redeliver_on_worker_loss=False)
def sync_all_workflows() -> int:
    """Beat entry point: one :func:`sync_workflow` per active workflow; the number sent."""
    from annotate.services.zooniverse.pull import workflows_active

    workflows = workflows_active()
    for workflow in workflows:
        sync_workflow.delay(workflow_id=workflow.zooniverse_id)
    return len(workflows)


@zooniverse_task(redeliver_on_worker_loss=True)
def push_round(
    *,
    round_id: int,
    item_ids: list[int] | None = None,
    priorities: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Push a round (its primary key) to Zooniverse; a re-run creates nothing new.

    Without ``item_ids`` a round chosen by ``select_round`` is published from its picks
    (``#priority`` = rank, contested items un-retired); a round without picks re-pushes the items
    already recorded, which repairs links and missing subjects. ``item_ids`` (best first) and
    ``priorities`` (item id as a string, JSON keys, to ``#priority``) push an explicit list.
    """
    from annotate.models import Item, Round
    from annotate.services.zooniverse.push import round_items, round_push

    round = Round.objects.select_related("workflow").filter(pk=round_id).first()
    if round is None:
        return {"round_id": round_id, "skipped": "unknown round"}
    if item_ids is None and round.picks.exists():
        from annotate.services.rounds import round_publish

        return {"round_id": round_id, "summary": round_publish(round=round)}
    if item_ids is None:
        items = round_items(round=round)
    else:
        by_id = Item.objects.in_bulk(item_ids)
        items = [by_id[i] for i in item_ids if i in by_id]
    result = round_push(
        round=round,
        items=items,
        priorities={int(k): float(v) for k, v in (priorities or {}).items()},
    )
    return {
        "round_id": round_id,
        "subject_set_id": result.subject_set_id,
        "created": result.created,
        "existing": result.existing,
        "skipped": len(result.skipped),
    }


#: What settings should hold for the periodic pull (``CELERY_BEAT_SCHEDULE = {...}``): every
#: five minutes, and a message that waited longer than that is dropped, the next one is coming.
BEAT_SCHEDULE_ENTRY: dict[str, dict[str, Any]] = {
    "zooniverse-sync-all-workflows": {
        "task": "annotate.tasks.sync_all_workflows",
        "schedule": 300.0,
        "options": {"expires": 280},
    }
}


@at_least_once_task(
    name="annotate.tasks.fetch_item_images",
    redeliver_on_worker_loss=False,
    max_retries=0,
    soft_time_limit=1800,
    time_limit=1860,
)
def fetch_item_images(*, limit: int = 50, chain: bool = True) -> dict[str, Any]:
    """Fetch a slice of pending remote images (default queue), then hand the rest on.

    Runs twice harmlessly: each item is fetched only while pending, and each failure is stored as
    the item's image state, so the chain ends when no pending remote image is left. Beat sends it
    every minute with ``chain`` off (CELERY_BEAT_SCHEDULE), one slice a tick, so items of any
    import (a manifest, a harvest) are fetched without piling up chains.
    """
    from annotate.services.image_fetch import item_images_fetch

    counts = item_images_fetch(limit=limit)
    if counts.more and chain:
        fetch_item_images.delay(limit=limit)
    return {"fetched": counts.fetched, "failed": counts.failed, "more": counts.more}


@at_least_once_task(
    name=RELEASE_BUILD_TASK,
    redeliver_on_worker_loss=False,
    max_retries=0,
    soft_time_limit=3 * 3600,
    time_limit=3 * 3600 + 300,
)
def release_build_task(*, release_id: int) -> str:
    """Build a dataset release: a thin wrapper around one service.

    It may run more than once for one request (``acks_late``; Redis redelivers after the
    visibility timeout): :func:`annotate.services.releases.release_build` claims the row with a
    conditional update and returns at once when it is already running or written. No automatic
    retry: a failed build is marked ``failed`` and a new release is the way to try again.
    """
    return release_build(release_id=release_id).status
