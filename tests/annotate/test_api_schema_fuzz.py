"""Reliability S1, S2, S3: Schemathesis against the API's own OpenAPI schema, as each role, as an
account with no role (a volunteer's, say) and as nobody.

Every operation of the schema is fuzzed (valid and invalid parameters and bodies) through Django's
WSGI application, in process, inside the test's transaction, with a token of one account or none.
The accounts are plain members of their role's group, without ``is_staff`` (the admin site's
flag: the API checks permissions only). Three properties hold for every answer:

- it is never a server error (5xx);
- a client the schema does not list for the operation (``x-required-permission``, the same table
  the docs page shows) gets 403, or 401 without credentials: never a 2xx;
- a role the schema lists is never refused (401 or 403), whatever the input.

Each case is sent as generated and, where its path names an object, again with the ids of real
rows, so that permissions are checked on objects that exist too. The run is deterministic
(derandomized, no example database) and small (``MAX_EXAMPLES`` per operation).
Work the API starts after commit (release builds, training runs) never starts: the transaction is
rolled back. Image URLs given to ``predict/`` resolve to a private address here, which the SSRF
guard refuses, and no connection is ever opened: the test needs no network.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.modes import GenerationMode

from annotate.roles import ROLES

pytestmark = pytest.mark.django_db

#: Examples per operation and generation mode (valid, invalid) for a role: 4 x 2 x 30 operations
#: x 4 roles, and ``REFUSED_EXAMPLES`` for the two clients every operation refuses (their answer
#: does not depend on the input): about 1,200 requests, under a minute on an idle 2-core machine.
#: ``tests/annotate/test_role_matrix.py`` asks every route and verb once as each client, too.
MAX_EXAMPLES = 4
REFUSED_EXAMPLES = 2
ANONYMOUS = "anonymous"
#: An account in no group: what a volunteer's or a newly made account holds.
NO_ROLE = "no-role"

#: We send the credentials ourselves; generated Authorization headers and session cookies would
#: only add failed logins to the throttle.
CONFIG = {"generation": {"with-security-parameters": False}}


@pytest.fixture(scope="module")
def api_schema():
    from drf_spectacular.generators import SchemaGenerator

    raw = SchemaGenerator().get_schema(request=None, public=True)
    return schemathesis.openapi.from_dict(raw, config=SchemathesisConfig.from_dict(CONFIG))


@pytest.fixture
def wsgi_app():
    """Django's WSGI application, called in process by the test's thread."""
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    # The real handler would close the test's connection (and its transaction) around each
    # request; Django's own test client turns these signals off the same way.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield WSGIHandler()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


class _NoNetwork(requests.Session):
    def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        raise requests.ConnectionError("the schema fuzz test opens no connection")


@pytest.fixture(autouse=True)
def _offline_and_unthrottled(monkeypatch):
    """Every host resolves to a private address (refused by the guard); a public IP literal
    fails to connect; and no rate limit turns a finding into a 429."""
    from django.core.cache import cache
    from rest_framework.views import APIView

    from annotate import security

    monkeypatch.setattr(security, "_resolve", lambda host, port: ["10.0.0.1"])
    monkeypatch.setattr(security, "_session", lambda target: _NoNetwork())
    monkeypatch.setattr(APIView, "get_throttles", lambda self: [])
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def real_ids(concepts, django_user_model, django_capture_on_commit_callbacks) -> dict[str, int]:
    """One row behind every detail path, and a written release: collection prefix -> id."""
    from annotate.models import AggregatedLabel, Item, Review, Round, Volunteer
    from annotate.services.releases import release_request
    from training.models import ModelVersion, TrainingRun

    painting = concepts["painting"]
    item = Item.objects.create(external_id="a", title="<b>x</b>", n_classifications=3)
    label = AggregatedLabel.objects.create(
        item=item, concept=painting, posterior=0.9, method="dawid_skene"
    )
    volunteer = Volunteer.objects.create(key="v1", user_name="vol")
    volunteer.skills.create(concept=painting, sensitivity=0.9, specificity=0.8, n_votes=4)
    round_ = Round.objects.create(number=1, name="round 1")
    author = django_user_model.objects.create_user("author")
    review = Review.objects.create(item=item, curator=author, action="accept", after=["painting"])
    version = ModelVersion.objects.create(
        status="candidate",
        backbone="small_cnn",
        concepts=["painting"],
        thresholds=[0.5],
        checkpoint_path="checkpoints/x.json",
        checkpoint_sha256="a" * 64,
    )
    run = TrainingRun.objects.create(trigger="api", status="succeeded")
    with django_capture_on_commit_callbacks(execute=True):
        release = release_request(user=author, formats=["csv"])
    release.refresh_from_db()
    assert release.status == "succeeded", release.error
    return {
        "concepts": painting.pk,
        "items": item.pk,
        "labels": label.pk,
        "volunteers": volunteer.pk,
        "rounds": round_.pk,
        "reviews": review.pk,
        "model-versions": version.pk,
        "training-runs": run.pk,
        "releases": release.pk,
    }


def credentials(role: str, django_user_model) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A token of one user in the role's group (no ``is_staff``), of one in no group, or nothing."""
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    from annotate.roles import roles_setup

    if role == ANONYMOUS:
        return {}
    roles_setup()
    user = django_user_model.objects.create_user(f"fuzz-{role}")
    if role != NO_ROLE:
        user.groups.add(Group.objects.get(name=role))
    return {"Authorization": f"Token {Token.objects.create(user=user).key}"}


def allowed_roles_of(operation) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    key = (operation.method.upper(), operation.path)
    required = operation.definition.raw.get("x-required-permission") or {}
    assert required.get("roles"), f"{key}: the schema names no roles for this operation"
    return tuple(required["roles"])


def check(case, response, role: str) -> None:  # type: ignore[no-untyped-def]
    where = f"{role}: {case.method} {case.formatted_path} -> {response.status_code}"
    assert response.status_code < 500, f"{where}\n{response.text[:2000]}"
    if role in allowed_roles_of(case.operation):
        assert response.status_code not in (401, 403), f"{where}: refused with the right"
    elif not unroutable(case, response):
        refused = (401, 403) if role == ANONYMOUS else (403,)
        assert response.status_code in refused, f"{where}: not refused without the right"


def unroutable(case, response) -> bool:  # type: ignore[no-untyped-def]
    """A 404 that no permission comes before: a path no route takes (an id of ``%3A``), or a
    ``?format=`` no renderer offers (DRF negotiates the format before it authenticates)."""
    from django.urls import Resolver404, resolve

    if response.status_code != 404:
        return False
    if "format" in (case.query or {}):
        return True
    try:
        resolve(case.formatted_path)
    except Resolver404:
        return True
    return False


def with_real_ids(case, real_ids: dict[str, int]) -> dict[str, Any] | None:  # type: ignore[no-untyped-def]
    if "id" not in (case.path_parameters or {}):
        return None
    real = real_ids.get(case.operation.path.split("/")[3])
    if real is None:
        return None
    # A release download names a format the real release has.
    what = {"what": "csv"} if "what" in case.path_parameters else {}
    return {**case.path_parameters, "id": real, **what}


def fuzz(operation, mode: GenerationMode, send, examples: int) -> None:  # type: ignore[no-untyped-def]
    """Send ``examples`` cases of one operation, the same ones on every run.

    Plain Hypothesis over the operation's strategy rather than schemathesis's pytest loader
    (``from_fixture``), which needs ``Node._nodeid``, gone in pytest 9.2.
    """

    @hypothesis.settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate, hypothesis.Phase.shrink],
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case):  # type: ignore[no-untyped-def]
        send(case)

    run()


@pytest.mark.parametrize("role", [*ROLES, NO_ROLE, ANONYMOUS])
def test_no_server_error_and_no_2xx_without_the_right(
    api_schema, wsgi_app, role, real_ids, django_user_model
):
    headers = credentials(role, django_user_model)
    examples = REFUSED_EXAMPLES if role in (ANONYMOUS, NO_ROLE) else MAX_EXAMPLES
    succeeded: set[str] = set()

    def send(case):  # type: ignore[no-untyped-def]
        response = case.call(headers=headers, app=wsgi_app)
        check(case, response, role)
        path_parameters = with_real_ids(case, real_ids)
        if path_parameters is not None:
            case.path_parameters = path_parameters
            response = case.call(headers=headers, app=wsgi_app)
            check(case, response, role)
        if 200 <= response.status_code < 300:
            succeeded.add(case.operation.label)

    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            raw = operation.definition.raw
            if mode is GenerationMode.NEGATIVE and not (
                raw.get("parameters") or raw.get("requestBody")
            ):
                continue  # nothing to make invalid: the API root takes no input at all
            fuzz(operation, mode, send, examples)

    # The run did reach the views: a role reads every collection and every object we made.
    readable = {
        op.label
        for op in operations
        if op.method.upper() == "GET"
        and (not op.path_parameters or op.path.split("/")[3] in real_ids)
        and role in allowed_roles_of(op)
    }
    assert readable <= succeeded, sorted(readable - succeeded)
    assert (role in (ANONYMOUS, NO_ROLE)) == (not succeeded)
