"""Where an item's image is shown from: our stored copy under MEDIA_URL once it was fetched, else
its http(s) source. One rule for every screen and the API, so a list and a page never disagree."""

from __future__ import annotations

from django.conf import settings

from annotate.models import Item

WEB_SCHEMES = ("https://", "http://")


def media_url(relative: str) -> str:
    """The URL of a file under MEDIA_ROOT (Django prefixes a relative MEDIA_URL with the script
    name at run time, so this is ``/media/...`` behind any prefix)."""
    return f"{settings.MEDIA_URL}{relative}"


def item_image_src(item: Item, *, large: bool = False) -> str:
    """The URL to show an item's image with, "" when there is none to show.

    ``large``: the stored full-size copy first, for an item page; otherwise the stored thumbnail
    first, for a list. Either falls back to the other stored file, then to the source URL, which
    is handed on only when it is a web URL (a ``javascript:`` or ``data:`` "URL" from a manifest
    never is).
    """
    if large and item.image_file:
        return media_url(item.image_file)
    if item.thumbnail:
        return media_url(item.thumbnail)
    if item.image_url.startswith(WEB_SCHEMES):
        return item.image_url
    if item.image_file:
        return media_url(item.image_file)
    return ""
