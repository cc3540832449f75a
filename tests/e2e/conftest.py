"""Personas the browser tests log in as."""

from __future__ import annotations

import pytest

PASSWORD = "a-long-test-password"


@pytest.fixture
def staff(db, django_user_model):
    """A staff member (the staff role's group) with a password, to log in through the form."""
    from django.contrib.auth.models import Group

    from annotate.roles import STAFF, roles_setup

    roles_setup()
    user = django_user_model.objects.create_user("stan", password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name=STAFF))
    return user
