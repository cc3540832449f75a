"""The HTTP seam under panoptes-client: timeouts, retries and a wall budget on every request.

:class:`PanoptesTransport` mounts urllib3's ``Retry`` (:class:`annotate.http_retry.BudgetedRetry`)
on the library's session and wraps its ``request``: every request (log-in, token, API calls, each
page, uploads, export downloads) gets connect/read timeouts; 5xx, 429 (honouring ``Retry-After``)
and connection/read errors are retried with jittered backoff up to ``PANOPTES_MAX_ATTEMPTS`` while
the wall budget lasts, then raise ``TransientError``; any other 4xx raises ``FatalError`` at once.
``get``/``post``/``pages`` are the JSON calls the resource methods build on.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from panoptes_client.panoptes import Panoptes, PanoptesAPIException

from annotate.http_retry import (
    BudgetedRetry,
    RetryEvent,
    RetryPacing,
    failure_name,
    jittered_backoff,
    mount_retry,
    retry_after_seconds,
    sent_once,
)
from annotate.zooniverse.client.errors import (
    BudgetExceeded,
    FatalError,
    NotFoundError,
    TransientError,
)

logger = logging.getLogger(__name__)

#: Panoptes' largest page for most resources (``zooniverse.md`` §2.1).
PAGE_SIZE = 100


# -- retry policy ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Timeouts and retries for every request; the defaults come from settings in ``connect``.

    ``budget_s`` bounds the whole life of one client (one Celery task): no retry sleep is started
    that would end past it, so a task gives up well before Redis would redeliver its message.
    """

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_attempts: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    budget_s: float = 1800.0
    #: The longest ``Retry-After`` we wait for inside a call; longer ones become a TransientError.
    retry_after_max_s: float = 300.0
    #: How far our clock may be ahead of Panoptes' when judging whether an export is fresh.
    clock_skew_s: float = 60.0


NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,  # includes ConnectTimeout
    requests.Timeout,  # ReadTimeout
    requests.exceptions.ChunkedEncodingError,
)
#: Answers retried while attempts and the budget last: throttling and every server error.
RETRIED_STATUSES = frozenset({429, *range(500, 600)})


def _error_message(response: requests.Response) -> str:
    """The ``errors``/``error`` text of a Panoptes error body, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        if isinstance(body.get("errors"), list):
            return ", ".join(str(e.get("message", e)) for e in body["errors"] if e is not None)
        if "error" in body:
            return str(body["error"])
    return str(body)[:200]


# -- the transport -----------------------------------------------------------------------------


@dataclass
class PanoptesTransport:
    """A Panoptes connection whose session requests all pass through :meth:`_send`.

    ``sleep``, ``clock``, ``now`` and ``rng`` are injectable so tests run without waiting;
    ``clock`` must advance with ``sleep`` for the budget to count the waits (a fake clock whose
    ``sleep`` adds to it does).

    The wall budget runs from the transport's creation, and afresh from the start of each
    outermost :meth:`operation` (each sync service call is one), so a long-lived process such as
    the demo can keep one client while every task-sized unit of work stays inside its budget. One
    transport serves one thread at a time.
    """

    panoptes: Panoptes
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    rng: random.Random = field(default_factory=random.Random)
    started_at: float = field(init=False)
    #: Counters for the summary line and the tests.
    retries: int = field(default=0, init=False)
    _depth: int = field(default=0, init=False, repr=False)
    #: Attempts made by the request in flight, for its error message.
    _attempts: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.started_at = self.clock()
        session = self.panoptes.session
        mount_retry(session, self._retry())
        original = session.request
        if getattr(original, "_crowdloop_wrapped", False):  # never wrap twice
            original = original._crowdloop_original

        def request(method: str, url: str, **kwargs: Any) -> requests.Response:
            return self._send(original, method, url, **kwargs)

        # Marks on the wrapper function, read back above when a client wraps the same session.
        request._crowdloop_wrapped = True  # type: ignore[attr-defined]  # a function attribute
        request._crowdloop_original = original  # type: ignore[attr-defined]  # (same)
        session.request = request

    # -- budget ----------------------------------------------------------------------------

    @contextmanager
    def operation(self) -> Iterator[None]:
        """A unit of work with its own wall budget; nested operations share the outer one."""
        if self._depth == 0:
            self.started_at = self.clock()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    def time_left(self) -> float:
        """Seconds left of the client's wall budget."""
        return self.policy.budget_s - (self.clock() - self.started_at)

    def _wait(self, seconds: float, *, why: str) -> None:
        if seconds > self.time_left():
            raise BudgetExceeded(f"{why}: waiting {seconds:.1f} s would pass the budget")
        self.sleep(seconds)

    def _backoff(self, attempt: int) -> float:
        """The policy's jittered backoff after ``attempt`` failures, as the session retries use."""
        return jittered_backoff(
            attempt,
            base_s=self.policy.backoff_base_s,
            max_s=self.policy.backoff_max_s,
            rng=self.rng,
        )

    # -- the HTTP seam ---------------------------------------------------------------------

    def _retry(self) -> BudgetedRetry:
        """The session's retries: urllib3's ``Retry`` sized by the policy, inside the budget."""
        return BudgetedRetry(
            total=max(0, self.policy.max_attempts - 1),
            allowed_methods=None,  # every verb: creates that must go out once use ``sent_once``
            status_forcelist=RETRIED_STATUSES,
            backoff_factor=self.policy.backoff_base_s,
            backoff_max=self.policy.backoff_max_s,
            respect_retry_after_header=True,
            raise_on_status=False,  # the last answer comes back, and ``_send`` says what it was
            pacing=RetryPacing(
                sleep=self.sleep,
                rng=self.rng,
                time_left=self.time_left,
                retry_after_max_s=self.policy.retry_after_max_s,
                on_retry=self._retrying,
            ),
        )

    def _retrying(self, event: RetryEvent) -> None:
        self.retries += 1
        self._attempts = event.attempt + 1
        logger.warning(
            "Zooniverse %s %s: %s (attempt %d of %d); retrying in %.1f s",
            event.method,
            urlsplit(event.url).path,  # never the query: it may hold credentials
            event.problem,
            event.attempt,
            event.attempts,
            event.delay,
        )

    def _send(
        self,
        original: Callable[..., requests.Response],
        method: str,
        url: str,
        **kwargs: Any,
    ) -> requests.Response:
        """Every request of the session passes here: timeout, budget, the answer classified.

        The mounted :class:`BudgetedRetry` has retried what could be; what is left is fatal
        (a 4xx other than 429) or transient (5xx, 429 or a network error).
        """
        method = method.upper()
        path = urlsplit(url).path  # never the query or body: they may hold credentials
        left = self.time_left()
        if left <= 0:
            raise BudgetExceeded(f"{method} {path}: the client's budget is spent")
        # A read may not outlast the budget either; a hang then ends as a read timeout.
        read = max(0.1, min(self.policy.read_timeout_s, left))
        kwargs["timeout"] = (min(self.policy.connect_timeout_s, read), read)
        self._attempts = 1
        try:
            response = original(method, url, **kwargs)
        except NETWORK_ERRORS as exc:
            raise TransientError(
                f"{method} {path}: {failure_name(exc)} after {self._attempts} attempt(s)"
            ) from exc
        status = response.status_code
        if status < 400:
            return response
        if status != 429 and status < 500:
            message = f"{method} {path}: HTTP {status}: {_error_message(response)}"
            error = NotFoundError if status == 404 else FatalError
            raise error(message, status=status)
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        response.close()
        raise TransientError(
            f"{method} {path}: HTTP {status} after {self._attempts} attempt(s)",
            retry_after=retry_after,
        )

    # -- JSON helpers ----------------------------------------------------------------------

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET an API path (``/subjects``) or a ``next_href``; the JSON body, ``{}`` when empty."""
        try:
            body, _ = self.panoptes.get(path, params=dict(params or {}))
        except PanoptesAPIException as exc:  # an ``errors`` body on a 2xx
            raise FatalError(f"GET {path}: {exc}") from exc
        return body or {}

    def post(self, path: str, json: dict[str, Any], *, once: bool = False) -> dict[str, Any]:
        """POST JSON; ``once=True`` sends a non-idempotent create exactly once."""
        try:
            with sent_once() if once else nullcontext():
                body, _ = self.panoptes.post(path, params={}, json=json)
        except PanoptesAPIException as exc:
            raise FatalError(f"POST {path}: {exc}") from exc
        return body or {}

    def pages(
        self, path: str, slug: str, params: dict[str, Any] | None = None
    ) -> Iterator[list[Any]]:
        """A page-numbered listing: every page fetched (and retried) by us via ``next_href``.

        The rows are JSON as Panoptes sends it; the caller names their payload type."""
        query = {"page_size": PAGE_SIZE, **(params or {})}
        body = self.get(path, query)
        while True:
            rows = body.get(slug) or []
            if rows:
                yield rows
            next_href = ((body.get("meta") or {}).get(slug) or {}).get("next_href")
            if not rows or not next_href:
                return
            body = self.get(next_href)


# -- settings --------------------------------------------------------------------------------


def policy_from_settings() -> RetryPolicy:
    """Timeouts and the wall budget from settings, the budget kept under the visibility timeout."""
    from django.conf import settings

    from config.task_kinds import visibility_timeout

    visibility = visibility_timeout()
    budget = float(settings.PANOPTES_BUDGET)
    # Half the visibility timeout: a task that gives up leaves room for its own Celery retry.
    budget = min(budget, visibility / 2)
    return RetryPolicy(
        connect_timeout_s=float(settings.PANOPTES_CONNECT_TIMEOUT),
        read_timeout_s=float(settings.PANOPTES_TIMEOUT),
        max_attempts=int(settings.PANOPTES_MAX_ATTEMPTS),
        budget_s=budget,
        backoff_max_s=min(60.0, budget / 10),
    )
