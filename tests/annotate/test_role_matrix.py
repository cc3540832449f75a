"""Reliability S1, S2, S3: every route and verb of the API answered as each role, as an account
with no role, and as nobody, against the promise the schema makes (``x-required-permission``,
the table the docs page shows).

The accounts are plain role members: no ``is_staff`` (that flag is the admin site's, the API
checks permissions only). For each operation the schema lists, a role it names must get past
the permission check (any answer but 401 and 403), every other client must get 403 (or 401
without credentials); nobody gets a 5xx. Verbs the schema does not list for a path (PUT, PATCH,
DELETE, and POST where there is none) are refused too: 405 to a reader, 403 to the rest.
"""

from __future__ import annotations

import pytest

from annotate.roles import PERM_READ, ROLES, roles_holding
from tests.clients import as_user

pytestmark = pytest.mark.django_db

VERBS = ("get", "post", "put", "patch", "delete")
NOBODY, ANONYMOUS = "nobody", "anonymous"
#: A detail path is asked about a row that does not exist: the permission is checked first.
MISSING_ID = "987654321"


@pytest.fixture(scope="module")
def operations(django_db_setup, django_db_blocker) -> dict[str, dict[str, dict]]:
    from annotate.api.catalogue import api_schema

    with django_db_blocker.unblock():
        paths = api_schema()["paths"]
    return {path: {v: item[v] for v in VERBS if v in item} for path, item in paths.items()}


def url_of(path: str) -> str:
    return path.replace("{id}", MISSING_ID).replace("{what}", "csv")


def call(client, verb: str, url: str):  # type: ignore[no-untyped-def]
    return getattr(client, verb)(url, {}, format="json")


def clients(people) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {
        **{role: as_user(people[role]) for role in ROLES},
        NOBODY: as_user(people[NOBODY]),
        ANONYMOUS: as_user(None),
    }


def test_every_operation_answers_each_role_as_the_schema_promises(
    operations, people, fresh_throttles
):
    wrong = []
    for who, client in clients(people).items():
        for path, verbs in operations.items():
            for verb, operation in verbs.items():
                allowed = who in operation["x-required-permission"]["roles"]
                status = call(client, verb, url_of(path)).status_code
                denied = (401, 403) if who == ANONYMOUS else (403,)
                if (
                    status >= 500
                    or (status in (401, 403)) == allowed
                    or (not allowed and status not in denied)
                ):
                    wrong.append(f"{who}: {verb.upper()} {path} -> {status}")
    assert not wrong, "\n".join(wrong)


def test_verbs_the_schema_does_not_list_are_refused_on_every_path(
    operations, people, fresh_throttles
):
    wrong = []
    for who, client in clients(people).items():
        for path, verbs in operations.items():
            # A verb a view does not offer needs reading: readers learn it is not there.
            readers = (
                verbs["get"]["x-required-permission"]["roles"]
                if "get" in verbs
                else roles_holding(PERM_READ)
            )
            for verb in VERBS:
                if verb in verbs:
                    continue
                status = call(client, verb, url_of(path)).status_code
                if who in readers:
                    expected: tuple[int, ...] = (405,)
                elif who == ANONYMOUS:
                    expected = (401, 403)
                else:
                    expected = (403,)
                if status not in expected:
                    wrong.append(f"{who}: {verb.upper()} {path} -> {status}, not {expected}")
    assert not wrong, "\n".join(wrong)


def test_a_viewer_without_the_admin_site_reads_training_runs_but_requests_none(people):
    from training.models import TrainingRun

    run = TrainingRun.objects.create(trigger="api", status="succeeded")
    viewer = as_user(people["viewer"])
    assert not people["viewer"].is_staff
    listed = viewer.get("/api/v1/training-runs/")
    assert listed.status_code == 200, listed.content
    assert [row["id"] for row in listed.json()["results"]] == [run.pk]
    assert viewer.get(f"/api/v1/training-runs/{run.pk}/").status_code == 200
    assert viewer.post("/api/v1/training-runs/", {}, format="json").status_code == 403
    assert TrainingRun.objects.count() == 1


def test_staff_request_training_through_the_api_without_the_admin_site(people, monkeypatch):
    from training.models import TrainingRun

    monkeypatch.setattr("training.tasks.training_run_task.apply_async", lambda *a, **k: None)
    response = as_user(people["staff"]).post("/api/v1/training-runs/", {}, format="json")
    assert response.status_code == 201, response.content
    assert TrainingRun.objects.count() == 1


@pytest.mark.parametrize("who", [NOBODY, ANONYMOUS])
def test_the_api_docs_page_is_for_readers_only(client, people, who):
    """The docs page is a Django view (a session login, not a token)."""
    if who != ANONYMOUS:
        client.force_login(people[who])
    assert client.get("/api/v1/docs/").status_code in (302, 403)
    client.force_login(people["viewer"])
    assert client.get("/api/v1/docs/").status_code == 200
