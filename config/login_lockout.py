"""The admin login's lockout (reliability S19): django-axes, keyed on username and address.

Every login over HTTP comes with its request (the admin's login form passes it to
``authenticate``), so axes can count it. ``authenticate()`` called without a request is code in
this process (a shell, the test client's ``login``), which no network client reaches; axes' own
backend refuses such a call with an error, this one lets the password check go on uncounted.
"""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from django.http import HttpRequest


class LoginLockoutBackend(AxesStandaloneBackend):
    """Refuse a locked-out username and address before the password is checked."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)
