"""Retrying HTTP sessions: urllib3's ``Retry`` mounted on a ``requests`` session.

:class:`BudgetedRetry` is urllib3's ``Retry`` with what crowdloop's callers add to it: a
full-jitter backoff drawn from an injectable ``random.Random``, ``Retry-After`` as a floor under
that backoff (and a reason to stop when it asks for more than ``retry_after_max_s``), an
injectable ``sleep``, and a wall budget no wait may reach past. When it stops, urllib3 hands back
the last response (with ``raise_on_status=False``) or raises for the last error, as when the
attempts run out. :func:`mount_retry` puts it on a session; requests made inside
:func:`sent_once` go out exactly once.
"""

from __future__ import annotations

import contextvars
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader, MaxRetryError, ResponseError
from urllib3.util.retry import Retry

if TYPE_CHECKING:
    from urllib3.connectionpool import ConnectionPool
    from urllib3.response import BaseHTTPResponse

_sent_once: contextvars.ContextVar[bool] = contextvars.ContextVar("http_sent_once", default=False)


@contextmanager
def sent_once() -> Iterator[None]:
    """Requests made inside go out once: for a create that must not be repeated blindly."""
    token = _sent_once.set(True)
    try:
        yield
    finally:
        _sent_once.reset(token)


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (delta-seconds or an HTTP date); ``None`` if unreadable."""
    if not value:
        return None
    try:
        return float(Retry.DEFAULT.parse_retry_after(value))
    except InvalidHeader:
        return None


def jittered_backoff(failures: int, *, base_s: float, max_s: float, rng: random.Random) -> float:
    """The wait after the n-th failure: uniform in [0.1, 1] × min(max_s, base_s × 2^(n-1))."""
    ceiling = min(max_s, base_s * 2 ** (failures - 1))
    return float(ceiling * (0.1 + 0.9 * rng.random()))


@dataclass(frozen=True)
class RetryEvent:
    """A retry about to wait, for the caller's log line and counters."""

    method: str
    #: The request target as urllib3 saw it: it may hold a query string, so log its path only.
    url: str
    #: ``HTTP 503`` or the name of the error's type.
    problem: str
    #: The attempt that just failed, from 1, and the attempts allowed in all.
    attempt: int
    attempts: int
    delay: float


@dataclass
class RetryPacing:
    """How long to wait between attempts, and when to stop waiting, beyond urllib3's counts."""

    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    #: Seconds left of the caller's wall budget: a wait that would reach past it stops the retries.
    time_left: Callable[[], float] = lambda: math.inf
    #: A longer ``Retry-After`` stops the retries; the caller can come back later.
    retry_after_max_s: float = 300.0
    on_retry: Callable[[RetryEvent], None] | None = None


class BudgetedRetry(Retry):
    """urllib3's ``Retry`` with a jittered backoff, ``Retry-After`` as a floor and a wall budget.

    ``backoff_factor`` is the first ceiling and ``backoff_max`` the largest; each wait is drawn
    in [0.1, 1] of its ceiling, and never shorter than a ``Retry-After`` the server sent.
    """

    #: Only the statuses in ``status_forcelist`` are retried; Retry-After is read on any of them.
    RETRY_AFTER_STATUS_CODES = frozenset()

    def __init__(
        self, *args: Any, pacing: RetryPacing | None = None, delay: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.pacing = pacing or RetryPacing()
        #: The wait chosen by the :meth:`increment` that made this object.
        self.delay = delay

    def new(self, **kw: Any) -> Self:
        kw.setdefault("pacing", self.pacing)
        return super().new(**kw)

    def get_backoff_time(self) -> float:
        """The :func:`jittered_backoff` after as many failures as the history holds."""
        failures = len(self.history)
        if failures == 0:
            return 0.0
        return jittered_backoff(
            failures, base_s=self.backoff_factor, max_s=self.backoff_max, rng=self.pacing.rng
        )

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        """The next attempt's ``Retry`` with its wait chosen, or ``MaxRetryError`` to stop."""

        def stop() -> MaxRetryError:
            reason = error or ResponseError(f"HTTP {response.status if response else '?'}")
            return MaxRetryError(_pool, url or "", reason)  # type: ignore[arg-type]  # _pool may be None, as in urllib3's own increment

        if _sent_once.get():
            raise stop() from error
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        floor = None
        if response is not None and self.respect_retry_after_header:
            floor = retry_after_seconds(response.headers.get("Retry-After"))
        if floor is not None and floor > self.pacing.retry_after_max_s:
            raise stop() from error
        delay = max(retry.get_backoff_time(), floor or 0.0)
        if delay >= self.pacing.time_left():
            raise stop() from error
        retry.delay = delay
        if self.pacing.on_retry is not None:
            attempt = len(retry.history)
            left = self.total if isinstance(self.total, int) else 0
            problem = f"HTTP {response.status}" if response is not None else type(error).__name__
            self.pacing.on_retry(
                RetryEvent(
                    method=method or "",
                    url=url or "",
                    problem=problem,
                    attempt=attempt,
                    attempts=attempt + left,
                    delay=delay,
                )
            )
        return retry

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        """Wait the delay :meth:`increment` chose, on the injected ``sleep``."""
        if self.delay > 0:
            self.pacing.sleep(self.delay)


def mount_retry(session: requests.Session, retry: Retry) -> requests.Session:
    """Mount ``retry`` on the session for ``http://`` and ``https://``; the session."""
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def failure_name(exc: BaseException) -> str:
    """What went wrong, by type: the last error urllib3 retried when attempts ran out."""
    cause = exc.args[0] if exc.args else None
    if isinstance(cause, MaxRetryError) and cause.reason is not None:
        return type(cause.reason).__name__
    return type(exc).__name__


__all__ = [
    "BudgetedRetry",
    "RetryEvent",
    "RetryPacing",
    "failure_name",
    "jittered_backoff",
    "mount_retry",
    "retry_after_seconds",
    "sent_once",
]
