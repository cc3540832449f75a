"""Items from the Europeana Search API, harvested per concept as the pilot's harvester did.

For each concept: ``search.json?query=*&qf=skos_concept:"<URI>"&media=true&cursor=*`` paged with
``nextCursor``; each record with an ``edmIsShownBy`` image becomes an item whose prior label is the
concept (an earlier enrichment: noisy, a prior, never truth).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings

from annotate.http_retry import BudgetedRetry, RetryPacing, mount_retry
from annotate.models import Concept, ImportReport
from annotate.services.items import (
    ImportCounts,
    ItemRow,
    RowProblem,
    items_upsert,
    quarantine_rows,
    report_finish,
)

HARVEST_SOURCE = "europeana"
#: Answers retried: throttling and the server errors a busy API gives.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


class HarvestError(RuntimeError):
    """The API refused the harvest (bad key, unknown concept, repeated failures)."""


@dataclass(frozen=True)
class HarvestPage:
    records: list[dict[str, Any]]
    next_cursor: str | None
    total: int


def _first(value: Any) -> str:
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value or "").strip()


def europeana_retry(
    *, attempts: int = 5, sleep: Callable[[float], None] = time.sleep
) -> BudgetedRetry:
    """Retries of a search page: 429 and the usual 5xx, network errors, ``Retry-After`` honoured.

    Waits are jittered below 2, 4, 8, ... s (at most 60 s) and never shorter than the API's
    ``Retry-After``; one longer than a minute ends the retries. The last answer comes back.
    """
    return BudgetedRetry(
        total=max(0, attempts - 1),
        allowed_methods=frozenset({"GET"}),
        status_forcelist=TRANSIENT_STATUSES,
        backoff_factor=2.0,
        backoff_max=60.0,
        respect_retry_after_header=True,
        raise_on_status=False,
        pacing=RetryPacing(sleep=sleep, retry_after_max_s=60.0),
    )


def europeana_page(
    *,
    session: requests.Session,
    url: str,
    api_key: str,
    concept_uri: str,
    cursor: str,
    rows: int,
    timeout: float = 30.0,
) -> HarvestPage:
    """Fetch one page of the search; the session's mounted retries (:func:`europeana_retry`)."""
    params: dict[str, str | int] = {
        "wskey": api_key,
        "query": "*",
        "qf": f'skos_concept:"{concept_uri}"',
        "media": "true",
        "cursor": cursor,
        "rows": rows,
        "profile": "rich",
    }
    try:
        response = session.get(url, params=params, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise HarvestError(f"Europeana API unreachable: {exc}") from exc
    try:
        body = response.json()
    except ValueError as exc:
        raise HarvestError(
            f"Europeana API answered {response.status_code} with a non-JSON body"
        ) from exc
    if response.status_code >= 400 or body.get("success") is False:
        raise HarvestError(
            f"Europeana API answered {response.status_code}: "
            f"{body.get('error') or body.get('message') or 'no reason given'}"
        )
    return HarvestPage(
        records=list(body.get("items") or []),
        next_cursor=body.get("nextCursor") or None,
        total=int(body.get("totalResults") or 0),
    )


def europeana_records(
    *,
    concept: Concept,
    limit: int,
    api_key: str,
    url: str,
    session: requests.Session | None = None,
    page_size: int = 100,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[dict[str, Any]]:
    """Yield up to ``limit`` records tagged with the concept, following ``nextCursor``.

    The session (a new one when none is given) gets :func:`europeana_retry` mounted.
    """
    session = mount_retry(session or requests.Session(), europeana_retry(sleep=sleep))
    cursor: str | None = "*"
    seen = 0
    while cursor and seen < limit:
        page = europeana_page(
            session=session,
            url=url,
            api_key=api_key,
            concept_uri=concept.uri,
            cursor=cursor,
            rows=min(page_size, limit - seen),
        )
        if not page.records:
            return
        for record in page.records[: limit - seen]:
            seen += 1
            yield record
        cursor = page.next_cursor


def record_to_row(
    record: dict[str, Any], *, concept: Concept, position: int
) -> ItemRow | RowProblem:
    """Turn a search record into an item row, or say why it cannot be one."""
    external_id = _first(record.get("id"))
    if not external_id:
        return RowProblem(position, "record has no 'id'", field="id")
    image = _first(record.get("edmIsShownBy"))
    if not image.startswith(("http://", "https://")):
        return RowProblem(
            position,
            "record has no http(s) edmIsShownBy image",
            field="edmIsShownBy",
            record_id=external_id,
        )
    return ItemRow(
        line=position,
        external_id=external_id,
        image_url=image[:2000],
        title=_first(record.get("title"))[:1000],
        provider=_first(record.get("dataProvider") or record.get("provider"))[:500],
        rights=_first(record.get("rights"))[:500],
        prior_labels=[concept.key],
        metadata={
            "europeana_id": external_id,
            "item_uri": f"http://data.europeana.eu/item{external_id}",
            "type": _first(record.get("type")),
            "preview": _first(record.get("edmPreview")),
        },
        source_label=HARVEST_SOURCE,
    )


def europeana_harvest(
    *,
    concept_keys: list[str],
    limit: int,
    api_key: str | None = None,
    url: str | None = None,
    session: requests.Session | None = None,
    batch_size: int = 200,
    progress: Callable[[int], object] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[ImportReport, ImportCounts]:
    """Harvest up to ``limit`` items per concept into the item table; re-harvesting is a no-op.

    Raises:
        HarvestError: no API key, an unknown concept, or the API refused.
    """
    api_key = api_key if api_key is not None else settings.EUROPEANA_API_KEY
    url = url or settings.EUROPEANA_API_URL
    if not api_key:
        raise HarvestError("EUROPEANA_API_KEY is not set: get a key at pro.europeana.eu")
    concepts = {c.key: c for c in Concept.objects.all()}
    unknown = [k for k in concept_keys if k not in concepts]
    if unknown:
        raise HarvestError(f"unknown concept(s): {', '.join(unknown)}")
    missing_uri = [k for k in concept_keys if not concepts[k].uri]
    if missing_uri:
        raise HarvestError(f"concept(s) without a URI to search by: {', '.join(missing_uri)}")

    report = ImportReport.objects.create(
        kind=ImportReport.Kind.HARVEST, source=f"europeana: {', '.join(concept_keys)}"
    )
    counts = ImportCounts()
    try:
        for key in concept_keys:
            concept = concepts[key]
            batch: list[ItemRow] = []
            problems: list[RowProblem] = []
            records = europeana_records(
                concept=concept,
                limit=limit,
                api_key=api_key,
                url=url,
                session=session,
                sleep=sleep,
            )
            for position, record in enumerate(records, start=1):
                counts.total += 1
                if progress:
                    progress(1)
                row = record_to_row(record, concept=concept, position=position)
                if isinstance(row, RowProblem):
                    problems.append(row)
                else:
                    batch.append(row)
                if len(batch) >= batch_size:
                    _write(batch, problems, concepts=concepts, counts=counts, report=report)
                    batch, problems = [], []
            _write(batch, problems, concepts=concepts, counts=counts, report=report)
    except Exception as exc:
        report_finish(report, counts, status=ImportReport.Status.FAILED, message=str(exc))
        raise
    report_finish(report, counts, status=ImportReport.Status.SUCCEEDED, message=counts.summary())
    return report, counts


def _write(
    batch: list[ItemRow],
    problems: list[RowProblem],
    *,
    concepts: dict[str, Concept],
    counts: ImportCounts,
    report: ImportReport,
) -> None:
    if batch:
        problems += items_upsert(
            batch,
            concepts=concepts,
            counts=counts,
            prior_source=HARVEST_SOURCE,
            replace_priors=False,
            report=report,
        )
    quarantine_rows(report, problems, counts)
