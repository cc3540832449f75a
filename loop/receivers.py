"""The pipeline's triggers: what the crowd and model sides announce, turned into step requests.

Connected in ``LoopConfig.ready``. Every receiver only records and asks (cheap, after commit);
the work runs in the steps' tasks.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from loop.models import LoopEvent, StepName


def on_votes_stored(sender: Any, *, workflow_id: int, created: int, source: str,
                    **kwargs: Any) -> None:
    """New votes, from a pull or a file: aggregate them (after a short wait, so a burst of
    pages or pulls is served by one aggregation)."""
    from loop.services.pipeline import event_record, in_pull_step, step_request

    if not in_pull_step():
        event_record(
            step=StepName.PULL,
            status=LoopEvent.Status.DONE,
            summary=f"{created} new votes of workflow {workflow_id} ({source})",
            trigger=f"{source} outside the loop's schedule",
            detail={"votes": created},
        )
    step_request(
        name=StepName.AGGREGATE,
        reason=f"{created} new votes of workflow {workflow_id}",
        countdown=float(settings.LOOP_AGGREGATE_DELAY_S),
    )


def on_votes_linked(sender: Any, *, subjects: int, votes: int, **kwargs: Any) -> None:
    """Votes that waited for their items count now; they are older than the aggregation's
    watermark, so they need a full pass."""
    from loop.services.pipeline import step_request

    step_request(
        name=StepName.AGGREGATE,
        reason=f"full pass: {votes} votes of {subjects} subjects linked to their items",
        countdown=float(settings.LOOP_AGGREGATE_DELAY_S),
    )


def on_volunteers_excluded(sender: Any, *, volunteer_ids: list[int], excluded: bool,
                           **kwargs: Any) -> None:
    """Excluded volunteers' votes leave every item they voted on (or come back to them): only a
    full pass rewrites all those labels and the skills."""
    from loop.services.pipeline import step_request

    n = len(volunteer_ids)
    what = "excluded from" if excluded else "taken back into"
    step_request(
        name=StepName.AGGREGATE,
        reason=f"full pass: {n} volunteer{'s' if n != 1 else ''} {what} aggregation",
        countdown=float(settings.LOOP_AGGREGATE_DELAY_S),
    )


def on_reviews_recorded(sender: Any, *, item_ids: list[int], n: int, **kwargs: Any) -> None:
    """A curator's decision is a new final label: it counts toward the next retrain."""
    from loop.services.pipeline import step_request

    step_request(name=StepName.TRAIN, reason=f"{n} curator decisions")


def on_model_version_promoted(sender: Any, *, version_id: int, previous_id: int | None,
                              by: str, **kwargs: Any) -> None:
    from loop.services.pipeline import event_record

    event_record(
        step=StepName.SCORE,
        status=LoopEvent.Status.DONE,
        summary=f"model v{version_id} active"
        + (f" (was v{previous_id})" if previous_id else "")
        + ": scoring the pool",
        trigger=f"promoted by {by}",
        detail={"model_version_id": version_id},
    )


def on_pool_scored(sender: Any, *, version_id: int, failed: int, **kwargs: Any) -> None:
    """The active model has scored the pool: the next round can be chosen with it."""
    from loop.services.pipeline import event_record, step_request

    event_record(
        step=StepName.SCORE,
        status=LoopEvent.Status.DONE if not failed else LoopEvent.Status.FAILED,
        summary=f"pool scored by model v{version_id}"
        + (f", {failed} chunks failed" if failed else ""),
        trigger="model promoted",
        detail={"model_version_id": version_id, "failed_chunks": failed},
    )
    step_request(name=StepName.ROUND, reason=f"pool scored by v{version_id}")


def connect() -> None:
    from annotate.signals import (
        reviews_recorded,
        volunteers_excluded,
        votes_linked,
        votes_stored,
    )
    from training.signals import model_version_promoted, pool_scored

    votes_stored.connect(on_votes_stored, dispatch_uid="loop.votes_stored")
    votes_linked.connect(on_votes_linked, dispatch_uid="loop.votes_linked")
    volunteers_excluded.connect(on_volunteers_excluded, dispatch_uid="loop.volunteers_excluded")
    reviews_recorded.connect(on_reviews_recorded, dispatch_uid="loop.reviews_recorded")
    model_version_promoted.connect(on_model_version_promoted, dispatch_uid="loop.promoted")
    pool_scored.connect(on_pool_scored, dispatch_uid="loop.pool_scored")


def disconnect() -> None:
    """The tests of one side's services run without the pipeline reacting (tests/conftest.py)."""
    from annotate.signals import (
        reviews_recorded,
        volunteers_excluded,
        votes_linked,
        votes_stored,
    )
    from training.signals import model_version_promoted, pool_scored

    votes_stored.disconnect(dispatch_uid="loop.votes_stored")
    votes_linked.disconnect(dispatch_uid="loop.votes_linked")
    volunteers_excluded.disconnect(dispatch_uid="loop.volunteers_excluded")
    reviews_recorded.disconnect(dispatch_uid="loop.reviews_recorded")
    model_version_promoted.disconnect(dispatch_uid="loop.promoted")
    pool_scored.disconnect(dispatch_uid="loop.pool_scored")
