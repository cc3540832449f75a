"""``GET /api/v1/loop/``: the pipeline as JSON, what the dashboard shows (``loop.selectors``)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.api.permissions import CanRead, PolicyMixin
from loop.selectors import loop_status


class LoopStatusApi(PolicyMixin, APIView):
    """The loop's steps (pull, aggregate, retire, train, round): when each last ran, what it
    did, what waits and why, the last day's totals, recent failures and the latest events."""

    policy = {"get": CanRead}

    class QuerySerializer(serializers.Serializer):
        events = serializers.IntegerField(min_value=0, max_value=200, default=20)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "events", OpenApiTypes.INT, description="How many recent events (0-200, 20).",
                required=False,
            )
        ],
        responses=OpenApiTypes.OBJECT,
        operation_id="loop_status",
    )
    def get(self, request):
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(loop_status(events=query.validated_data["events"]))
