"""Token authentication that makes guessing tokens pointless (reliability S15).

DRF authenticates before it throttles, so a wrong token is answered 401 at full speed however many
times it is tried. Here failures are counted per client address in the cache; past the
``auth_failures`` rate every token request from that address is answered 429 until the window
passes, right or wrong token alike. Tokens themselves are never logged.
"""

from __future__ import annotations

from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle


class AuthFailureThrottle(SimpleRateThrottle):
    scope = "auth_failures"

    def get_cache_key(self, request: Request, view=None) -> str:  # type: ignore[override]
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    def blocked(self, request: Request) -> bool:
        if self.rate is None:
            return False
        self.key = self.get_cache_key(request)
        self.now = self.timer()
        self.history = [t for t in self.cache.get(self.key, []) if t > self.now - self.duration]
        return len(self.history) >= self.num_requests

    def record_failure(self) -> None:
        self.history.insert(0, self.now)
        self.cache.set(self.key, self.history, self.duration)


class ThrottledTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``, with failed attempts rate-limited per client address."""

    def authenticate(self, request: Request):  # type: ignore[no-untyped-def]
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        throttle = AuthFailureThrottle()
        if throttle.blocked(request):
            raise Throttled(wait=throttle.wait())
        try:
            return super().authenticate(request)
        except AuthenticationFailed:
            throttle.record_failure()
            raise
