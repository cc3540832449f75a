"""The loop closes by itself: one pull sets off aggregation, retirement, a retrain, scoring and
the next round, against the Zooniverse stand-in with the real panoptes-client.

Tasks run eagerly here (tests/conftest.py), each as soon as its trigger commits
(``transactional_db``), so the chain a worker would run plays out inside the test.
"""

from __future__ import annotations

import numpy as np
import pytest

from annotate.models import AggregatedLabel, Item, Round, Subject
from annotate.services.rounds import round_publish
from annotate.zooniverse.sandbox import CrowdConfig, Sandbox, serve
from loop.models import LoopEvent, LoopStep, StepName
from loop.services.pipeline import step_request
from loop.tasks import STEP_TASKS
from ml.mosaics import DIGIT_KEYS
from tests.factories import WorkflowFactory
from tests.training.builders import write_mosaic_items
from training.models import ModelVersion, RoundRequest, TrainingRun
from training.services.selection import round_select

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def stand_in(transactional_db, settings, loop_on):
    # Zooniverse would retire a subject only after 20 votes: retiring earlier is the loop's job.
    sandbox = Sandbox(list(DIGIT_KEYS), keys=list(DIGIT_KEYS), retirement_count=20)
    server, _ = serve("127.0.0.1", 0, sandbox=sandbox)
    settings.PANOPTES_ENDPOINT = server.endpoint
    settings.PANOPTES_PROJECT_ID = str(sandbox.project_id)
    settings.PANOPTES_CLIENT_ID, settings.PANOPTES_CLIENT_SECRET = "crowdloop-test", "secret"
    settings.PUBLIC_MEDIA_BASE_URL = "http://127.0.0.1:9/media"
    settings.TRAIN_AFTER_NEW_LABELS = 12
    settings.TRAINING_EPOCHS = 2
    settings.TRAINING_MIN_ITEMS = 5
    settings.AUTO_ROUNDS = True
    settings.ROUND_NEXT_SIZE = 6
    settings.RETIRE_MIN_CLASSIFICATIONS = 3
    try:
        yield sandbox
    finally:
        server.shutdown()
        server.server_close()


def _fresh_pool(n: int) -> dict[str, list[str]]:
    """``n`` unlabelled mosaics; their true digits by external id."""
    mosaic = write_mosaic_items(n, curated=0)
    AggregatedLabel.objects.all().delete()
    Item.objects.update(n_classifications=0, consensus=Item.Consensus.NONE)
    ids = dict(Item.objects.values_list("pk", "external_id"))
    return {
        ids[pk]: [DIGIT_KEYS[d] for d in np.flatnonzero(row)]
        for pk, row in zip(mosaic.item_ids, mosaic.labels, strict=True)
    }


def _classify(sandbox: Sandbox, truth: dict[str, list[str]]) -> int:
    run = sandbox.run_volunteers(
        sandbox.workflow_id,
        crowd=CrowdConfig(n_volunteers=12, mix={"careful": 0.8, "careless": 0.2}, seed=3),
        truth=truth,
    )
    return len(run.classifications)


def _events(step: str) -> list[LoopEvent]:
    return list(LoopEvent.objects.filter(step=step).order_by("finished_at", "id"))


def test_one_pull_sets_off_labels_retirement_a_retrain_and_the_next_round_chosen_by_it(stand_in):
    sandbox = stand_in
    truth = _fresh_pool(30)
    workflow = WorkflowFactory(
        zooniverse_id=sandbox.workflow_id, project_id=sandbox.project_id, version=None
    )
    from annotate.services.zooniverse.workflows import workflow_versions_sync

    workflow_versions_sync(workflow=workflow)
    first = round_select(size=15, workflow=workflow, seed=1).round
    round_publish(round=first)  # staff push the cold start; the loop does the rest
    assert _classify(sandbox, truth) >= 45

    step_request(name=StepName.PULL, reason="scheduled pull")  # what beat sends

    pull = _events(StepName.PULL)[-1]
    assert pull.status == "done" and pull.detail["votes"] >= 45
    # Asked for twice (the votes' signal and the pull's own follow-up): served once.
    aggregate = [e for e in _events(StepName.AGGREGATE) if e.status == "done"]
    assert len(aggregate) == 1 and aggregate[0].detail["labels_changed"] > 0
    retire = [e for e in _events(StepName.RETIRE) if e.status == "done"]
    assert retire and retire[0].detail["retired"] > 0
    retired_here = set(
        Subject.objects.filter(retired_at__isnull=False).values_list("zooniverse_id", flat=True)
    )
    statuses = [sandbox.status(s.id, sandbox.workflow_id) for s in sandbox.subjects()]
    upstream = {s.subject_id for s in statuses if s is not None and s.retired_at}
    assert retired_here and retired_here <= upstream

    run = TrainingRun.objects.get()
    assert (run.trigger, run.status) == ("auto", "succeeded")
    version = ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE)
    assert version.training_run_id == run.pk and version.scored_at is not None
    assert [e.summary.startswith("pool scored") for e in _events(StepName.SCORE)][-1]

    request = RoundRequest.objects.get()
    assert request.params["trigger"] == "after round 1" and request.status == "succeeded"
    second = Round.objects.get(number=2)
    assert second.model_version_id == version.pk and second.status == Round.Status.PUSHED
    assert Subject.objects.filter(round=second).count() == 6
    assert len(sandbox.subjects()) == 21

    # Every step's message delivered once more: nothing runs twice, no second round.
    for task in STEP_TASKS.values():
        assert "skipped" in task.apply(task_id="duplicate").get()
    step_request(name=StepName.ROUND, reason="periodic check")
    assert Round.objects.count() == 2 and RoundRequest.objects.count() == 1
    assert _events(StepName.ROUND)[-1].summary == "the round after round 2 is chosen already" or (
        "next round when" in _events(StepName.ROUND)[-1].summary
    )
    assert not LoopEvent.objects.filter(status="failed").exists()


def test_a_pull_with_no_votes_and_a_loop_with_no_model_yet_do_no_harm(stand_in):
    sandbox = stand_in
    workflow = WorkflowFactory(
        zooniverse_id=sandbox.workflow_id, project_id=sandbox.project_id, version=None
    )
    from annotate.services.zooniverse.workflows import workflow_versions_sync

    workflow_versions_sync(workflow=workflow)
    step_request(name=StepName.PULL, reason="scheduled pull")
    assert _events(StepName.PULL)[-1].status == "nothing"
    assert not LoopEvent.objects.filter(step=StepName.AGGREGATE).exists()

    step_request(name=StepName.ROUND, reason="periodic check")
    assert _events(StepName.ROUND)[-1].summary == "no round pushed yet: staff push the first one"
    step_request(name=StepName.TRAIN, reason="a review")
    assert _events(StepName.TRAIN)[-1].summary.startswith("retrain after 12 more labels")


def test_a_round_retired_on_arrival_makes_way_for_the_next_one_chosen_without_a_model(stand_in):
    sandbox = stand_in
    _fresh_pool(20)
    workflow = WorkflowFactory(
        zooniverse_id=sandbox.workflow_id, project_id=sandbox.project_id, version=None
    )
    from annotate.services.zooniverse.workflows import workflow_versions_sync

    workflow_versions_sync(workflow=workflow)
    first = round_select(size=5, workflow=workflow, seed=1).round
    round_publish(round=first)
    subject_ids = [s.id for s in sandbox.subjects()]
    sandbox.retire(sandbox.workflow_id, subject_ids, reason="other")  # by the project owner

    step_request(name=StepName.ROUND, reason="periodic check")
    event = _events(StepName.ROUND)[-1]
    assert event.status == "done" and "a cold start (no model yet)" in event.summary
    assert "5 of 5 subjects retired" in event.summary
    assert Round.objects.get(number=2).status == Round.Status.PUSHED
    step = LoopStep.objects.get(name=StepName.ROUND)
    assert step.failures == 0 and step.requested_at is None


def test_with_auto_rounds_off_the_loop_says_so_and_chooses_nothing(stand_in, settings):
    settings.AUTO_ROUNDS = False
    step_request(name=StepName.ROUND, reason="periodic check")
    assert _events(StepName.ROUND)[-1].summary.startswith("AUTO_ROUNDS is off")
    assert not RoundRequest.objects.exists()
