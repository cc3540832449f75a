"""What the loop is doing, for the dashboard and ``/api/v1/loop/``: each step's last run, what
waits and why, recent failures, and the day's totals. A handful of queries, whatever the size of
the database (counts over indexed columns, the last events by the step-time index)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypedDict

from django.conf import settings
from django.db.models import Count, IntegerField, Max, Q, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from loop.models import LoopEvent, LoopStep, StepName


class StepStatus(TypedDict):
    name: str
    label: str
    last_status: str
    last_summary: str
    last_error: str
    last_started_at: str | None
    last_finished_at: str | None
    runs: int
    failures: int
    pending: bool
    running: bool
    waiting: str


class EventRow(TypedDict):
    id: int
    step: str
    status: str
    trigger: str
    summary: str
    error: str
    detail: dict[str, Any]
    started_at: str
    finished_at: str
    seconds: float


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _event_row(event: LoopEvent) -> EventRow:
    return {
        "id": event.pk,
        "step": event.step,
        "status": event.status,
        "trigger": event.trigger,
        "summary": event.summary,
        "error": event.error,
        "detail": event.detail,
        "started_at": event.started_at.isoformat(),
        "finished_at": event.finished_at.isoformat(),
        "seconds": round(event.seconds, 3),
    }


def _waiting(now: datetime, steps: dict[str, LoopStep]) -> dict[str, str]:
    """Per step, what it waits for, in words a curator or staff member can act on."""
    from annotate.models import Classification
    from training.models import TrainingRun

    waiting: dict[str, str] = {}
    pull = steps.get(StepName.PULL)
    interval = float(settings.ZOONIVERSE_SYNC_INTERVAL)
    if pull is not None and pull.last_finished_at:
        due = pull.last_finished_at + timedelta(seconds=interval)
        left = max(0, int((due - now).total_seconds()))
        waiting[StepName.PULL] = f"next scheduled pull in about {left} s (every {interval:g} s)"
    else:
        waiting[StepName.PULL] = f"pulls every {interval:g} s once beat runs"

    aggregate = steps.get(StepName.AGGREGATE)
    watermark = int((aggregate.state or {}).get("watermark", 0)) if aggregate else 0
    new_votes = Classification.objects.filter(pk__gt=watermark, item__isnull=False).count()
    waiting[StepName.AGGREGATE] = (
        f"{new_votes} votes not aggregated yet" if new_votes else "every vote is aggregated"
    )

    open_settled = subjects_settled().count()
    waiting[StepName.RETIRE] = (
        f"{open_settled} settled subjects still open upstream"
        if open_settled
        else "no settled subject left open"
    )

    run = (
        TrainingRun.objects.filter(
            status__in=(TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)
        )
        .order_by("-created_at")
        .first()
    )
    new, threshold = train_waiting()
    if run is not None:
        waiting[StepName.TRAIN] = f"training run {run.pk} {run.status} ({run.progress:.0%})"
    elif threshold <= 0:
        waiting[StepName.TRAIN] = "automatic retraining is off (TRAIN_AFTER_NEW_LABELS=0)"
    else:
        waiting[StepName.TRAIN] = (
            f"retrain after {max(0, threshold - new)} more labels ({new} of {threshold})"
        )

    current = round_active()
    if not settings.AUTO_ROUNDS:
        waiting[StepName.ROUND] = "AUTO_ROUNDS is off: staff choose the next round"
    elif current is None:
        waiting[StepName.ROUND] = "no round pushed yet"
    else:
        retired, total = round_progress(current)
        waiting[StepName.ROUND] = (
            f"next round when {settings.ROUND_NEXT_WHEN_RETIRED:.0%} of {current.name}'s "
            f"subjects are retired (now {retired} of {total})"
        )
    return waiting


def _day_totals(now: datetime) -> dict[str, int]:
    """What the steps did in the last 24 h, summed in the database (one query)."""

    def summed(step: str, key: str) -> Coalesce:
        return Coalesce(
            Sum(Cast(KT(f"detail__{key}"), IntegerField()), filter=Q(step=step)), 0
        )

    done = LoopEvent.objects.filter(
        finished_at__gte=now - timedelta(days=1), status=LoopEvent.Status.DONE
    )
    return done.aggregate(
        votes_pulled=summed(StepName.PULL, "votes"),
        labels_changed=summed(StepName.AGGREGATE, "labels_changed"),
        subjects_retired=summed(StepName.RETIRE, "retired"),
        training_runs_requested=Count("pk", filter=Q(step=StepName.TRAIN)),
        rounds_requested=Count("pk", filter=Q(step=StepName.ROUND)),
    )


def loop_status(*, events: int = 20) -> dict[str, Any]:
    """The pipeline at a glance, JSON-ready."""
    from annotate.models import Round
    from training.models import ModelVersion, TrainingRun

    now = timezone.now()
    steps = {s.name: s for s in LoopStep.objects.all()}
    waiting = _waiting(now, steps)
    rows: list[StepStatus] = []
    for name, label in StepName.choices:
        if name == StepName.SCORE:
            continue  # scoring is the model side's own job; its events are in the log
        step = steps.get(name)
        running = bool(
            step and step.running_since and step.lease_until and step.lease_until > now
        )
        rows.append(
            {
                "name": name,
                "label": str(label),
                "last_status": step.last_status if step else "",
                "last_summary": step.last_summary if step else "never ran",
                "last_error": step.last_error if step else "",
                "last_started_at": _iso(step.last_started_at) if step else None,
                "last_finished_at": _iso(step.last_finished_at) if step else None,
                "runs": step.runs if step else 0,
                "failures": step.failures if step else 0,
                "pending": bool(step and step.request_seq > step.served_seq),
                "running": running,
                "waiting": waiting.get(name, ""),
            }
        )

    totals = _day_totals(now)
    latest_run = TrainingRun.objects.order_by("-created_at", "-id").first()
    active = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()
    last_round = Round.objects.order_by("-number").first()
    failures = [
        _event_row(e) for e in LoopEvent.objects.filter(status=LoopEvent.Status.FAILED)[:5]
    ]
    return {
        "generated_at": now.isoformat(),
        "broker": "redis" if settings.REDIS_URL else "filesystem",
        "auto_rounds": bool(settings.AUTO_ROUNDS),
        "steps": rows,
        "totals_24h": totals,
        "training": {
            "latest_run": {
                "id": latest_run.pk,
                "status": latest_run.status,
                "progress": latest_run.progress,
                "trigger": latest_run.trigger,
                "error": latest_run.error,
                "finished_at": _iso(latest_run.finished_at),
            }
            if latest_run
            else None,
            "active_model": {
                "id": active.pk,
                "val_map": active.val_map,
                "promoted_at": _iso(active.promoted_at),
                "scored_at": _iso(active.scored_at),
            }
            if active
            else None,
        },
        "latest_round": {
            "id": last_round.pk,
            "number": last_round.number,
            "status": last_round.status,
            "strategy": last_round.strategy,
            "model_version_id": last_round.model_version_id,
            "pushed_at": _iso(last_round.pushed_at),
        }
        if last_round
        else None,
        "failures": failures,
        "events": [_event_row(e) for e in LoopEvent.objects.all()[:events]],
        "last_event_at": _iso(LoopEvent.objects.aggregate(t=Max("finished_at"))["t"]),
    }


# --- what the steps wait for (read by the steps and the status panel) ---


def subjects_settled():
    """Open subjects (active upstream, not retired) whose item the crowd has settled."""
    from annotate.models import Item, Subject

    return Subject.objects.filter(
        retired_at__isnull=True,
        upstream_state=Subject.Upstream.ACTIVE,
        round__workflow__isnull=False,
        item__consensus=Item.Consensus.CONFIDENT,
        item__n_classifications__gte=settings.RETIRE_MIN_CLASSIFICATIONS,
    ).select_related("round__workflow")


def train_waiting() -> tuple[int, int]:
    """(new final labels since the last run, TRAIN_AFTER_NEW_LABELS)."""
    from training.services.triggers import training_new_labels_count

    return training_new_labels_count(), int(settings.TRAIN_AFTER_NEW_LABELS)


def round_active():
    """The latest pushed round, or None."""
    from annotate.models import Round

    return Round.objects.filter(status=Round.Status.PUSHED).order_by("-number").first()


def round_progress(round) -> tuple[int, int]:
    """(subjects retired, subjects) of a round, as last seen."""
    from annotate.models import Subject

    counts = Subject.objects.filter(round=round).aggregate(
        total=Count("pk"), retired=Count("pk", filter=Q(retired_at__isnull=False))
    )
    return counts["retired"], counts["total"]
