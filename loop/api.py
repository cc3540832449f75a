"""``GET /api/v1/loop/``: the pipeline as JSON, what the dashboard shows (``loop.selectors``)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.api.permissions import CanRead, PolicyMixin
from loop.selectors import loop_status


class LoopStatusApi(PolicyMixin, APIView):
    """The loop's steps (pull, aggregate, retire, train, round): when each last ran, what it
    did, what waits and why, the last day's totals, recent failures and the latest events."""

    policy = {"get": CanRead}

    @extend_schema(responses=OpenApiTypes.OBJECT, operation_id="loop_status")
    def get(self, request):  # type: ignore[no-untyped-def]
        return Response(loop_status())
