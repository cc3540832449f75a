"""Token authentication that makes guessing tokens pointless (reliability S15, S18).

DRF authenticates before it throttles, so failed tokens are counted here, in the cache, twice:
per client address (``auth_failures`` rate: past it every token request from that address gets
429, right token or wrong, without the database being asked) and per token prefix, the first
``PREFIX_LENGTH`` characters (``auth_prefix_failures`` rate: past it an address that has already
failed gets 429 for that prefix, while one that has not, the token's owner, still gets in). The
address is ``REMOTE_ADDR``, which the client cannot choose (``config.client_address`` believes
``X-Forwarded-For`` only from ``TRUSTED_PROXIES``). Tokens never reach the logs or the cache
keys: a prefix appears only as a keyed digest (HMAC under ``SECRET_KEY``). Why each rule is as it
is: README.md, "Running it for real", on client addresses and lockouts.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from django.conf import settings
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)

#: How many characters of a presented key make up the prefix that failures are counted against.
PREFIX_LENGTH = 8


class _FailureCounter(SimpleRateThrottle):
    """Failures of one kind for one identity in the cache; blocked past the scope's rate."""

    key: str
    # Set by SimpleRateThrottle.__init__ from the scope's rate (parse_rate), which the stubs leave
    # out; None when the scope has no rate, and then never read here.
    num_requests: int
    duration: int

    def __init__(self, ident: str) -> None:
        super().__init__()
        self.key = self.cache_format % {"scope": self.scope, "ident": ident}
        self.now = self.timer()
        self.history: list[float] = []
        if self.rate is not None:
            self.history = [t for t in self.cache.get(self.key, []) if t > self.now - self.duration]

    def get_cache_key(self, request: Request, view=None) -> str:
        return self.key

    def blocked(self) -> bool:
        return self.rate is not None and len(self.history) >= self.num_requests

    def record_failure(self) -> bool:
        """Count one failure; True when it is the one that locks this identity."""
        if self.rate is None:
            return False
        was_blocked = self.blocked()
        self.history.insert(0, self.now)
        self.cache.set(self.key, self.history, self.duration)
        return self.blocked() and not was_blocked


class AuthFailureThrottle(_FailureCounter):
    """Failed tokens from one client address."""

    scope = "auth_failures"


class PrefixFailureThrottle(_FailureCounter):
    """Failed tokens, from any address, that begin with the same characters."""

    scope = "auth_prefix_failures"


def prefix_digest(key: bytes) -> str:
    """A keyed digest of the key's prefix: the same for one prefix, saying nothing of it."""
    secret = settings.SECRET_KEY.encode()
    return hmac.new(secret, key[:PREFIX_LENGTH], hashlib.sha256).hexdigest()[:32]


class ThrottledTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``, failures limited per client address and per key prefix."""

    def authenticate(self, request: Request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        address = request.META.get("REMOTE_ADDR", "")
        by_address = AuthFailureThrottle(address)
        if by_address.blocked():
            raise Throttled(wait=by_address.wait())
        digest = prefix_digest(header[1] if len(header) > 1 else b"")
        by_prefix = PrefixFailureThrottle(digest)
        if by_prefix.blocked() and by_address.history:
            raise Throttled(wait=by_prefix.wait())
        try:
            return super().authenticate(request)
        except AuthenticationFailed:
            if by_address.record_failure():
                logger.warning("Token guesses from %s are locked out for a while.", address)
            if by_prefix.record_failure():
                logger.warning(
                    "Token guesses at one key prefix (digest %s) are locked out for a while.",
                    digest[:12],
                )
            raise
