"""Our wrapper over panoptes-client: what the library lacks, added at its HTTP seam.

panoptes-client 1.7.1 sends requests with no timeout, retries only some 5xx, never 429 or a
paginator's next page, and re-sends a ``Subject.save()`` POST on *any* error (``zooniverse.md``
§2.2). This package fixes that in one place; import its public names from here: ``errors``
(``TransientError``: retry later; ``FatalError``: do not), ``payloads`` (the Panoptes JSON
shapes), ``transport`` (timeouts, retries and the wall budget on every request), ``resources``
(:class:`ZooniverseClient`, :func:`connect`). Tokens never reach a log: log lines name the method
and the URL path only, and ``panoptes_client``'s DEBUG logging (which prints bodies) stays off.
"""

from annotate.zooniverse.client.errors import (
    BudgetExceeded,
    ExportError,
    ExportIncomplete,
    ExportNotReady,
    ExportStale,
    ExportTooLarge,
    FatalError,
    NotFoundError,
    TransientError,
    ZooniverseError,
)
from annotate.zooniverse.client.payloads import ClassificationPayload, SubjectPayload
from annotate.zooniverse.client.resources import (
    ClassificationPage,
    ZooniverseClient,
    connect,
    is_configured,
)
from annotate.zooniverse.client.transport import RetryPolicy, policy_from_settings

__all__ = [
    "BudgetExceeded",
    "ClassificationPage",
    "ClassificationPayload",
    "ExportError",
    "ExportIncomplete",
    "ExportNotReady",
    "ExportStale",
    "ExportTooLarge",
    "FatalError",
    "NotFoundError",
    "RetryPolicy",
    "SubjectPayload",
    "TransientError",
    "ZooniverseClient",
    "ZooniverseError",
    "connect",
    "is_configured",
    "policy_from_settings",
]
