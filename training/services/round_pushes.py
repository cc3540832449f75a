"""Pushing a round that is already chosen, as a task: the staff page's "Push a round".

A round chosen without a push (``select_round`` without ``--push``, an API request with
``"push": false``) waits as a draft. Pushing it later goes through the same machinery as a round
requested with a push: its :class:`training.models.RoundRequest` is running with the round
linked, and ``training.tasks.round_request_push_task`` pushes it, retries transient Zooniverse
errors, and finishes the request as succeeded (Zooniverse has the round) or failed with
``push: <reason>``. Beat's reconciler sends the push again if its message is lost.

A round has at most one request (``RoundRequest.round`` is one-to-one): a round chosen by a
request is pushed under that request, which is opened again; a round chosen any other way gets a
new request that records only the push.
"""

from __future__ import annotations

from typing import cast

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db import transaction
from django.utils import timezone

from annotate.models import Round
from config.task_kinds import task_named
from training.models import RoundRequest
from training.services.round_requests import RoundRequestError, task_send_or_fail


def round_push_request(
    *, user: AbstractBaseUser | AnonymousUser | None, round_id: int
) -> RoundRequest:
    """Ask for a chosen round to be pushed to Zooniverse; its push task is sent after commit.

    Returns the request that carries the push (``params["push_requested_at"]`` marks it).

    Raises:
        RoundRequestError: with ``field`` "round": no such round, it is on Zooniverse already,
            it has no workflow or no picks, or a request is still working on it.
    """
    by = user.get_username() if user is not None and user.is_authenticated else ""
    with transaction.atomic():
        round_ = Round.objects.select_for_update().filter(pk=round_id).first()
        if round_ is None:
            raise RoundRequestError("round", f"there is no round with id {round_id}")
        if round_.status != Round.Status.DRAFT:
            raise RoundRequestError(
                "round", f"{round_.name} is {round_.status}: it is on Zooniverse already"
            )
        if round_.workflow_id is None:
            raise RoundRequestError(
                "round",
                f"{round_.name} has no workflow to push to (no workflow was active "
                "when it was chosen)",
            )
        if not round_.picks.exists():
            raise RoundRequestError(
                "round", f"{round_.name} has no picks: choose its items with select_round first"
            )
        now = timezone.now()
        marks = {"push": True, "push_requested_by": by, "push_requested_at": now.isoformat()}
        request = RoundRequest.objects.select_for_update().filter(round=round_).first()
        if request is None:
            request = RoundRequest.objects.create(
                # by is set only for an authenticated user, a User (AUTH_USER_MODEL).
                requested_by=cast(User, user) if by else None,
                round=round_,
                status=RoundRequest.Status.RUNNING,
                started_at=now,
                params={"round": round_.number, **marks},
                summary=f"push of {round_.name}, chosen before",
            )
        elif request.status in (RoundRequest.Status.QUEUED, RoundRequest.Status.RUNNING):
            raise RoundRequestError(
                "round",
                f"round request {request.pk} is still {request.status} for "
                f"{round_.name}: wait for it to finish",
            )
        else:
            # Chosen by this request without a push (succeeded), or its push failed: the push
            # runs under it, as if it had been asked for with the request.
            RoundRequest.objects.filter(pk=request.pk).update(
                status=RoundRequest.Status.RUNNING,
                started_at=now,
                finished_at=None,
                error="",
                params={**request.params, **marks},
            )
            request.refresh_from_db()
        transaction.on_commit(lambda: round_push_enqueue(request_id=request.pk))
    return request


def round_push_enqueue(*, request_id: int) -> str:
    """Send the push task; when the broker refuses, fail the request saying so (pushing again
    is the retry), so that it does not wait for the reconciler. The error, or ""."""
    round_request_push_task = task_named("training.tasks.round_request_push_task")

    return task_send_or_fail(
        round_request_push_task,
        request_id=request_id,
        waiting=RoundRequest.Status.RUNNING,
        retry="push again when it is back",
        prefix="push: ",
    )
