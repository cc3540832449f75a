"""An item's identity: its external id, its image source and the image itself.

Nobody edits them by hand (the admin shows them read-only); an import matches items by external
id and may legitimately give one a new image. Each such change is recorded as an
``ItemIdentityChange`` with the value before and after, and a new source forgets the stored copy
of the old one, so no screen shows the old image under the new source and the worker fetches the
new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from annotate.models import ImportReport, Item, ItemIdentityChange

#: What a new remote source resets: the stored copy of the old image, fetched again.
STORED_COPY_FORGOTTEN: dict[str, Any] = {
    "image_file": "",
    "thumbnail": "",
    "image_sha256": "",
    "image_width": None,
    "image_height": None,
    "image_state": Item.ImageState.PENDING,
    "image_error": "",
}


def image_source_values(item: Item, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` for ``item``, with its stored copy forgotten when they give it a new remote
    ``image_url`` (a local file's values already name the new copy)."""
    url = values.get("image_url", item.image_url)
    if url and url != item.image_url and "image_file" not in values:
        return {**values, **STORED_COPY_FORGOTTEN}
    return dict(values)


def identity_changes(
    item: Item, values: Mapping[str, Any], *, report: ImportReport | None = None
) -> list[ItemIdentityChange]:
    """The audit rows of what ``values`` change in ``item``'s identity (not saved).

    A new ``image_url`` is a change, and so is a new ``image_sha256`` replacing another (another
    local file); a hash first set, or forgotten with the source it belonged to, is not.
    """
    changes = []
    url = values.get("image_url", item.image_url)
    if url != item.image_url:
        changes.append(("image_url", item.image_url, url))
    sha = values.get("image_sha256", "")  # read the item's only then: it may be deferred
    if sha and item.image_sha256 and sha != item.image_sha256:
        changes.append(("image_sha256", item.image_sha256, sha))
    return [
        ItemIdentityChange(item=item, report=report, field=field, before=before, after=after)
        for field, before, after in changes
    ]
