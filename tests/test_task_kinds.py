"""Every Celery task of the project is of one of the declared kinds, within the broker's limits."""

from __future__ import annotations

import pytest

from config.celery import app
from config.task_kinds import at_least_once_task, backoff_max, visibility_timeout

OURS = ("annotate.", "training.", "loop.")


def our_tasks() -> list:
    app.loader.import_default_modules()
    return [task for name, task in sorted(app.tasks.items()) if name.startswith(OURS)]


def test_the_project_declares_its_tasks_and_reads_the_visibility_timeout_in_one_place():
    assert len(our_tasks()) >= 15
    assert visibility_timeout() == app.conf.broker_transport_options["visibility_timeout"]


@pytest.mark.parametrize("task", our_tasks(), ids=lambda t: t.name)
def test_every_task_is_acknowledged_when_done_and_ends_before_redis_redelivers_it(task):
    assert task.acks_late is True
    if task.time_limit:
        assert task.soft_time_limit < task.time_limit < visibility_timeout()
    if getattr(task, "autoretry_for", ()):
        assert Exception not in task.autoretry_for
        assert task.retry_backoff_max <= visibility_timeout() / 4
        assert 0 < task.max_retries <= 5


def test_the_back_off_cap_follows_the_visibility_timeout(settings):
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 200}
    assert backoff_max() == 50
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 4 * 3600}
    assert backoff_max() == 600


def test_a_task_without_transient_errors_is_not_retried_automatically():
    @at_least_once_task(name="tests.task_kinds.once", redeliver_on_worker_loss=False, max_retries=0)
    def once() -> int:
        return 1

    assert once.acks_late is True and once.reject_on_worker_lost is False
    assert not getattr(once, "autoretry_for", ())
    assert once.max_retries == 0
