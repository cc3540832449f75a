"""``GET /api/v1/``: every endpoint of the API with its absolute URL, and the docs and schema.

The list is read from the OpenAPI schema (``annotate.api.catalogue``), so the endpoints of the
training and loop apps are listed without annotate importing either of them.
"""

from __future__ import annotations

from django.urls import get_script_prefix
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from annotate.api.catalogue import api_endpoint_list, api_schema
from annotate.api.permissions import CanRead, PolicyMixin


class ApiRootApi(PolicyMixin, APIView):
    """Every endpoint of the API: its path, its absolute URL (a path with parameters keeps them
    as ``{name}``, a URL template) and its methods; and links to the docs page and the OpenAPI
    schema."""

    policy = {"get": CanRead}

    @extend_schema_serializer(component_name="ApiRoot")
    class OutputSerializer(serializers.Serializer):
        @extend_schema_serializer(component_name="ApiEndpoint")
        class EndpointSerializer(serializers.Serializer):
            path = serializers.CharField()
            url = serializers.CharField(help_text="Absolute; {name} marks a path parameter.")
            methods = serializers.ListField(child=serializers.CharField())

        docs = serializers.URLField(help_text="The docs page: every operation, with an example.")
        schema = serializers.URLField(help_text="The OpenAPI 3 schema.")
        endpoints = EndpointSerializer(many=True)

    @extend_schema(responses=OutputSerializer, operation_id="api_root")
    def get(self, request: Request) -> Response:
        endpoints = api_endpoint_list(
            schema=api_schema(),
            prefix=request.path_info,
            base_url=request.build_absolute_uri(get_script_prefix()),
        )
        body = {
            "docs": reverse("api:docs", request=request),
            "schema": reverse("api:schema", request=request),
            "endpoints": endpoints,
        }
        return Response(self.OutputSerializer(body).data)
