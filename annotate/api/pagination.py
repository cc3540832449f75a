"""Pagination for the big lists: page numbers without ``COUNT(*)``.

DRF's ``PageNumberPagination`` counts the whole filtered table on every page so it can print
``count``: over 2,000,000 labels that was most of a ``/api/v1/labels/`` page (bench/README.md,
"Load: PostgreSQL at 100k items / 1M votes"). Here a page reads one row more than it shows, which
is enough to know whether there is a next page; the response has ``next``, ``previous`` and
``results``, no ``count``. Page numbers, orderings and filters work as before, so a client that
follows ``next`` sees no difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from django.db.models import QuerySet
from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

Row = TypeVar("Row")

#: Deeper pages are refused: the OFFSET alone would scan this many pages' rows.
MAX_PAGE = 1_000_000


class UncountedPagination(PageNumberPagination):
    """``?page=N``, ``next`` and ``previous`` links, and no total count."""

    template = None  # the browsable API's numbered links need the count

    def paginate_queryset(
        self, queryset: QuerySet[Any, Row] | Sequence[Row], request: Request, view: Any = None
    ) -> list[Row] | None:
        self.request = request
        page_size = self.get_page_size(request)
        if not page_size:
            return None
        raw = request.query_params.get(self.page_query_param) or "1"
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_PAGE):
            raise NotFound(self.invalid_page_message)
        self.number = int(raw)
        start = (self.number - 1) * page_size
        rows = list(queryset[start : start + page_size + 1])
        if self.number > 1 and not rows:
            raise NotFound(self.invalid_page_message)
        self.has_next = len(rows) > page_size
        return rows[:page_size]

    def get_paginated_response(self, data: Any) -> Response:
        return Response(
            {"next": self.get_next_link(), "previous": self.get_previous_link(), "results": data}
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        paged = super().get_paginated_response_schema(schema)
        paged["properties"].pop("count")
        paged["required"] = ["results"]
        return paged

    def _page_url(self) -> str:
        assert self.request is not None, "links are made after paginate_queryset sets the request"
        return self.request.build_absolute_uri()

    def get_next_link(self) -> str | None:
        if not self.has_next:
            return None
        url = self._page_url()
        return replace_query_param(url, self.page_query_param, self.number + 1)

    def get_previous_link(self) -> str | None:
        if self.number == 1:
            return None
        url = self._page_url()
        if self.number == 2:
            return remove_query_param(url, self.page_query_param)
        return replace_query_param(url, self.page_query_param, self.number - 1)
