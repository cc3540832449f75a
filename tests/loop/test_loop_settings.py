"""Each setting of the loop changes what the loop does (read from the environment in
config/settings.py; tests/test_settings_env.py checks that every README setting has a reader)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from annotate.models import Item, Round, Subject
from loop.models import LoopStep, StepName
from loop.services import pipeline, steps
from loop.services.pipeline import Claim
from tests.factories import WorkflowFactory

pytestmark = pytest.mark.django_db


def _claim(name: str, reason: str = "test", state: dict | None = None) -> Claim:
    return Claim(name=name, seq=1, reason=reason, requested_at=None,
                 started_at=timezone.now(), task_id="t", state=state or {})


def _round_with_subjects(total: int, retired: int) -> Round:
    workflow = WorkflowFactory(zooniverse_id=7, project_id=1)
    round_ = Round.objects.create(number=1, name="round-1", workflow=workflow,
                                  status=Round.Status.PUSHED)
    for i in range(total):
        item = Item.objects.create(external_id=f"i{i}")
        Subject.objects.create(
            zooniverse_id=1000 + i, item=item, round=round_,
            retired_at=timezone.now() if i < retired else None,
        )
    return round_


@pytest.fixture
def no_upstream(monkeypatch):
    """The round step syncs retirement from Zooniverse first; here nothing changes upstream."""
    monkeypatch.setattr(
        "annotate.services.zooniverse.retirement.subject_statuses_sync", lambda **kwargs: 0
    )


@pytest.fixture
def requests_made(monkeypatch):
    made: list[dict] = []

    def create(**kwargs):
        made.append(kwargs)

        class Request:
            pk = len(made)

        return Request()

    monkeypatch.setattr("training.services.round_requests.round_request_create", create)
    return made


@pytest.mark.parametrize(("share", "expected"), [(0.8, 0), (0.7, 1)])
def test_round_next_when_retired_sets_how_done_a_round_must_be(
    settings, no_upstream, requests_made, share, expected
):
    settings.AUTO_ROUNDS = True
    settings.ROUND_NEXT_WHEN_RETIRED = share
    _round_with_subjects(total=10, retired=7)
    outcome = steps.next_round(_claim(StepName.ROUND))
    assert len(requests_made) == expected, outcome.summary
    if not expected:
        assert outcome.summary.startswith(f"next round when {share:.0%}")


@pytest.mark.parametrize(("below", "expected"), [(0, 0), (3, 0), (4, 1)])
def test_round_next_when_open_below_lets_a_short_queue_start_the_next_round(
    settings, no_upstream, requests_made, below, expected
):
    settings.AUTO_ROUNDS = True
    settings.ROUND_NEXT_WHEN_RETIRED = 1.0
    settings.ROUND_NEXT_WHEN_OPEN_BELOW = below
    _round_with_subjects(total=10, retired=7)  # 3 open
    steps.next_round(_claim(StepName.ROUND))
    assert len(requests_made) == expected


def test_round_next_size_is_the_size_the_loop_asks_for(settings, no_upstream, requests_made):
    settings.AUTO_ROUNDS = True
    settings.ROUND_NEXT_SIZE = 37
    _round_with_subjects(total=4, retired=4)
    steps.next_round(_claim(StepName.ROUND))
    assert requests_made[0]["size"] == 37 and requests_made[0]["push"] is True
    assert requests_made[0]["trigger"] == "after round 1"


def test_auto_rounds_off_asks_for_nothing(settings, no_upstream, requests_made):
    settings.AUTO_ROUNDS = False
    _round_with_subjects(total=4, retired=4)
    assert steps.next_round(_claim(StepName.ROUND)).done is False
    assert requests_made == []


@pytest.mark.parametrize(("every_s", "full"), [(600.0, False), (60.0, True)])
def test_aggregation_full_every_s_sets_how_often_a_full_pass_runs(
    settings, monkeypatch, every_s, full
):
    from annotate.models import Classification, Volunteer

    settings.AGGREGATION_FULL_EVERY_S = every_s
    workflow = WorkflowFactory(zooniverse_id=7, project_id=1, version=None)
    item = Item.objects.create(external_id="i")
    subject = Subject.objects.create(zooniverse_id=1, item=item)
    volunteer = Volunteer.objects.create(key="v")
    Classification.objects.create(zooniverse_id=1, workflow=workflow, subject=subject,
                                  item=item, volunteer=volunteer, concept_ids=[],
                                  created_at=timezone.now())
    asked: list = []

    class Summary:
        incremental = True
        n_items = labels_changed = confident_items = 1
        retire_subject_ids: list = []
        seconds = 0.0

    def aggregate(*, item_ids=None):
        asked.append(item_ids)
        summary = Summary()
        summary.incremental = item_ids is not None
        return summary

    monkeypatch.setattr("annotate.services.aggregation.labels_aggregate", aggregate)
    five_minutes_ago = (timezone.now() - timedelta(minutes=5)).isoformat()
    steps.aggregate(_claim(StepName.AGGREGATE, state={"last_full_at": five_minutes_ago}))
    assert (asked[0] is None) is full


def test_loop_aggregate_delay_s_is_the_wait_before_an_aggregation(
    settings, django_capture_on_commit_callbacks, loop_on
):
    from annotate.signals import votes_stored

    settings.LOOP_AGGREGATE_DELAY_S = 42.0
    with django_capture_on_commit_callbacks() as callbacks:
        votes_stored.send(sender=None, workflow_id=7, created=3, source="pull")
    sends = [c for c in callbacks if getattr(c, "func", None) is pipeline._send]
    assert [c.keywords for c in sends] == [{"name": "aggregate", "countdown": 42.0}]
    assert LoopStep.objects.get(name=StepName.AGGREGATE).request_reason.startswith("3 new votes")


def test_votes_linked_to_items_that_arrived_later_ask_for_a_full_aggregation(
    django_capture_on_commit_callbacks, loop_on, monkeypatch
):
    from annotate.signals import votes_linked

    with django_capture_on_commit_callbacks():
        votes_linked.send(sender=None, subjects=2, votes=9)
    step = LoopStep.objects.get(name=StepName.AGGREGATE)
    assert step.request_reason == "full pass: 9 votes of 2 subjects linked to their items"
    asked: list = []

    class Asked(Exception):
        pass

    def aggregate(*, item_ids=None):
        asked.append(item_ids)
        raise Asked  # what it asked for is what counts here

    monkeypatch.setattr("annotate.services.aggregation.labels_aggregate", aggregate)
    state = {"last_full_at": timezone.now().isoformat(), "watermark": 10**9}
    with pytest.raises(Asked):
        steps.aggregate(_claim(StepName.AGGREGATE, reason=step.request_reason, state=state))
    assert asked == [None]  # a full pass, though no vote is newer than the watermark
