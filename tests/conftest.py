"""Shared fixtures: personas, one user per role, fresh throttles, a headless browser and an
isolated media folder. Helpers tests import live in modules of their own (``tests.clients``,
``tests.reference``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workers import pg, redis_url, workers  # noqa: F401 - fixtures for every test


def pytest_configure(config) -> None:
    """Tasks run eagerly, in the test's own process: the one place they do (settings keep a
    real broker and worker for everything else)."""
    from config.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True


@pytest.fixture(autouse=True)
def _loop_off(request):
    """The pipeline does not react to what a test of one service does, unless the test asks
    for it with the ``loop_on`` fixture."""
    from loop import receivers

    if "loop_on" in request.fixturenames:
        yield
        return
    receivers.disconnect()
    yield
    receivers.connect()


@pytest.fixture
def loop_on():
    """The pipeline's receivers connected: pulls, reviews and promotions trigger its steps."""
    from loop import receivers

    receivers.connect()


@pytest.fixture(autouse=True)
def _isolated_media(settings, tmp_path_factory):
    """Every test writes images and artifacts under its own temporary folder."""
    root = tmp_path_factory.mktemp("var")
    settings.MEDIA_ROOT = root / "media"
    settings.ARTIFACT_ROOT = root / "artifacts"


@pytest.fixture
def concepts(db):
    """The Europeana pilot's vocabulary, loaded."""
    from annotate.models import Concept
    from annotate.services.vocabulary import vocabulary_load

    vocabulary_load()
    return {c.key: c for c in Concept.objects.all()}


#: The curator persona's permissions: the review screens' and nothing of the model side (the
#: curator *role* of ``annotate.roles`` also reads training runs and model versions).
CURATOR_PERMISSIONS = (
    "view_item",
    "change_item",
    "view_concept",
    "view_aggregatedlabel",
    "view_classification",
    "view_volunteer",
    "view_volunteerskill",
    "view_review",
    "add_review",
    "view_round",
    "view_subject",
    "view_importreport",
    "view_quarantinedrow",
    "view_priorlabel",
    "view_workflow",
)


@pytest.fixture
def curator(db, django_user_model):
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.get_or_create(name="curator")
    group.permissions.set(
        Permission.objects.filter(
            codename__in=CURATOR_PERMISSIONS, content_type__app_label="annotate"
        )
    )
    user = django_user_model.objects.create_user(
        "cora", password="a-long-test-password", is_staff=True
    )
    user.groups.add(group)
    return user


@pytest.fixture
def curator_client(client, curator):
    client.force_login(curator)
    return client


@pytest.fixture
def people(db, django_user_model):
    """One user per role, plus ``nobody``: an account in no group."""
    from django.contrib.auth.models import Group

    from annotate.roles import ROLES, roles_setup

    roles_setup()
    users = {}
    for role in ROLES:
        user = django_user_model.objects.create_user(role)  # no password: hashing is slow
        user.groups.add(Group.objects.get(name=role))
        users[role] = user
    users["nobody"] = django_user_model.objects.create_user("nobody")
    return users


@pytest.fixture
def fresh_throttles():
    """Throttle counters live in the cache: start and end the test with none."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium (``tests.browser``), closed after the test."""
    from tests.browser import chromium

    with chromium(tmp_path / "chromium-profile", window="1400,1100") as driver:
        yield driver


@pytest.fixture
def screenshots(tmp_path) -> Path:
    """Where a browser test saves its screenshots: ``CROWDLOOP_SCREENSHOTS`` to keep them."""
    import os

    folder = Path(os.environ.get("CROWDLOOP_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
