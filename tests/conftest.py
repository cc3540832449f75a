"""Shared fixtures: personas, an isolated media folder, and the reference-data location."""

from __future__ import annotations

from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parent.parent.parent / "shared" / "reference"


def reference_path(*parts: str) -> Path:
    """A file under ../shared/reference, or a clean skip when that folder is absent."""
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not available: {path}")
    return path


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
