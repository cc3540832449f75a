"""API clients for tests."""

from __future__ import annotations


def as_user(user):  # type: ignore[no-untyped-def]
    """A DRF test client authenticated as ``user`` (anonymous for ``None``)."""
    from rest_framework.test import APIClient

    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client
