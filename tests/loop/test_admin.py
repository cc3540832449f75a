"""The loop's admin: steps and events to read, never to change, for every role that reads."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotate.roles import CURATOR, STAFF, VIEWER, roles_setup
from loop.models import LoopEvent, LoopStep, StepName
from loop.services.pipeline import event_record

pytestmark = pytest.mark.django_db

EVENTS = reverse("admin:loop_loopevent_changelist")
STEPS = reverse("admin:loop_loopstep_changelist")


def login_as(client, django_user_model, role: str, *, superuser: bool = False):  # type: ignore[no-untyped-def]
    roles_setup()
    user = django_user_model.objects.create_user(
        f"{role}-user", is_staff=True, is_superuser=superuser
    )
    user.groups.add(Group.objects.get(name=role))
    client.force_login(user)
    return client


def record(n: int = 1) -> LoopEvent:
    failed = None
    for k in range(n):
        event_record(
            step=StepName.PULL,
            status=LoopEvent.Status.DONE,
            summary=f"{k + 3} new votes",
            detail={"votes": k + 3},
        )
        failed = event_record(
            step=StepName.RETIRE,
            status=LoopEvent.Status.FAILED,
            summary="retirement failed",
            error="PanoptesAPIException: 503 Service Unavailable",
        )
    assert failed is not None
    return failed


def test_the_loop_lists_render_for_staff_with_a_failed_events_error_visible(
    client, django_user_model
):
    login_as(client, django_user_model, STAFF)
    record()
    events = client.get(EVENTS)
    assert events.status_code == 200
    html = events.content.decode()
    assert "PanoptesAPIException: 503 Service Unavailable" in html
    assert "3 new votes" in html
    assert "color: #c62828" in html  # the failed status and its error, in red
    # Filters by step and status, and the date hierarchy.
    assert "?step__exact=pull" in html and "?status__exact=failed" in html
    assert '<nav class="toplinks">' in html  # the date hierarchy on finished_at
    filtered = client.get(EVENTS, {"status__exact": "failed"}).content.decode()
    assert "503 Service Unavailable" in filtered and "3 new votes" not in filtered

    steps = client.get(STEPS)
    assert steps.status_code == 200
    html = steps.content.decode()
    assert "retire settled subjects" in html and "pull classifications" in html
    assert "retirement failed" in html


@pytest.mark.parametrize("superuser", [False, True])
def test_the_loop_admin_refuses_every_change_even_to_a_superuser(
    client, django_user_model, superuser
):
    login_as(client, django_user_model, STAFF, superuser=superuser)
    event = record()
    step = LoopStep.objects.get(name=StepName.RETIRE)

    adds = [reverse(f"admin:loop_{model}_add") for model in ("loopevent", "loopstep")]
    for changelist in (EVENTS, STEPS):
        html = client.get(changelist).content.decode()
        assert not any(add in html for add in adds)  # no "Add" button, nor in the sidebar
        assert "delete_selected" not in html
    for model in ("loopevent", "loopstep"):
        assert client.get(reverse(f"admin:loop_{model}_add")).status_code == 403
    for model, obj in (("loopevent", event), ("loopstep", step)):
        page = client.get(reverse(f"admin:loop_{model}_change", args=[obj.pk]))
        assert page.status_code == 200  # to read
        html = page.content.decode()
        assert 'name="_save"' not in html and "deletelink" not in html
        assert client.get(reverse(f"admin:loop_{model}_delete", args=[obj.pk])).status_code == 403
        assert (
            client.post(
                reverse(f"admin:loop_{model}_change", args=[obj.pk]), {"summary": "edited"}
            ).status_code
            == 403
        )
    event.refresh_from_db()
    assert event.summary == "retirement failed"
    assert LoopEvent.objects.count() == 2
    assert (
        "PanoptesAPIException"
        in client.get(reverse("admin:loop_loopevent_change", args=[event.pk])).content.decode()
    )


@pytest.mark.parametrize("role", [VIEWER, CURATOR])
def test_viewers_and_curators_read_the_loop_log_too(client, django_user_model, role):
    login_as(client, django_user_model, role)
    record()
    assert client.get(EVENTS).status_code == 200
    assert client.get(STEPS).status_code == 200
    index = client.get(reverse("admin:index")).content.decode()
    assert EVENTS in index and STEPS in index


def test_a_staff_member_in_no_group_sees_no_loop_admin(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("plain", is_staff=True))
    assert client.get(EVENTS).status_code == 403
    assert client.get(STEPS).status_code == 403


def test_the_event_list_reads_as_many_queries_for_three_events_as_for_sixty(
    client, django_user_model
):
    login_as(client, django_user_model, STAFF)
    counts = []
    for rounds in (1, 30):
        record(rounds)
        with CaptureQueriesContext(connection) as queries:
            assert client.get(EVENTS).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1], counts
