"""Subjects: each vote's subject found or created, and linked to the crowdloop item it shows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import connections, router
from django.db.models import OuterRef, Subquery

from annotate.models import Classification, Item, Subject
from annotate.services.classifications.sql import INSERT_BATCH, among, json_adapter, rows_insert

#: Subject metadata keys that name the crowdloop item a subject shows, in the order they are tried.
ITEM_METADATA_KEYS = ("external_id", "europeana_id", "crowdloop_id")


def _retirement(metadata: dict[str, Any]) -> tuple[datetime | None, str]:
    """Retirement from an export's ``subject_data`` status object (``null`` when not retired)."""
    status = metadata.get("retired")
    if not isinstance(status, dict) or not status.get("retired_at"):
        return None, ""
    from django.utils.dateparse import parse_datetime

    try:
        retired_at = parse_datetime(str(status["retired_at"]))
    except ValueError:
        retired_at = None
    return retired_at, str(status.get("retirement_reason") or "")[:32]


def _item_candidates(metadata: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, value) pairs naming the item of a subject, in the order they are tried."""
    found: list[tuple[str, str]] = []
    for key in ITEM_METADATA_KEYS:
        value = metadata.get(key)
        if value is None or value == "" or isinstance(value, dict | list | bool):
            continue
        text = str(value).strip()
        if key == "crowdloop_id":
            if text.isdigit():
                found.append(("pk", text))
        else:
            found.append(("external_id", text))
            if key == "europeana_id":
                # Europeana ids are written "/2058612/x" or "2058612/x": accept either spelling.
                other = text.lstrip("/") if text.startswith("/") else f"/{text}"
                found.append(("external_id", other))
    return found


def _items_match(metadata_by_subject: dict[int, dict[str, Any]]) -> dict[int, int]:
    """Subject id -> item id, by metadata external_id, then europeana_id, then crowdloop_id."""
    candidates = {zid: _item_candidates(meta) for zid, meta in metadata_by_subject.items()}
    external = {v for pairs in candidates.values() for kind, v in pairs if kind == "external_id"}
    pks = {int(v) for pairs in candidates.values() for kind, v in pairs if kind == "pk"}
    by_external = (
        dict(Item.objects.filter(among("external_id", external)).values_list("external_id", "id"))
        if external
        else {}
    )
    existing_pks = set(Item.objects.filter(pk__in=pks).values_list("id", flat=True) if pks else [])
    matched: dict[int, int] = {}
    for zid, pairs in candidates.items():
        for kind, value in pairs:
            item_id = (
                by_external.get(value)
                if kind == "external_id"
                else (int(value) if int(value) in existing_pks else None)
            )
            if item_id is not None:
                matched[zid] = item_id
                break
    return matched


#: The columns a new subject gets from its classifications (the rest take their defaults).
_SUBJECT_FILLED = ("zooniverse_id", "item_id", "metadata", "retired_at", "retirement_reason")


def _subjects_read(zooniverse_ids: list[int]) -> dict[int, tuple[int, int | None]]:
    rows = Subject.objects.filter(among("zooniverse_id", zooniverse_ids)).values_list(
        "zooniverse_id", "id", "item_id"
    )
    return {zid: (pk, item_id) for zid, pk, item_id in rows}


def _item_keys(metadata: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(str(metadata.get(key)) for key in ITEM_METADATA_KEYS)


def subjects_resolve(
    metadata: dict[int, dict[str, Any]], *, unmatched: dict[int, tuple[Any, ...]]
) -> tuple[dict[int, tuple[int, int | None]], set[int]]:
    """Subject zooniverse id -> (subject id, item id), and the ids of the subjects created.

    ``metadata`` holds each subject's export metadata (``{}`` when there is none). A new subject
    is linked to an item through its metadata; a known subject still without an item is linked
    when its metadata now names one, and its stored votes follow it. ``unmatched`` remembers
    metadata that matched no item (subject id -> its item keys), so that the same metadata is
    not looked up again (it is updated).
    """
    found = _subjects_read(list(metadata))
    unlinked = {
        zid: meta
        for zid, meta in metadata.items()
        if meta
        and (zid not in found or found[zid][1] is None)
        and (zid not in unmatched or unmatched[zid] != _item_keys(meta))
    }
    items = _items_match(unlinked) if unlinked else {}
    if len(unmatched) < 1_000_000:  # bounded, like the volunteer cache
        unmatched.update(
            (zid, _item_keys(meta)) for zid, meta in unlinked.items() if zid not in items
        )

    missing = [zid for zid in metadata if zid not in found]
    if missing:
        connection = connections[router.db_for_write(Subject)]
        adapt_json = json_adapter(connection)
        adapt_time = connection.ops.adapt_datetimefield_value
        new_subjects = []
        for zid in missing:
            meta = {k: v for k, v in metadata[zid].items() if k != "retired"}
            retired_at, reason = _retirement(metadata[zid])
            new_subjects.append(
                (
                    zid, items.get(zid), adapt_json(meta),
                    None if retired_at is None else adapt_time(retired_at), reason[:32],
                )
            )  # fmt: skip
        rows_insert(Subject, _SUBJECT_FILLED, new_subjects)
        found.update(_subjects_read(missing))

    relink = {zid: items[zid] for zid in items if zid in found and found[zid][1] is None}
    if relink:
        subjects = [Subject(pk=found[zid][0], item_id=item_id) for zid, item_id in relink.items()]
        Subject.objects.bulk_update(subjects, ["item"], batch_size=INSERT_BATCH)
        Classification.objects.filter(
            subject_id__in=[found[zid][0] for zid in relink], item__isnull=True
        ).update(
            item_id=Subquery(
                Subject.objects.filter(pk=OuterRef("subject_id")).values("item_id")[:1]
            )
        )
        for zid, item_id in relink.items():
            found[zid] = (found[zid][0], item_id)
    return found, {found[zid][0] for zid in missing if zid in found}
