"""Subjects: each vote's subject found or created, and linked to the crowdloop item it shows."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from django.db import connections, router, transaction
from django.db.models import OuterRef, Subquery

from annotate.models import Classification, Item, Subject
from annotate.services.classifications.counters import counts_recompute
from annotate.services.classifications.sql import INSERT_BATCH, among, json_adapter, rows_insert
from annotate.signals import votes_linked

if TYPE_CHECKING:
    from annotate.services.classifications.read import IngestContext
    from annotate.zooniverse.classification_records import ClassificationColumns

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


#: The external id an item gets from ``import_subjects``: how ``subject_id`` matching finds it.
SUBJECT_EXTERNAL_ID = "zooniverse-subject-{}"


def _item_candidates(
    metadata: dict[str, Any], match: str = "", zooniverse_id: int | None = None
) -> list[tuple[str, str]]:
    """(kind, value) pairs naming the item of a subject, in the order they are tried.

    ``match`` is the workflow's ``subject_match``: empty for the built-in keys
    (:data:`ITEM_METADATA_KEYS`), ``subject_id`` for the item ``import_subjects`` made from the
    subject, or the one metadata key that holds the item's external id.
    """
    if match == "subject_id":
        if zooniverse_id is None:
            return []
        return [("external_id", SUBJECT_EXTERNAL_ID.format(zooniverse_id))]
    found: list[tuple[str, str]] = []
    for key in (match,) if match else ITEM_METADATA_KEYS:
        value = metadata.get(key)
        if value is None or value == "" or isinstance(value, dict | list | bool):
            continue
        text = str(value).strip()
        if key == "crowdloop_id" and not match:
            if text.isdigit():
                found.append(("pk", text))
        else:
            found.append(("external_id", text))
            if key.lstrip("!#/") == "europeana_id" and text:
                # Europeana ids are written "/2058612/x" or "2058612/x": accept either spelling.
                other = text.lstrip("/") if text.startswith("/") else f"/{text}"
                found.append(("external_id", other))
    return found


def _items_match(metadata_by_subject: dict[int, dict[str, Any]], match: str = "") -> dict[int, int]:
    """Subject id -> item id, as the workflow's ``match`` says (default: by metadata
    external_id, then europeana_id, then crowdloop_id)."""
    candidates = {
        zid: _item_candidates(meta, match, zid) for zid, meta in metadata_by_subject.items()
    }
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


def _item_keys(metadata: dict[str, Any], match: str = "") -> tuple[Any, ...]:
    if match == "subject_id":
        return (match,)
    return tuple(str(metadata.get(key)) for key in ((match,) if match else ITEM_METADATA_KEYS))


def subjects_resolve(
    metadata: dict[int, dict[str, Any]],
    *,
    unmatched: dict[int, tuple[Any, ...]],
    match: str = "",
) -> tuple[dict[int, tuple[int, int | None]], set[int]]:
    """Subject zooniverse id -> (subject id, item id), and the ids of the subjects created.

    ``metadata`` holds each subject's export metadata (``{}`` when there is none). A new subject
    is linked to an item through its metadata; a known subject still without an item is linked
    when its metadata now names one, and its stored votes follow it. ``unmatched`` remembers
    metadata that matched no item (subject id -> its item keys), so that the same metadata is
    not looked up again (it is updated). ``match`` is the workflow's ``subject_match``.
    """
    found = _subjects_read(list(metadata))
    unlinked = {
        zid: meta
        for zid, meta in metadata.items()
        if (meta or match == "subject_id")
        and (zid not in found or found[zid][1] is None)
        and (zid not in unmatched or unmatched[zid] != _item_keys(meta, match))
    }
    items = _items_match(unlinked, match) if unlinked else {}
    if len(unmatched) < 1_000_000:  # bounded, like the volunteer cache
        unmatched.update(
            (zid, _item_keys(meta, match)) for zid, meta in unlinked.items() if zid not in items
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
        subjects_link({found[zid][0]: item_id for zid, item_id in relink.items()})
        for zid, item_id in relink.items():
            found[zid] = (found[zid][0], item_id)
    return found, {found[zid][0] for zid in missing if zid in found}


def subjects_link(item_of_subject: dict[int, int]) -> None:
    """Link subjects (pk -> item pk) and move their stored votes without an item to the item.

    The caller recounts the items' counters (``counts_recompute``).
    """
    if not item_of_subject:
        return
    subjects = [Subject(pk=pk, item_id=item_id) for pk, item_id in item_of_subject.items()]
    Subject.objects.bulk_update(subjects, ["item"], batch_size=INSERT_BATCH)
    pks = list(item_of_subject)
    moved = 0
    for start in range(0, len(pks), INSERT_BATCH):
        moved += Classification.objects.filter(
            subject_id__in=pks[start : start + INSERT_BATCH], item__isnull=True
        ).update(
            item_id=Subquery(
                Subject.objects.filter(pk=OuterRef("subject_id")).values("item_id")[:1]
            )
        )
    if moved:
        # Votes stored earlier count from now on: the loop aggregates them (a full pass, since
        # their ids are older than what it has aggregated).
        transaction.on_commit(
            partial(votes_linked.send, sender=Subject, subjects=len(pks), votes=moved)
        )


def subjects_link_batch(
    columns: ClassificationColumns, rows: np.ndarray, *, context: IngestContext
) -> None:
    """Link the batch's subjects that have no item yet, stored votes included.

    Runs for every accepted row, also the ones already stored: a re-import of a classification
    export must link subjects whose items arrived since the first import, although it skips
    their known votes. Subjects still unlinked are remembered in ``context.unlinked``.
    """
    if not len(rows):
        return
    match = context.workflow.subject_match
    zids = np.unique(columns.subject_id[rows]).tolist()
    pending = dict(
        Subject.objects.filter(among("zooniverse_id", zids), item__isnull=True).values_list(
            "zooniverse_id", "id"
        )
    )
    if not pending:
        return
    metadata: dict[int, dict[str, Any]] = {}
    for zid in pending:
        meta = columns.subject_metadata.get(zid)
        meta = meta if isinstance(meta, dict) else {}
        if (meta or match == "subject_id") and context.unmatched.get(zid) != _item_keys(
            meta, match
        ):
            metadata[zid] = meta
    items = _items_match(metadata, match) if metadata else {}
    if len(context.unmatched) < 1_000_000:
        context.unmatched.update(
            (zid, _item_keys(meta, match)) for zid, meta in metadata.items() if zid not in items
        )
    subjects_link({pending[zid]: item_id for zid, item_id in items.items()})
    if items:
        if context.deferred is None:
            counts_recompute(items=set(items.values()), volunteers=set())
        else:
            context.deferred[0].update(items.values())
    if len(context.unlinked) < 1_000_000:
        context.unlinked.update(zid for zid in pending if zid not in items)


def subjects_unlinked(zooniverse_ids: set[int]) -> list[int]:
    """Those of ``zooniverse_ids`` whose subject still has no item, in id order."""
    ids = sorted(zooniverse_ids)
    found: list[int] = []
    for start in range(0, len(ids), 50_000):
        found += Subject.objects.filter(
            among("zooniverse_id", ids[start : start + 50_000]), item__isnull=True
        ).values_list("zooniverse_id", flat=True)
    return sorted(found)


def subjects_link_pending() -> list[int]:
    """Link every subject without an item whose item now exists; return the items linked.

    Called after items arrive (``import_items``, ``import_subjects``): each subject is matched as
    the workflow its votes belong to says (subjects without votes by the built-in keys), its
    votes follow it, and the linked items' counters are recounted.
    """
    from annotate.models import Workflow

    pending = Subject.objects.filter(item__isnull=True)
    if not pending.exists():
        return []
    linked: set[int] = set()
    matches: dict[int, str] = dict(Workflow.objects.values_list("id", "subject_match"))
    workflow_of: dict[int, int] = dict(
        Classification.objects.filter(subject__item__isnull=True)
        .order_by()
        .values_list("subject_id", "workflow_id")
        .distinct()
    )
    chunk: dict[str, dict[int, tuple[int, dict[str, Any]]]] = {}

    def flush(match: str) -> None:
        subjects = chunk.pop(match, {})
        items = _items_match({zid: meta for zid, (_, meta) in subjects.items()}, match)
        subjects_link({subjects[zid][0]: item_id for zid, item_id in items.items()})
        linked.update(items.values())

    for pk, zid, meta in pending.values_list("id", "zooniverse_id", "metadata").iterator(
        chunk_size=5000
    ):
        match = matches.get(workflow_of.get(pk, 0), "")
        chunk.setdefault(match, {})[zid] = (pk, meta if isinstance(meta, dict) else {})
        if len(chunk[match]) >= 5000:
            flush(match)
    for match in list(chunk):
        flush(match)
    counts_recompute(items=linked, volunteers=set())
    return sorted(linked)
