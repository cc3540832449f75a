"""The loop with real ``celery worker`` processes on Redis and PostgreSQL, as deployed.

A default-queue worker and a train-queue worker, each its own process, serve the steps; the
Zooniverse stand-in runs in this process (threads) and the workers reach it over HTTP. One pull
must end in a second round chosen by a model that the loop trained by itself; a worker killed in
the middle of an aggregation or of a round's push must cost nothing but time.

They need PostgreSQL (the workers share the test database) and Redis at
CROWDLOOP_TEST_REDIS_URL; otherwise they skip.
"""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest
from django.conf import settings

from annotate.models import AggregatedLabel, Item, Round, Subject, Workflow
from annotate.services.rounds import round_publish
from annotate.services.zooniverse.workflows import workflow_versions_sync
from annotate.zooniverse.sandbox import CrowdConfig, FaultAction, FaultRule, Sandbox, serve
from loop.models import LoopEvent, LoopStep, StepName
from loop.services.pipeline import step_request
from ml.mosaics import DIGIT_KEYS
from tests.factories import WorkflowFactory
from tests.training.builders import write_mosaic_items
from tests.workers import sender, until, worker_env
from training.models import ModelVersion, RoundRequest, TrainingRun
from training.services.selection import round_select

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.postgres,
              pytest.mark.timeout(300)]


@pytest.fixture
def stand_in(pg, settings):
    sandbox = Sandbox(list(DIGIT_KEYS), keys=list(DIGIT_KEYS), retirement_count=20)
    server, _ = serve("127.0.0.1", 0, sandbox=sandbox)
    settings.PANOPTES_ENDPOINT = server.endpoint
    settings.PANOPTES_PROJECT_ID = str(sandbox.project_id)
    settings.PANOPTES_CLIENT_ID, settings.PANOPTES_CLIENT_SECRET = "crowdloop-test", "secret"
    settings.PUBLIC_MEDIA_BASE_URL = "http://127.0.0.1:9/media"
    try:
        yield sandbox, server.endpoint
    finally:
        server.shutdown()
        server.server_close()


def loop_env(redis_url: str, endpoint: str, **extra: str) -> dict[str, str]:
    settings_for_the_loop = {
        "PANOPTES_ENDPOINT": endpoint,
        "PANOPTES_PROJECT_ID": settings.PANOPTES_PROJECT_ID,
        "PANOPTES_CLIENT_ID": "crowdloop-test",
        "PANOPTES_CLIENT_SECRET": "secret",
        "PUBLIC_MEDIA_BASE_URL": "http://127.0.0.1:9/media",
        "AUTO_ROUNDS": "1",
        "TRAIN_AFTER_NEW_LABELS": "12",
        "TRAINING_EPOCHS": "2",
        "TRAINING_MIN_ITEMS": "5",
        "ROUND_NEXT_SIZE": "6",
        "RETIRE_MIN_CLASSIFICATIONS": "3",
        "LOOP_AGGREGATE_DELAY_S": "0",
        # Redis hands an unacknowledged message of a dead worker to another after this long.
        "CELERY_VISIBILITY_TIMEOUT": "8",
    }
    return worker_env(redis_url, **{**settings_for_the_loop, **extra})


def first_round_classified(sandbox: Sandbox, n_items: int = 30, size: int = 15) -> Round:
    mosaic = write_mosaic_items(n_items, curated=0)
    AggregatedLabel.objects.all().delete()
    Item.objects.update(n_classifications=0, consensus=Item.Consensus.NONE)
    external = dict(Item.objects.values_list("pk", "external_id"))
    truth = {
        external[pk]: [DIGIT_KEYS[d] for d in np.flatnonzero(row)]
        for pk, row in zip(mosaic.item_ids, mosaic.labels, strict=True)
    }
    workflow = WorkflowFactory(
        zooniverse_id=sandbox.workflow_id, project_id=sandbox.project_id, version=None
    )
    workflow_versions_sync(workflow=workflow)
    first = round_select(size=size, workflow=workflow, seed=1).round
    round_publish(round=first)
    sandbox.run_volunteers(
        sandbox.workflow_id,
        crowd=CrowdConfig(n_volunteers=12, mix={"careful": 0.8, "careless": 0.2}, seed=3),
        truth=truth,
    )
    return first


def ask(redis_url: str, step: str, monkeypatch) -> None:
    """What a trigger does: record the request, then send the step's message to Redis (this
    test process runs tasks eagerly, so the message is sent by hand, by name)."""
    from loop.services import pipeline

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "_send", lambda **kwargs: None)
        step_request(name=step, reason="test")
    sender(redis_url).send_task(f"loop.tasks.step_{step}", queue="default")


def test_one_pull_on_real_workers_ends_in_a_round_chosen_by_a_model_the_loop_trained(
    stand_in, redis_url, workers, monkeypatch
):
    sandbox, endpoint = stand_in
    first_round_classified(sandbox)
    env = loop_env(redis_url, endpoint)
    workers(env, "crowd", "default")
    workers(env, "model", "train")

    ask(redis_url, StepName.PULL, monkeypatch)

    def second_round_pushed() -> bool:
        return Round.objects.filter(number=2, status=Round.Status.PUSHED).exists()

    until(second_round_pushed, 200, "the loop to push a second round", every=1.0)
    run = TrainingRun.objects.get()
    version = ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE)
    assert (run.trigger, run.status, version.training_run_id) == ("auto", "succeeded", run.pk)
    second = Round.objects.get(number=2)
    assert second.model_version_id == version.pk
    assert RoundRequest.objects.get().status == "succeeded"
    assert Subject.objects.filter(round=second).count() == 6
    assert Subject.objects.filter(round__number=1, retired_at__isnull=False).exists()
    done = set(LoopEvent.objects.filter(status="done").values_list("step", flat=True))
    assert {"pull", "aggregate", "retire", "train", "score", "round"} <= done
    assert not LoopEvent.objects.filter(status="failed").exists()


def test_a_worker_killed_mid_aggregation_and_one_killed_mid_push_cost_nothing_but_time(
    stand_in, redis_url, workers, monkeypatch
):
    from django.utils import timezone

    from annotate.services.zooniverse.pull import classifications_pull
    from loop.services import pipeline
    from training.services import round_requests

    sandbox, endpoint = stand_in
    first_round_classified(sandbox)
    assert classifications_pull(workflow=Workflow.objects.get()).counts.created > 0
    client = sender(redis_url)
    faulty = loop_env(redis_url, endpoint, CROWDLOOP_LOOP_FAULTS="sleep_in_aggregate=60",
                      AUTO_ROUNDS="0")
    doomed = workers(faulty, "doomed", "default")
    ask(redis_url, StepName.AGGREGATE, monkeypatch)
    until(lambda: LoopStep.objects.filter(name=StepName.AGGREGATE,
                                          running_since__isnull=False).exists(),
          60, "the aggregation to start")
    doomed.kill()
    step = LoopStep.objects.get(name=StepName.AGGREGATE)
    assert step.request_seq > step.served_seq  # the request outlives its worker
    assert not AggregatedLabel.objects.exists()

    # Its lease runs out; beat's reconciler sends the step again; a healthy worker serves it.
    LoopStep.objects.filter(pk=step.pk).update(lease_until=timezone.now())
    monkeypatch.setattr(pipeline, "_send", lambda *, name, countdown=0.0: client.send_task(
        f"loop.tasks.step_{name}", queue="default"))
    assert pipeline.steps_reconcile() == [StepName.AGGREGATE]
    healthy = workers(loop_env(redis_url, endpoint, AUTO_ROUNDS="0"), "healthy", "default")
    until(lambda: LoopEvent.objects.filter(step=StepName.AGGREGATE, status="done").exists(),
          90, "the aggregation sent again")
    assert LoopEvent.objects.filter(step=StepName.AGGREGATE).count() == 1
    assert AggregatedLabel.objects.exists()
    healthy.kill()

    # A round's push hangs on Zooniverse and its worker dies; the reconciler sends the push
    # again and the round reaches Zooniverse once.
    sandbox.faults.add(FaultRule(path=r"/api/subjects$", method="POST",
                                 actions=[FaultAction("hang", seconds=30)]))
    quiet = loop_env(redis_url, endpoint, AUTO_ROUNDS="0")  # only the round asked for below
    pusher = workers(quiet, "pusher", "default,train")

    def posts(path: str) -> int:
        return sum(1 for e in sandbox.request_log if e.method == "POST" and e.path == path)

    # Asked for here, served by the workers (this process would run it eagerly).
    monkeypatch.setattr(round_requests, "round_request_enqueue", lambda *, request_id: "")
    request = round_requests.round_request_create(user=None, size=4, push=True, seed=5)
    client.send_task("training.tasks.round_select_task", kwargs={"request_id": request.pk},
                     queue="train")
    sets_before = posts("/api/subject_sets")
    until(lambda: RoundRequest.objects.filter(pk=request.pk, round__isnull=False).exists(), 90,
          "the round to be chosen")
    until(lambda: posts("/api/subject_sets") > sets_before, 90, "the push to reach Zooniverse")
    time.sleep(3)  # its first subject is hanging now
    pusher.kill()
    sandbox.faults.clear()
    request.refresh_from_db()
    assert request.status == "running" and request.round is not None
    monkeypatch.setattr(round_requests, "_push", lambda *, request_id: client.send_task(
        "training.tasks.round_request_push_task", kwargs={"request_id": request_id},
        queue="default"))
    later = timezone.now() + round_requests.STALE_AFTER + timedelta(seconds=1)
    assert round_requests.round_requests_reconcile(now=later) == [request.pk]
    workers(quiet, "pusher-2", "default,train")
    until(lambda: RoundRequest.objects.filter(pk=request.pk, status="succeeded").exists(), 90,
          "the push sent again")
    second = RoundRequest.objects.get(pk=request.pk).round
    assert Subject.objects.filter(round=second).count() == 4
    external_ids = [s.metadata.get("external_id") for s in sandbox.subjects()]
    assert len(external_ids) == len(set(external_ids)) == 15 + 4  # nothing pushed twice
