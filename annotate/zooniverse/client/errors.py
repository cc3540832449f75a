"""The errors the Zooniverse client raises, split by what a caller can do about them.

``TransientError`` (and its subclasses) is worth retrying later, e.g. by a Celery retry that
waits at least ``retry_after``; ``FatalError`` is not: repeating the request cannot help.
"""

from __future__ import annotations


class ZooniverseError(Exception):
    """Base of every error the Zooniverse client raises."""


class TransientError(ZooniverseError):
    """A failure worth retrying later: network error, 5xx or 429 after our own retries ran out.

    ``retry_after`` is the server's ``Retry-After`` in seconds when it sent one, so a Celery retry
    can wait at least that long.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BudgetExceeded(TransientError):
    """The client's wall budget ran out; the work left is for the next run."""


class FatalError(ZooniverseError):
    """A 4xx other than 429 (or an error body on a 2xx): repeating the request cannot help."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(FatalError):
    """404: the resource does not exist (or the account may not see it)."""


class ExportError(ZooniverseError):
    """An export that cannot be used; nothing of it is ingested."""


class ExportNotReady(ExportError, TransientError):
    """No export newer than the request became ready before our own deadline."""


class ExportStale(ExportError, TransientError):
    """Only an export older than the request is on offer (Panoptes-Front-End#1257)."""


class ExportIncomplete(ExportError, TransientError):
    """The download was cut before its end; the partial file was deleted."""


class ExportTooLarge(ExportError, FatalError):
    """The export is larger than the byte cap; the partial file was deleted."""
