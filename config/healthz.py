"""``/healthz`` answered before anything that looks at the request's host or scheme.

A container's health probe (docker-compose.yml, the Dockerfile's HEALTHCHECK, a Kubernetes probe)
reaches gunicorn directly, over plain HTTP, with the container's own address as the Host. Host
validation (ALLOWED_HOSTS) would answer 400 and the production HTTPS redirect 301, so the probe
would never see whether the process and its database work. This middleware comes first and
answers the probe with the health view itself; every other request goes on unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

HEALTHZ_PATH = "/healthz"


class HealthzMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info == HEALTHZ_PATH and request.method in ("GET", "HEAD"):
            from annotate.views import healthz

            return healthz(request)
        return self.get_response(request)
