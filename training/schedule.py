"""Celery beat entries of the model side; settings merge them into CELERY_BEAT_SCHEDULE.

    from training.schedule import BEAT_SCHEDULE as TRAINING_BEAT_SCHEDULE
    CELERY_BEAT_SCHEDULE = {**CELERY_BEAT_SCHEDULE, **TRAINING_BEAT_SCHEDULE}

Every message expires before the next one of its kind is sent: a beat tick that waited behind a
long training is dropped, the next tick is already coming (beat + idempotent catch-up tasks
instead of long ETAs, celery#3501).
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "training-nightly-retrain": {
        "task": "training.tasks.training_nightly",
        "schedule": crontab(hour=2, minute=30),
        "options": {"expires": 3 * 3600},
    },
    "training-reconcile": {
        "task": "training.tasks.training_reconcile",
        "schedule": 180.0,
        "options": {"expires": 170},
    },
}
