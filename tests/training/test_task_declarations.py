"""The train-queue tasks are declared for at-least-once delivery with bounded retries."""

from __future__ import annotations

import json

import pytest
from django.db import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from config.celery import app
from training import tasks

TASKS = [tasks.training_run_task, tasks.training_score_chunk, tasks.training_reconcile,
         tasks.training_nightly, tasks.round_select_task]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_every_training_task_is_late_acked_requeued_on_loss_and_routed_to_train(task):
    assert task.acks_late is True and task.reject_on_worker_lost is True
    assert task.name.startswith("training.tasks.")
    assert app.amqp.router.route({}, task.name)["queue"].name == "train"
    assert task.soft_time_limit < task.time_limit


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_every_training_task_retries_only_transient_errors_a_bounded_number_of_times(task):
    assert Exception not in task.autoretry_for
    assert OperationalError in task.autoretry_for and RedisConnectionError in task.autoretry_for
    assert task.max_retries == 5
    visibility = app.conf.broker_transport_options["visibility_timeout"]
    assert task.retry_backoff_max < visibility


def test_the_training_time_limit_stays_below_the_visibility_timeout():
    visibility = app.conf.broker_transport_options["visibility_timeout"]
    assert tasks.training_run_task.time_limit < visibility


def test_messages_carry_only_json_ids():
    assert app.conf.task_serializer == "json" and app.conf.accept_content == ["json"]
    # what the request service and the scoring group put on the wire
    json.dumps({"run_id": 1})
    signature = tasks.training_score_chunk.si(chunk_id=3)
    assert json.loads(json.dumps(signature))["kwargs"] == {"chunk_id": 3}


def test_the_beat_schedule_names_registered_tasks():
    from training.schedule import BEAT_SCHEDULE

    app.loader.import_default_modules()
    registered = set(app.tasks)
    for entry in BEAT_SCHEDULE.values():
        assert entry["task"] in registered
        assert entry["options"]["expires"] > 0
