"""What the dashboard and /api/v1/loop/ say about the pipeline."""

from __future__ import annotations

import pytest
from django.urls import reverse

from loop.models import LoopEvent, StepName
from loop.selectors import loop_status
from loop.services.pipeline import event_record, step_request

pytestmark = pytest.mark.django_db


def test_a_fresh_loop_says_each_step_never_ran_and_what_it_waits_for(settings):
    settings.TRAIN_AFTER_NEW_LABELS = 50
    settings.AUTO_ROUNDS = False
    status = loop_status()
    by_name = {s["name"]: s for s in status["steps"]}
    assert list(by_name) == ["pull", "aggregate", "retire", "train", "round"]
    assert by_name["train"]["waiting"] == "retrain after 50 more labels (0 of 50)"
    assert by_name["round"]["waiting"] == "AUTO_ROUNDS is off: staff choose the next round"
    assert by_name["aggregate"]["waiting"] == "every vote is aggregated"
    assert all(s["runs"] == 0 and not s["pending"] for s in status["steps"])


def test_events_add_up_to_the_days_totals_and_failures_are_listed(
    django_capture_on_commit_callbacks,
):
    event_record(step=StepName.PULL, status=LoopEvent.Status.DONE, summary="12 new votes",
                 detail={"votes": 12})
    event_record(step=StepName.PULL, status=LoopEvent.Status.DONE, summary="3 new votes",
                 detail={"votes": 3})
    event_record(step=StepName.RETIRE, status=LoopEvent.Status.DONE, summary="4 retired",
                 detail={"retired": 4})
    event_record(step=StepName.RETIRE, status=LoopEvent.Status.FAILED, summary="failed",
                 error="TransientError: 503")
    with django_capture_on_commit_callbacks():
        step_request(name=StepName.AGGREGATE, reason="15 new votes")
    status = loop_status()
    assert status["totals_24h"]["votes_pulled"] == 15
    assert status["totals_24h"]["subjects_retired"] == 4
    assert [f["error"] for f in status["failures"]] == ["TransientError: 503"]
    by_name = {s["name"]: s for s in status["steps"]}
    assert by_name["aggregate"]["pending"] and by_name["retire"]["last_status"] == "failed"
    assert [e["step"] for e in status["events"]][:1] == ["retire"]


def test_the_loop_api_answers_readers_and_refuses_anonymous_callers(client, django_user_model):
    from django.contrib.auth.models import Group

    from annotate.roles import VIEWER, roles_setup

    url = reverse("api-loop")
    assert url == "/api/v1/loop/"
    assert client.get(url).status_code in (401, 403)
    roles_setup()
    user = django_user_model.objects.create_user("vera", password="a-long-test-password")
    user.groups.add(Group.objects.get(name=VIEWER))
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200
    assert {s["name"] for s in response.json()["steps"]} >= {"pull", "aggregate", "round"}


def test_the_loop_status_takes_a_handful_of_queries(django_assert_max_num_queries):
    for i in range(30):
        event_record(step=StepName.PULL, status=LoopEvent.Status.DONE, summary=f"{i}",
                     detail={"votes": i})
    with django_assert_max_num_queries(20):
        loop_status()
