"""Token authentication that makes guessing tokens pointless (reliability S15, S18).

DRF authenticates before it throttles, so a wrong token would be answered 401 at full speed however
many times it is tried. Here failed tokens are counted twice in the cache:

* per client address (``auth_failures`` rate). Past it, every token request from that address is
  answered 429 until the window passes, right or wrong token alike, without the database being
  asked. Letting a valid token through from a locked address would hand a guesser an oracle (429
  for a miss, 200 for a hit), so it is not. The price: clients sharing that address (one NAT) wait
  with it. Nobody else does: the address is ``REMOTE_ADDR``, which the client cannot choose
  (``config.client_address`` believes ``X-Forwarded-For`` only from ``TRUSTED_PROXIES``), so an
  attacker can neither dodge the counter with a forged header nor lock out another address.
* per token prefix, the first ``PREFIX_LENGTH`` characters presented (``auth_prefix_failures``
  rate). A guesser spread over many addresses, each under its own limit, working on one token's
  known beginning (a key half-leaked in a screenshot, or guessed a character at a time from
  response timing) fails against one prefix again and again. Once that prefix is locked, an
  address that has already failed within the window gets 429 for it without the database being
  asked, so each address of such a spread guess gets one try per window instead of the address
  limit. An address that has not failed is still checked: the token's owner, elsewhere, keeps
  working whatever strangers do with the beginning of their key, so the lock can't be used to
  shut a user out.

Tokens never reach the logs: a lockout is logged with the client address, or for a prefix with a
keyed digest (HMAC under ``SECRET_KEY``) that can be matched across log lines but not reversed. The
cache keys hold the same digest, never token characters.
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
