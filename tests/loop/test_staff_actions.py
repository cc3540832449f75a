"""The admin's staff actions page: who sees which form, what each form queues, its errors, and the
recent runs beside each form (page and runs.json)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from annotate.models import DatasetRelease, Round
from annotate.roles import ADMIN, CURATOR, STAFF, VIEWER, roles_setup
from loop.models import LoopEvent, LoopStep, StepName
from loop.services.pipeline import event_record
from tests.factories import WorkflowFactory
from tests.training.builders import write_mosaic_items
from training.models import RoundRequest
from training.services.round_requests import round_request_create

pytestmark = pytest.mark.django_db

PAGE = reverse("admin:loop_staff_actions")
RUNS = reverse("admin:loop_staff_actions_runs")


def action(name: str) -> str:
    return reverse("admin:loop_staff_action", args=[name])


def login_role(client, django_user_model, role: str):  # type: ignore[no-untyped-def]
    roles_setup()
    user = django_user_model.objects.create_user(f"{role}-user", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    client.force_login(user)
    return user


def login_with(client, django_user_model, *perms: str):  # type: ignore[no-untyped-def]
    user = django_user_model.objects.create_user("one-perm", is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client.force_login(user)
    return user


@pytest.fixture
def staff_client(client, django_user_model):
    login_role(client, django_user_model, STAFF)
    return client


def sections(response) -> dict[str, list[dict]]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.content
    return response.json()["sections"]


def draft_round(*, size: int = 3, seed: int = 1) -> Round:
    """A round chosen by a request without a push (succeeded, still a draft)."""
    from training.services.round_requests import round_request_execute

    request = round_request_create(user=None, size=size, seed=seed)
    round_request_execute(request_id=request.pk)
    request.refresh_from_db()
    assert request.status == "succeeded" and request.round is not None
    return request.round


# --- who sees what --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [STAFF, ADMIN])
def test_staff_and_admins_see_every_form_and_every_list(client, django_user_model, role):
    login_role(client, django_user_model, role)
    page = client.get(PAGE)
    assert page.status_code == 200
    html = page.content.decode()
    for section in ("action-sync", "action-round", "action-push", "action-release"):
        assert f'id="{section}"' in html
    assert reverse("admin:annotate_datasetrelease_add") in html
    assert 'src="/static/loop/staff_actions.js"' in html
    assert set(sections(client.get(RUNS))) == {"sync", "rounds", "pushes", "releases"}


@pytest.mark.parametrize("role", [VIEWER, CURATOR])
def test_viewers_and_curators_get_403_on_the_page_its_forms_and_its_list(
    client, django_user_model, role
):
    login_role(client, django_user_model, role)
    assert client.get(PAGE).status_code == 403
    assert client.get(RUNS).status_code == 403
    for name, data in (("sync", {}), ("round", {"size": 3}), ("push", {"round": 1})):
        assert client.post(action(name), data).status_code == 403
    assert not LoopStep.objects.exists() and not RoundRequest.objects.exists()


def test_a_staff_account_with_only_the_release_permission_sees_only_the_release_part(
    client, django_user_model
):
    login_with(client, django_user_model, "annotate.add_datasetrelease")
    html = client.get(PAGE).content.decode()
    assert 'id="action-release"' in html
    assert 'id="action-sync"' not in html and 'id="action-round"' not in html
    assert 'id="action-push"' not in html
    assert set(sections(client.get(RUNS))) == {"releases"}
    assert client.post(action("sync"), {}).status_code == 403
    assert client.post(action("round"), {"size": 3}).status_code == 403
    assert not LoopStep.objects.exists() and not RoundRequest.objects.exists()


def test_a_staff_account_with_only_the_rounds_permission_has_no_release_part(
    client, django_user_model
):
    login_with(client, django_user_model, "annotate.add_round")
    html = client.get(PAGE).content.decode()
    assert 'id="action-sync"' in html and 'id="action-round"' in html
    assert 'id="action-push"' in html and 'id="action-release"' not in html
    assert set(sections(client.get(RUNS))) == {"sync", "rounds", "pushes"}


def test_someone_not_signed_in_is_sent_to_the_login_and_nothing_is_queued(client):
    for response in (client.get(PAGE), client.get(RUNS), client.post(action("sync"), {})):
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert not LoopStep.objects.exists()


def test_an_action_the_page_does_not_have_is_a_404_and_a_get_on_a_form_is_a_405(staff_client):
    assert staff_client.post(action("retrain"), {}).status_code == 404
    assert staff_client.get(action("sync")).status_code == 405


def test_the_admin_index_and_the_dashboard_link_to_the_page_for_staff_only(
    client, django_user_model
):
    link = f'href="{PAGE}"'
    login_role(client, django_user_model, STAFF)
    assert link in client.get(reverse("admin:index")).content.decode()
    assert link in client.get(reverse("loop:dashboard")).content.decode()
    client.logout()
    login_role(client, django_user_model, CURATOR)
    assert link not in client.get(reverse("admin:index")).content.decode()
    assert link not in client.get(reverse("loop:dashboard")).content.decode()


# --- sync now -------------------------------------------------------------------------------------


def test_sync_now_runs_the_pull_step_as_its_task_and_lists_the_pull_it_made(
    staff_client, stand_in, django_capture_on_commit_callbacks
):
    from annotate.models import Classification
    from annotate.services.rounds import round_publish

    write_mosaic_items(12, curated=0)
    round_publish(round=draft_round(size=6))
    stand_in.run_volunteers(stand_in.workflow_id, classifications=9)

    with django_capture_on_commit_callbacks(execute=True) as sent:
        response = staff_client.post(action("sync"), {"workflow": ""}, follow=True)
    assert response.redirect_chain[-1][0].endswith("#action-sync")
    assert sent, "the pull goes to its task after commit, not inline"
    assert (
        f"Pull of every active workflow ({stand_in.workflow_id}) queued"
        in response.content.decode()
    )
    assert Classification.objects.count() == 9
    event = LoopEvent.objects.filter(step=StepName.PULL).first()
    assert event.trigger == "sync now by staff-user" and event.detail["votes"] == 9

    pulls = sections(staff_client.get(RUNS))["sync"]
    assert pulls[0]["key"] == f"pull-event-{event.pk}"
    assert pulls[0]["status"] == "succeeded"
    assert pulls[0]["title"] == "sync now by staff-user"
    assert pulls[0]["detail"].startswith("9 new votes")


def test_sync_now_naming_a_workflow_says_the_step_pulls_every_active_one(
    staff_client, stand_in, django_capture_on_commit_callbacks
):
    WorkflowFactory(zooniverse_id=777, project_id=stand_in.project_id, version=None)
    with django_capture_on_commit_callbacks(execute=False):
        response = staff_client.post(
            action("sync"), {"workflow": str(stand_in.workflow_id)}, follow=True
        )
    html = response.content.decode()
    ids = sorted([stand_in.workflow_id, 777])
    assert (
        f"Pull of workflow {stand_in.workflow_id} (the pull step pulls every active workflow: "
        f"{ids[0]}, {ids[1]}) queued" in html
    )
    step = LoopStep.objects.get(name=StepName.PULL)
    assert step.request_reason == f"sync now by staff-user (workflow {stand_in.workflow_id})"
    assert step.queued and step.request_seq > step.served_seq


def test_a_second_press_while_a_pull_is_queued_joins_it_and_the_list_shows_it_queued(
    staff_client, stand_in, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as first:
        staff_client.post(action("sync"), {})
    with django_capture_on_commit_callbacks(execute=False) as second:
        response = staff_client.post(action("sync"), {}, follow=True)
    assert len(first) == 1 and second == []  # one message for both presses
    assert "A pull was already on its way; it serves this request too" in (
        response.content.decode()
    )
    pending = sections(staff_client.get(RUNS))["sync"][0]
    assert (pending["key"], pending["status"]) == ("pull-request", "queued")
    assert pending["title"] == "sync now by staff-user"


@pytest.mark.parametrize(
    ("workflow", "error"),
    [
        ("4242", "workflow 4242 is not configured: run configure_workflow"),
        ("31", "workflow 31 is not active: the loop pulls active workflows only"),
        ("many", "Select a valid choice"),
    ],
)
def test_sync_now_refuses_a_workflow_it_cannot_pull_naming_the_field(
    staff_client, stand_in, workflow, error
):
    WorkflowFactory(zooniverse_id=31, active=False, version=None)
    response = staff_client.post(action("sync"), {"workflow": workflow})
    assert response.status_code == 400
    form = response.context["forms"]["sync"]
    assert list(form.errors) == ["workflow"] and error in form.errors["workflow"][0]
    assert error in response.content.decode()
    assert not LoopStep.objects.exists()


def test_sync_now_with_no_active_workflow_says_so(staff_client):
    response = staff_client.post(action("sync"), {})
    assert response.status_code == 400
    assert "no workflow is active" in response.context["forms"]["sync"].errors["workflow"][0]
    assert not LoopStep.objects.exists()


# --- request the next round -----------------------------------------------------------------------


def test_requesting_a_round_creates_a_request_its_task_serves_and_the_list_shows_it(
    staff_client, django_capture_on_commit_callbacks
):
    write_mosaic_items(30, curated=0)
    with django_capture_on_commit_callbacks(execute=True) as sent:
        response = staff_client.post(
            action("round"), {"size": "4", "strategy": "random", "push": ""}, follow=True
        )
    request = RoundRequest.objects.get()
    assert len(sent) == 1  # the selection task, after commit
    assert (
        f"Round request {request.pk} queued: 4 items by random, not pushed"
        in response.content.decode()
    )
    assert request.requested_by.username == "staff-user"
    assert request.params["size"] == 4 and request.params["strategy"] == "random"
    assert request.params["push"] is False
    assert request.status == "succeeded" and request.round.picks.count() == 4

    row = sections(staff_client.get(RUNS))["rounds"][0]
    assert row["key"] == f"round-request-{request.pk}" and row["status"] == "succeeded"
    assert row["title"] == f"round request {request.pk}: 4 items, random"
    assert row["by"] == "staff-user" and row["detail"].startswith("round-1")
    assert row["url"] == reverse("admin:training_roundrequest_change", args=[request.pk])


@pytest.mark.parametrize(
    ("data", "field", "error"),
    [
        ({}, "size", "This field is required"),
        ({"size": "0"}, "size", "greater than or equal to 1"),
        ({"size": "10001"}, "size", "less than or equal to 10000"),
        ({"size": "many"}, "size", "Enter a whole number"),
        ({"size": "5", "strategy": "clairvoyant"}, "strategy", "Select a valid choice"),
        ({"size": "5", "push": "on"}, "push", "there is no active workflow to push"),
    ],
)
def test_a_round_request_with_bad_input_is_refused_naming_the_field(
    staff_client, data, field, error
):
    response = staff_client.post(action("round"), data)
    assert response.status_code == 400
    form = response.context["forms"]["round"]
    assert list(form.errors) == [field] and error in form.errors[field][0]
    assert not RoundRequest.objects.exists()


def test_the_strategy_choices_are_the_selections_own(staff_client):
    from ml.acquisition import list_strategies

    form = staff_client.get(PAGE).context["forms"]["round"]
    offered = [value for value, _ in form.fields["strategy"].choices]
    assert offered == ["", *list_strategies()]


# --- push a round ---------------------------------------------------------------------------------


def test_pushing_a_round_chosen_without_a_push_runs_the_push_task_under_its_request(
    staff_client, stand_in, django_capture_on_commit_callbacks
):
    write_mosaic_items(12, curated=0)
    chosen = draft_round(size=5)
    offered = staff_client.get(PAGE).context["forms"]["push"].fields["round"].choices
    assert (str(chosen.pk), f"{chosen.name} (5 picks, typical_diverse)") in offered

    with django_capture_on_commit_callbacks(execute=True) as sent:
        response = staff_client.post(action("push"), {"round": str(chosen.pk)}, follow=True)
    request = RoundRequest.objects.get()
    assert len(sent) == 1
    assert f"Push of {chosen.name} queued (round request {request.pk})" in (
        response.content.decode()
    )
    chosen.refresh_from_db()
    assert chosen.status == Round.Status.PUSHED and len(stand_in.subjects()) == 5
    assert request.status == "succeeded" and "pushed: " in request.summary
    assert request.params["push"] is True
    assert request.params["push_requested_by"] == "staff-user"

    push = sections(staff_client.get(RUNS))["pushes"][0]
    assert push["key"] == f"push-request-{request.pk}" and push["status"] == "succeeded"
    assert push["title"] == f"push {chosen.name}" and push["by"] == "staff-user"
    # Pushed: it is offered no more.
    offered = staff_client.get(PAGE).context["forms"]["push"].fields["round"].choices
    assert offered == [("", "choose a round")]


def test_pushing_a_round_that_no_request_chose_records_a_request_for_the_push(
    staff_client, stand_in, django_capture_on_commit_callbacks
):
    from training.services.selection import round_select

    write_mosaic_items(12, curated=0)
    chosen = round_select(size=3, seed=2).round  # as select_round without --push
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(action("push"), {"round": str(chosen.pk)})
    request = RoundRequest.objects.get()
    assert request.round_id == chosen.pk and request.requested_by.username == "staff-user"
    assert request.status == "succeeded" and request.params["round"] == chosen.number
    assert len(stand_in.subjects()) == 3


def test_a_push_that_zooniverse_refuses_reads_failed_with_the_reason(
    staff_client, stand_in, django_capture_on_commit_callbacks, settings
):
    from annotate.zooniverse.client import FatalError
    from annotate.zooniverse.sandbox import FaultAction, FaultRule

    write_mosaic_items(12, curated=0)
    chosen = draft_round(size=3)
    settings.PANOPTES_MAX_ATTEMPTS = 1
    stand_in.faults.add(
        FaultRule(
            path=r"/subject_sets", method="POST", actions=[FaultAction("status", status=403)] * 10
        )
    )
    with pytest.raises(FatalError), django_capture_on_commit_callbacks(execute=True):
        # Eager tasks raise here; a worker records the same failure and logs it.
        staff_client.post(action("push"), {"round": str(chosen.pk)})
    push = sections(staff_client.get(RUNS))["pushes"][0]
    assert push["status"] == "failed"
    assert push["error"].startswith("push: ") and "403" in push["error"]
    chosen.refresh_from_db()
    assert chosen.status == Round.Status.DRAFT
    # Failed: it is offered again, and a second push is allowed.
    offered = staff_client.get(PAGE).context["forms"]["push"].fields["round"].choices
    assert str(chosen.pk) in [value for value, _ in offered]


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("unknown", "there is no round with id 999999"),
        ("pushed", "is pushed: it is on Zooniverse already"),
        ("busy", "is still running for"),
        ("no picks", "has no picks"),
        ("not a number", "Select a valid choice"),
    ],
)
def test_a_push_of_a_round_it_cannot_push_is_refused_naming_the_field(
    staff_client, stand_in, case, error
):
    write_mosaic_items(12, curated=0)
    chosen = draft_round(size=3)
    value = str(chosen.pk)
    if case == "unknown":
        value = "999999"
    elif case == "pushed":
        Round.objects.filter(pk=chosen.pk).update(status=Round.Status.PUSHED)
    elif case == "busy":
        RoundRequest.objects.filter(round=chosen).update(status="running")
    elif case == "no picks":
        empty = Round.objects.create(number=9, name="round-9", workflow=chosen.workflow)
        value = str(empty.pk)
    else:
        value = "three"
    before = list(RoundRequest.objects.values_list("pk", "status", "params"))
    response = staff_client.post(action("push"), {"round": value})
    assert response.status_code == 400
    form = response.context["forms"]["push"]
    assert list(form.errors) == ["round"] and error in form.errors["round"][0]
    assert list(RoundRequest.objects.values_list("pk", "status", "params")) == before


# --- the lists ------------------------------------------------------------------------------------


def test_the_lists_show_failures_with_their_reason_and_a_running_pull(staff_client):
    from annotate.services.releases import release_request

    event_record(
        step=StepName.PULL,
        status=LoopEvent.Status.FAILED,
        summary="failed",
        error="PanoptesAPIException: 503 Service Unavailable",
        trigger="sync now by stan",
    )
    now = timezone.now()
    LoopStep.objects.filter(name=StepName.PULL).update(
        request_seq=2,
        served_seq=1,
        running_since=now,
        lease_until=now + timedelta(minutes=5),
        request_reason="scheduled pull",
    )
    queued = release_request(user=None)  # its build waits for the commit this test never makes
    failed = release_request(user=None, note="nightly")
    DatasetRelease.objects.filter(pk=failed.pk).update(status="failed", error="disk full")

    runs = sections(staff_client.get(RUNS))
    running, failure = runs["sync"]
    assert (running["key"], running["status"], running["title"]) == (
        "pull-request",
        "running",
        "scheduled pull",
    )
    assert (failure["status"], failure["title"]) == ("failed", "sync now by stan")
    assert failure["error"] == "PanoptesAPIException: 503 Service Unavailable"
    assert [(r["title"], r["status"], r["error"]) for r in runs["releases"]] == [
        (f"release {failed.version}: nightly", "failed", "disk full"),
        (f"release {queued.version}", "queued", ""),
    ]
    html = staff_client.get(PAGE).content.decode()
    assert "PanoptesAPIException: 503 Service Unavailable" in html and "disk full" in html
    assert 'data-key="pull-request" data-status="running"' in html


def test_the_list_of_recent_runs_costs_the_same_queries_for_one_run_or_many(staff_client):
    from annotate.services.releases import release_request

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert staff_client.get(RUNS).status_code == 200
        return len(queries)

    event_record(step=StepName.PULL, status=LoopEvent.Status.DONE, summary="1 new vote")
    round_request_create(user=None, size=2)
    release_request(user=None)
    one = count()
    for _ in range(4):
        event_record(step=StepName.PULL, status=LoopEvent.Status.DONE, summary="1 new vote")
        round_request_create(user=None, size=2)
        release_request(user=None)
    assert count() == one
