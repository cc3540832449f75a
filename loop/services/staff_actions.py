"""What the admin's staff actions page asks of the loop that no other service offers: a pull now.

The other actions of that page go to the services their API and commands use: a round request
(``training.services.round_requests.round_request_create``), a push of a chosen round
(``training.services.round_pushes.round_push_request``) and a release (the release admin's own
add form). A pull now is a request for the pipeline's pull step (:func:`step_request`), served
by its Celery task like beat's scheduled pulls, so a press coalesces with a pull already queued
and never runs beside one in progress.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from loop.models import StepName
from loop.services.pipeline import step_request


class StaffActionError(ValueError):
    """An action asked with input it cannot run with; ``field`` names the form field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class PullRequested:
    """What a "Sync now" press asked for."""

    #: True when this press sent the step's message; False when one was already on its way
    #: (a queued pull, or a run in progress that sends one more when it ends).
    sent: bool
    #: Zooniverse ids of the workflows the pull step pulls (every active one).
    workflows: list[int]
    #: The workflow named in the form, or None for every active one.
    named: int | None

    def message(self) -> str:
        ids = ", ".join(str(w) for w in self.workflows)
        what = (
            f"workflow {self.named} (the pull step pulls every active workflow: {ids})"
            if self.named is not None
            else f"every active workflow ({ids})"
        )
        if self.sent:
            return f"Pull of {what} queued; its progress shows under Sync now."
        return f"A pull was already on its way; it serves this request too: {what}."


def pull_request_now(
    *, user: AbstractBaseUser | AnonymousUser | None, workflow_id: int | None = None
) -> PullRequested:
    """Ask the pipeline's pull step to run now, for every active workflow.

    The pull step pulls every active workflow from its stored cursor; naming one (its Zooniverse
    id) checks that it is configured and active, and names it in the request's reason (the
    event's trigger), so the run that serves the press is easy to find.

    Raises:
        StaffActionError: ``workflow``: the workflow is not configured or not active, or no
            workflow is active at all.
    """
    from annotate.models import Workflow

    active = list(
        Workflow.objects.filter(active=True)
        .order_by("zooniverse_id")
        .values_list("zooniverse_id", flat=True)
    )
    if workflow_id is not None:
        workflow = Workflow.objects.filter(zooniverse_id=workflow_id).first()
        if workflow is None:
            raise StaffActionError(
                "workflow",
                f"workflow {workflow_id} is not configured: run configure_workflow "
                f"--workflow-id {workflow_id} first",
            )
        if not workflow.active:
            raise StaffActionError(
                "workflow",
                f"workflow {workflow_id} is not active: the loop pulls active workflows only "
                "(tick 'active' on the workflow in the admin)",
            )
    elif not active:
        raise StaffActionError(
            "workflow", "no workflow is active: configure one with configure_workflow first"
        )
    by = user.get_username() if user is not None and user.is_authenticated else "someone"
    reason = f"sync now by {by}" + (f" (workflow {workflow_id})" if workflow_id else "")
    sent = step_request(name=StepName.PULL, reason=reason)
    return PullRequested(sent=sent, workflows=active, named=workflow_id)
