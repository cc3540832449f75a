"""What each step of the pipeline does, given its claim (see :mod:`loop.services.pipeline`).

pull -> aggregate -> retire -> round, and aggregate -> train; a curator decision -> train; a
promoted model scores the pool by itself (``training.services.versions``) and its end asks for
the round check. Every step reads the database afresh, so running one twice does no harm.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from loop.models import StepName
from loop.selectors import round_active, round_progress, subjects_settled, train_waiting
from loop.services.pipeline import Claim, StepOutcome

StepWork = Callable[[Claim], StepOutcome]

#: The step functions by step name; the tasks look their work up here.
STEPS: dict[str, StepWork] = {}


def _step(name: str) -> Callable[[StepWork], StepWork]:
    def register(func: StepWork) -> StepWork:
        STEPS[name] = func
        return func

    return register


def _since(value: str | None) -> datetime | None:
    return parse_datetime(value) if value else None


@_step(StepName.PULL)
def pull(claim: Claim) -> StepOutcome:
    """Pull new classifications of every active workflow."""
    from annotate.services.zooniverse.pull import classifications_pull, workflows_active
    from loop.services.pipeline import pulls_logged_by_step

    workflows = workflows_active()
    if not workflows:
        return StepOutcome("no active workflow to pull", done=False)
    created = quarantined = 0
    parts = []
    with pulls_logged_by_step():
        for workflow in workflows:
            result = classifications_pull(workflow=workflow)
            created += result.counts.created
            quarantined += result.counts.quarantined
            parts.append(f"workflow {workflow.zooniverse_id}: {result.counts.created} new")
    summary = f"{created} new votes ({'; '.join(parts)})" + (
        f", {quarantined} quarantined" if quarantined else ""
    )
    return StepOutcome(
        summary,
        done=created > 0,
        detail={"votes": created, "quarantined": quarantined},
        then=[(StepName.AGGREGATE, f"{created} new votes pulled")] if created else [],
    )


@_step(StepName.AGGREGATE)
def aggregate(claim: Claim) -> StepOutcome:
    """Aggregate the items with new votes: an E-step on stored skills, or a full EM pass when the
    last one is older than AGGREGATION_FULL_EVERY_S (or there is none)."""
    from annotate.models import Classification
    from annotate.services.aggregation import labels_aggregate

    now = timezone.now()
    state = dict(claim.state)
    watermark = int(state.get("watermark", 0))
    top = Classification.objects.aggregate(top=Max("pk"))["top"] or 0
    new_votes = Classification.objects.filter(pk__gt=watermark, pk__lte=top, item__isnull=False)
    n_new = new_votes.count()
    forced = claim.reason.startswith("full")
    if not n_new and not forced:
        state["watermark"] = top
        return StepOutcome("no new votes since the last aggregation", done=False, state=state)
    last_full = _since(state.get("last_full_at"))
    every = timedelta(seconds=float(settings.AGGREGATION_FULL_EVERY_S))
    full = forced or last_full is None or now - last_full >= every
    item_ids = None if full else sorted(set(new_votes.values_list("item_id", flat=True)))
    summary = labels_aggregate(item_ids=item_ids)
    state["watermark"] = top
    if not summary.incremental:
        state["last_full_at"] = now.isoformat()
    kind = "incremental" if summary.incremental else "full"
    then: list[tuple[str, str]] = [(StepName.TRAIN, f"{summary.labels_changed} labels changed")]
    if summary.retire_subject_ids:
        then.append((StepName.RETIRE, f"{len(summary.retire_subject_ids)} subjects settled"))
    return StepOutcome(
        f"{kind}: {n_new} new votes on {summary.n_items} items, "
        f"{summary.labels_changed} labels changed, {summary.confident_items} confident, "
        f"{len(summary.retire_subject_ids)} subjects to retire ({summary.seconds:.1f} s)",
        detail={
            "votes": n_new,
            "items": summary.n_items,
            "labels_changed": summary.labels_changed,
            "to_retire": len(summary.retire_subject_ids),
            "incremental": summary.incremental,
            "seconds": round(summary.seconds, 3),
            # Every vote with an id up to this one is in these labels (bench/loop_latency.py).
            "watermark": top,
        },
        state=state,
        then=then,
    )


@_step(StepName.RETIRE)
def retire(claim: Claim) -> StepOutcome:
    """Retire every settled subject upstream (RETIRE_CONFIDENCE, RETIRE_MIN_CLASSIFICATIONS)."""
    from annotate.services.zooniverse.retirement import subjects_retire

    by_workflow = defaultdict(list)
    for subject in subjects_settled():
        by_workflow[subject.round.workflow].append(subject)
    if not by_workflow:
        return StepOutcome("no settled subject left open", done=False,
                           then=[(StepName.ROUND, "retirement checked")])
    retired = 0
    for workflow, subjects in by_workflow.items():
        retired += subjects_retire(workflow=workflow, subjects=subjects, reason="consensus")
    return StepOutcome(
        f"{retired} subjects retired on Zooniverse",
        detail={"retired": retired},
        then=[(StepName.ROUND, f"{retired} subjects retired")],
    )


@_step(StepName.TRAIN)
def train(claim: Claim) -> StepOutcome:
    """Request a training run once TRAIN_AFTER_NEW_LABELS new final labels have arrived."""
    from training.models import TrainingRun
    from training.services.triggers import training_maybe_trigger

    new, threshold = train_waiting()
    if threshold <= 0:
        return StepOutcome("TRAIN_AFTER_NEW_LABELS is 0: retraining only on request or nightly",
                           done=False, detail={"new_labels": new})
    if new < threshold:
        return StepOutcome(f"retrain after {threshold - new} more labels ({new} of {threshold})",
                           done=False, detail={"new_labels": new, "threshold": threshold})
    in_flight = set(
        TrainingRun.objects.filter(
            status__in=(TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)
        ).values_list("pk", flat=True)
    )
    run = training_maybe_trigger()
    if run is None:  # pragma: no cover - the threshold was checked above
        return StepOutcome("no run requested", done=False)
    verb = "already in flight" if run.pk in in_flight else "requested"
    return StepOutcome(
        f"training run {run.pk} {verb} ({new} new labels, threshold {threshold})",
        done=run.pk not in in_flight,
        detail={"run_id": run.pk, "new_labels": new, "threshold": threshold},
    )


def round_trigger(round) -> str:
    return f"after round {round.number}"


@_step(StepName.ROUND)
def next_round(claim: Claim) -> StepOutcome:
    """Choose and push the next round when the active one is nearly done and AUTO_ROUNDS is on.

    "Nearly done": ROUND_NEXT_WHEN_RETIRED of its subjects retired (upstream state synced first:
    Zooniverse retires by count too), or fewer than ROUND_NEXT_WHEN_OPEN_BELOW still open. One
    round per active round, ever: the request records its trigger and a second check finds it.
    """
    from annotate.models import Round, Subject
    from annotate.services.zooniverse.retirement import subject_statuses_sync
    from training.models import RoundRequest, TrainingRun
    from training.selectors import model_version_active
    from training.services.round_requests import round_request_create

    if not settings.AUTO_ROUNDS:
        return StepOutcome("AUTO_ROUNDS is off: staff choose the next round", done=False)
    current = round_active()
    if current is None:
        return StepOutcome("no round pushed yet: staff push the first one", done=False)
    trigger = round_trigger(current)
    if RoundRequest.objects.filter(params__trigger=trigger).exists() or Round.objects.filter(
        number__gt=current.number
    ).exists():
        return StepOutcome(f"the round {trigger} is chosen already", done=False)
    if current.workflow is not None:
        open_subjects = Subject.objects.filter(
            round=current, retired_at__isnull=True, upstream_state=Subject.Upstream.ACTIVE
        )
        subject_statuses_sync(workflow=current.workflow, subjects=list(open_subjects))
    retired, total = round_progress(current)
    share = retired / total if total else 1.0
    open_count = total - retired
    wanted = float(settings.ROUND_NEXT_WHEN_RETIRED)
    below = int(settings.ROUND_NEXT_WHEN_OPEN_BELOW)
    if share < wanted and not (below and open_count < below):
        return StepOutcome(
            f"next round when {wanted:.0%} of {current.name}'s subjects are retired "
            f"(now {retired} of {total}, {share:.0%})",
            done=False,
            detail={"round_id": current.pk, "retired": retired, "subjects": total},
        )
    # A model on its way is worth the wait: the round it chooses asks the crowd better questions.
    training = TrainingRun.objects.filter(
        status__in=(TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)
    ).first()
    if training is not None:
        return StepOutcome(
            f"{current.name} is done ({retired} of {total} retired); the next round waits for "
            f"training run {training.pk} to finish",
            done=False,
            detail={"round_id": current.pk, "training_run_id": training.pk},
        )
    version = model_version_active()
    if version is not None and version.scored_at is None:
        return StepOutcome(
            f"{current.name} is done; the next round waits for model v{version.pk} to score "
            "the pool",
            done=False,
            detail={"round_id": current.pk, "model_version_id": version.pk},
        )
    request = round_request_create(
        user=None,
        size=int(settings.ROUND_NEXT_SIZE),
        push=True,
        seed=current.number,
        trigger=trigger,
    )
    chooser = f"model v{version.pk}" if version else "a cold start (no model yet)"
    return StepOutcome(
        f"round request {request.pk} ({settings.ROUND_NEXT_SIZE} items, by {chooser}) "
        f"{trigger}: {retired} of {total} subjects retired",
        detail={"round_request_id": request.pk, "after_round_id": current.pk,
                "model_version_id": version.pk if version else None},
    )
