"""Response headers every page gets."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.conf import settings
from django.http import HttpRequest, HttpResponse


def img_sources(image_hosts: Iterable[str]) -> str:
    """The policy's ``img-src``: our own pages and media, and ``https://`` each host of
    ``IMAGE_HOSTS`` (``*.example.org`` stays a wildcard), the hosts the screens show images from
    (annotate.services.item_images), so the two never disagree."""
    return " ".join(["img-src 'self'", *(f"https://{host}" for host in image_hosts)])


def content_security_policy(image_hosts: Iterable[str] = ()) -> str:
    """The default policy.

    Scripts only from our own static files: an injected <script> or onerror= attribute does not
    run even if escaping fails somewhere. Images from our own site (stored copies, plots) and the
    allowed image hosts only: an <img> pointing at an internal address loads nothing. Inline style
    attributes stay allowed because the Django admin and our thumbnails use them.
    """
    return "; ".join(
        [
            "default-src 'self'",
            img_sources(image_hosts),
            "script-src 'self'",
            "style-src 'self' 'unsafe-inline'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


#: The policy with no image host allowed (``IMAGE_HOSTS`` empty, the default).
DEFAULT_CONTENT_SECURITY_POLICY = content_security_policy()


class ContentSecurityPolicyMiddleware:
    """Add a Content-Security-Policy header unless the view set its own.

    ``settings.CONTENT_SECURITY_POLICY`` (from the environment) replaces the default policy
    when not empty; otherwise the default policy allows images from ``settings.IMAGE_HOSTS``.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        policy = settings.CONTENT_SECURITY_POLICY or content_security_policy(settings.IMAGE_HOSTS)
        response.headers.setdefault("Content-Security-Policy", policy)
        return response
