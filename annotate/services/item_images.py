"""Where an item's image is shown from: our stored copy under MEDIA_URL once it was fetched, else
its source URL when that is https on a host of ``settings.IMAGE_HOSTS``, else nothing. One rule for
every screen and the API, so a list and a page never disagree, and the Content-Security-Policy's
``img-src`` (config/middleware.py) is built from the same setting, so no screen shows an image the
policy would block.

A source on any other host (an internal address such as 169.254.169.254 or 127.0.0.1:6379, a
museum server not named, plain http) is never handed to a browser: the worker fetches it through
the SSRF guard (annotate.services.image_fetch) and the stored copy is shown instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from django.conf import settings

from annotate.models import Item

#: The schemes of a source URL the API may report as data (``image_url``); not what a screen shows.
WEB_SCHEMES = ("https://", "http://")


def media_url(relative: str) -> str:
    """The URL of a file under MEDIA_ROOT (Django prefixes a relative MEDIA_URL with the script
    name at run time, so this is ``/media/...`` behind any prefix)."""
    return f"{settings.MEDIA_URL}{relative}"


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """Whether ``host`` (lower case) is one of ``allowed``: an exact name, or ``*.example.org``
    for any subdomain of example.org (not example.org itself, as in a CSP source)."""
    for pattern in allowed:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def image_url_showable(url: str) -> bool:
    """Whether a browser may load ``url`` directly: https, on the default port, no user name or
    password, and a host of ``settings.IMAGE_HOSTS`` (empty: none is)."""
    if not settings.IMAGE_HOSTS or not url.lower().startswith("https://"):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.username is not None or parts.password is not None or port not in (None, 443):
        return False
    return host_allowed((parts.hostname or "").lower(), settings.IMAGE_HOSTS)


def item_image_src(item: Item, *, large: bool = False) -> str:
    """The URL to show an item's image with, "" when there is none to show yet.

    ``large``: the stored full-size copy first, for an item page; otherwise the stored thumbnail
    first, for a list. Either falls back to the other stored file, then to the source URL when
    :func:`image_url_showable` (a ``javascript:`` or ``data:`` "URL" from a manifest never is).
    """
    if large and item.image_file:
        return media_url(item.image_file)
    if item.thumbnail:
        return media_url(item.thumbnail)
    if item.image_file:
        return media_url(item.image_file)
    if image_url_showable(item.image_url):
        return item.image_url
    return ""
