"""Remote item images fetched after an import: through the SSRF guard, checked, stored.

Imports never download (``import_items`` and ``import_subjects`` leave remote images
``pending``); a worker calls :func:`item_images_fetch` a slice at a time. Each failure becomes
the item's ``image_state`` and ``image_error``, so a failed item is not tried again until its
URL changes (the import sets it back to ``pending``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings

from annotate.models import Item
from annotate.security import FetchError, fetch_image
from annotate.services.media import image_store
from ml import images

#: Seconds one image may take, redirects included.
FETCH_TIMEOUT_S = 30.0


@dataclass(slots=True)
class FetchCounts:
    fetched: int = 0
    failed: int = 0
    more: bool = False  # pending items are left for another call


def _pending():
    return Item.objects.filter(image_state=Item.ImageState.PENDING, image_file="").exclude(
        image_url=""
    )


def item_image_fetch(*, item_id: int) -> str:
    """Fetch, check and store one item's image; return the image state it ends in.

    Safe to call twice: an item no longer pending is left alone, and the result is written only
    while the item is still pending with the URL that was fetched.
    """
    item = _pending().filter(pk=item_id).values_list("image_url", flat=True).first()
    if item is None:
        return ""
    url = item
    values: dict[str, Any]
    try:
        data = fetch_image(url, max_bytes=settings.IMAGE_MAX_BYTES, timeout=FETCH_TIMEOUT_S).data
        stored = image_store(data=data)
    except FetchError as exc:
        values = {"image_state": exc.state, "image_error": str(exc)[:500]}
    except images.ImageError as exc:
        values = {"image_state": exc.state, "image_error": str(exc)[:500]}
    else:
        values = {
            "image_file": stored.image_file,
            "thumbnail": stored.thumbnail,
            "image_sha256": stored.info.sha256,
            "image_width": stored.info.width,
            "image_height": stored.info.height,
            "image_state": Item.ImageState.OK,
            "image_error": "",
        }
    _pending().filter(pk=item_id, image_url=url).update(**values)
    return str(values["image_state"])


def item_images_fetch(*, limit: int = 50) -> FetchCounts:
    """Fetch up to ``limit`` pending remote images, oldest items first."""
    counts = FetchCounts()
    ids = list(_pending().order_by("pk").values_list("pk", flat=True)[: limit + 1])
    counts.more = len(ids) > limit
    for item_id in ids[:limit]:
        state = item_image_fetch(item_id=item_id)
        if state == Item.ImageState.OK:
            counts.fetched += 1
        elif state:
            counts.failed += 1
    return counts
