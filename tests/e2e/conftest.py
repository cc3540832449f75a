"""Personas the browser tests log in as."""

from __future__ import annotations

import pytest

from tests.browser import PASSWORD
from tests.loop.stand_in import stand_in  # noqa: F401 - a fixture


@pytest.fixture
def staff(db, django_user_model):
    """A staff member (the staff role's group) with a password, to log in through the form."""
    from django.contrib.auth.models import Group

    from annotate.roles import STAFF, roles_setup

    roles_setup()
    user = django_user_model.objects.create_user("stan", password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name=STAFF))
    return user


@pytest.fixture
def served_media(monkeypatch):
    """Serve this test's MEDIA_ROOT: config.urls bound the media folder when it was imported."""
    from pathlib import Path

    from django.conf import settings

    from config import urls

    for pattern in urls.urlpatterns:
        if "document_root" in getattr(pattern, "default_args", {}):
            monkeypatch.setitem(pattern.default_args, "document_root", str(settings.MEDIA_ROOT))
            return Path(settings.MEDIA_ROOT)
    pytest.skip("media is not served by Django in these settings")
