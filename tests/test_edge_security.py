"""The client's address and the throttles keyed on it.

Reliability S18: a spoofed ``X-Forwarded-For`` is ignored unless the peer is a trusted proxy, so
the token, anonymous and admin login throttles still bite. Reliability S15: guessing tokens ends
in 429, per address and per token prefix, never blocks a valid token from another client, and
never writes a token to the logs. Reliability S19: admin login brute force is locked out by
username and address, and the same user elsewhere is not.
"""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth import authenticate
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, RequestFactory
from django.urls import path
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from annotate.api.authentication import AuthFailureThrottle, PrefixFailureThrottle
from config.client_address import ClientAddressMiddleware, client_address, trusted_networks

pytestmark = [pytest.mark.usefixtures("fresh_throttles")]

PASSWORD = "a-long-test-password"


class _Open(APIView):
    """An endpoint anyone may call, so only the anonymous throttle stands in the way."""

    permission_classes = [AllowAny]

    def get(self, request):  # type: ignore[no-untyped-def]
        return Response({"ok": True})


urlpatterns = [path("open/", _Open.as_view())]


@pytest.fixture
def tight_token_throttles(monkeypatch):
    monkeypatch.setattr(AuthFailureThrottle, "THROTTLE_RATES", {"auth_failures": "3/minute"})
    monkeypatch.setattr(
        PrefixFailureThrottle, "THROTTLE_RATES", {"auth_prefix_failures": "4/minute"}
    )
    monkeypatch.setattr(AnonRateThrottle, "THROTTLE_RATES", {"anon": "1000/minute"})


@pytest.fixture
def token(people) -> str:
    """A viewer's token, with a known beginning."""
    return Token.objects.create(user=people["viewer"], key="feedc0de" + "1" * 32).key


def _token_get(key: str, **extra: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client.get("/api/v1/concepts/", **extra).status_code


def _guess(n: int) -> str:
    return f"{n:040x}"


# --- the client address -------------------------------------------------------------------------


def _address(remote: str, forwarded: str | None, proxies: list[str]) -> str:
    meta = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    return client_address(meta, trusted_networks(tuple(proxies)))


def test_without_trusted_proxies_the_forwarded_for_header_is_ignored():
    assert _address("198.51.100.7", "203.0.113.9", []) == "198.51.100.7"


def test_a_peer_that_is_not_a_trusted_proxy_cannot_name_the_client():
    assert _address("198.51.100.7", "203.0.113.9", ["10.0.0.0/8"]) == "198.51.100.7"


def test_the_client_is_the_rightmost_address_that_is_not_a_trusted_proxy():
    # The client wrote "1.2.3.4" itself; the outer proxy appended the client's real address, the
    # inner proxy appended the outer one's.
    forwarded = "1.2.3.4, 203.0.113.9, 10.0.0.2"
    assert _address("10.0.0.1", forwarded, ["10.0.0.0/8"]) == "203.0.113.9"


def test_a_malformed_forwarded_entry_ends_the_walk_at_the_last_trusted_hop():
    assert _address("10.0.0.1", "203.0.113.9, not-an-ip", ["10.0.0.1"]) == "10.0.0.1"
    assert _address("10.0.0.1", "", ["10.0.0.1"]) == "10.0.0.1"


def test_forwarded_entries_with_ports_and_ipv6_are_understood():
    assert _address("10.0.0.1", "203.0.113.9:5123", ["10.0.0.1"]) == "203.0.113.9"
    assert _address("10.0.0.1", "[2001:db8::5]:443", ["10.0.0.1"]) == "2001:db8::5"
    assert _address("::1", "2001:db8::5", ["::1/128"]) == "2001:db8::5"


def test_a_bad_trusted_proxy_is_refused_naming_trusted_proxies():
    with pytest.raises(ImproperlyConfigured, match="TRUSTED_PROXIES"):
        trusted_networks(("10.0.0.0/33",))


def test_the_middleware_sets_remote_addr_to_the_client_address(settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    seen = {}

    def view(request):  # type: ignore[no-untyped-def]
        seen["addr"] = request.META["REMOTE_ADDR"]

    request = RequestFactory().get("/", HTTP_X_FORWARDED_FOR="203.0.113.9")
    ClientAddressMiddleware(view)(request)
    assert seen["addr"] == "203.0.113.9"
    settings.TRUSTED_PROXIES = []
    request = RequestFactory().get("/", HTTP_X_FORWARDED_FOR="203.0.113.9")
    ClientAddressMiddleware(view)(request)
    assert seen["addr"] == "127.0.0.1"


# --- S18: spoofed X-Forwarded-For ----------------------------------------------------------------


def test_a_spoofed_forwarded_for_header_is_ignored_by_the_token_throttle(db, tight_token_throttles):
    codes = [_token_get(_guess(n), HTTP_X_FORWARDED_FOR=f"203.0.113.{n}") for n in range(1, 8)]
    assert codes[:3] in ([401] * 3, [403] * 3)
    assert set(codes[3:]) == {429}


def test_a_spoofed_forwarded_for_header_is_ignored_by_the_anonymous_throttle(
    db, settings, monkeypatch
):
    settings.ROOT_URLCONF = __name__
    monkeypatch.setattr(AnonRateThrottle, "THROTTLE_RATES", {"anon": "3/minute"})
    client = APIClient()
    codes = [
        client.get("/open/", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").status_code for n in range(1, 7)
    ]
    assert codes == [200, 200, 200, 429, 429, 429]


def test_behind_a_trusted_proxy_two_clients_are_counted_apart(
    db, settings, token, tight_token_throttles
):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    alice, bob = {"HTTP_X_FORWARDED_FOR": "203.0.113.1"}, {"HTTP_X_FORWARDED_FOR": "203.0.113.2"}
    codes = [_token_get(_guess(n), **alice) for n in range(1, 5)]
    assert codes[-1] == 429
    assert _token_get(_guess(9), **bob) in (401, 403)
    assert _token_get(token, **bob) == 200


def test_behind_a_trusted_proxy_the_anonymous_throttle_counts_each_client(
    db, settings, monkeypatch
):
    settings.ROOT_URLCONF = __name__
    settings.TRUSTED_PROXIES = ["127.0.0.0/8"]
    monkeypatch.setattr(AnonRateThrottle, "THROTTLE_RATES", {"anon": "2/minute"})
    client = APIClient()
    for n in range(1, 5):
        assert client.get("/open/", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").status_code == 200
    assert client.get("/open/", HTTP_X_FORWARDED_FOR="203.0.113.1").status_code == 200
    assert client.get("/open/", HTTP_X_FORWARDED_FOR="203.0.113.1").status_code == 429


# --- S15: token guesses --------------------------------------------------------------------------


def test_a_locked_out_address_never_blocks_a_valid_token_from_another_address(
    db, token, tight_token_throttles
):
    attacker = {"REMOTE_ADDR": "198.51.100.66"}
    codes = [_token_get(_guess(n), **attacker) for n in range(1, 5)]
    assert codes[-1] == 429
    # The locked address is answered 429 whatever it presents: no oracle for a guesser.
    assert _token_get(token, **attacker) == 429
    assert _token_get(token, REMOTE_ADDR="198.51.100.7") == 200


def test_guesses_at_one_prefix_from_many_addresses_are_stopped(db, token, tight_token_throttles):
    prefix = token[:8]
    guesses = [prefix + f"{n:032x}" for n in range(1, 6)]
    # Four addresses fail once each at the same prefix: the prefix is now locked.
    for n, guess in enumerate(guesses[:4]):
        assert _token_get(guess, REMOTE_ADDR=f"198.51.100.{n + 1}") in (401, 403)
    # Each of them, still under its own limit, gets no further guess at that prefix...
    for n in range(4):
        assert _token_get(guesses[4], REMOTE_ADDR=f"198.51.100.{n + 1}") == 429
    # ...nor does a guess at another prefix from them count as a lock on that one.
    assert _token_get(_guess(7), REMOTE_ADDR="198.51.100.1") in (401, 403)
    # The owner of the token, from an address that never failed, is not locked out.
    assert _token_get(token, REMOTE_ADDR="192.0.2.10") == 200


def test_tokens_never_appear_in_the_logs(db, token, tight_token_throttles, caplog):
    guesses = [token[:8] + f"{n:032x}" for n in range(1, 8)]
    with caplog.at_level(logging.DEBUG):
        for n, guess in enumerate(guesses):
            _token_get(guess, REMOTE_ADDR=f"198.51.100.{n % 2 + 1}")
        _token_get(token, REMOTE_ADDR="198.51.100.1")
        _token_get(token, REMOTE_ADDR="192.0.2.10")
    text = caplog.text + " ".join(str(r.args) for r in caplog.records)
    assert "locked" in text  # the lockouts are logged...
    assert token[:8] not in text  # ...without any part of a token
    assert not any(guess[8:16] in text for guess in guesses)


# --- S19: admin login ---------------------------------------------------------------------------


@pytest.fixture
def staff(db, django_user_model):
    return django_user_model.objects.create_user("stan", password=PASSWORD, is_staff=True)


def _login(client: Client, username: str, password: str, **extra: str) -> int:
    data = {"username": username, "password": password, "next": "/admin/"}
    return client.post("/admin/login/", data, **extra).status_code


def test_wrong_admin_passwords_end_in_a_lockout_that_refuses_the_right_one(staff, settings):
    settings.AXES_FAILURE_LIMIT = 5
    client = Client()
    codes = [_login(client, "stan", f"wrong-{n}") for n in range(5)]
    assert codes[:4] == [200] * 4 and codes[4] == 429
    assert _login(client, "stan", PASSWORD) == 429
    assert client.get("/admin/").status_code == 302  # not logged in


def test_a_spoofed_forwarded_for_header_does_not_dodge_the_admin_lockout(staff, settings):
    settings.AXES_FAILURE_LIMIT = 3
    client = Client()
    codes = [
        _login(client, "stan", f"wrong-{n}", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")
        for n in range(6)
    ]
    assert codes[3:] == [429] * 3
    assert _login(client, "stan", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.200") == 429


def test_a_valid_user_elsewhere_is_not_locked_out(staff, settings, django_user_model):
    settings.AXES_FAILURE_LIMIT = 3
    django_user_model.objects.create_user("olga", password=PASSWORD, is_staff=True)
    attacker = {"REMOTE_ADDR": "198.51.100.66"}
    for n in range(3):
        _login(Client(), "stan", f"wrong-{n}", **attacker)
    assert _login(Client(), "stan", PASSWORD, **attacker) == 429
    # The same user from their own address, and another user from the attacker's, log in.
    assert _login(Client(), "stan", PASSWORD, REMOTE_ADDR="192.0.2.10") == 302
    assert _login(Client(), "olga", PASSWORD, **attacker) == 302


def test_the_lockout_ends_after_the_cool_off(staff, settings):
    from datetime import timedelta

    from axes.models import AccessAttempt

    settings.AXES_FAILURE_LIMIT = 2
    for n in range(2):
        _login(Client(), "stan", f"wrong-{n}")
    assert _login(Client(), "stan", PASSWORD) == 429
    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.get().attempt_time
        - (settings.AXES_COOLOFF_TIME + timedelta(seconds=1))
    )
    assert _login(Client(), "stan", PASSWORD) == 302


def test_code_that_authenticates_without_a_request_still_works(staff):
    assert authenticate(username="stan", password=PASSWORD) == staff
    assert authenticate(username="stan", password="wrong") is None
    assert Client().login(username="stan", password=PASSWORD)
