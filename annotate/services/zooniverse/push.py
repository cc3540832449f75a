"""A round's items pushed to Zooniverse as a subject set linked to its workflow.

:func:`round_push` finds the round's subject set and subjects upstream before creating anything,
records each subject as soon as it exists, and never re-sends a create without looking first, so
a re-run creates nothing new. A remote ``image_url`` is sent as the subject location; with
``PUBLIC_MEDIA_BASE_URL`` set a local file is offered at that URL, otherwise it is uploaded to the
signed URL Panoptes answers (a subject whose upload may be lost asks for a fresh URL and uploads
again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotate.models import Item, Round, RoundPick, Subject
from annotate.services.media import image_path
from annotate.services.zooniverse.operation import (
    SyncConfigError,
    client_or_connect,
    workflow_project_id,
    zooniverse_operation,
)
from annotate.zooniverse.client import (
    FatalError,
    NotFoundError,
    SubjectPayload,
    ZooniverseClient,
)

logger = logging.getLogger(__name__)

#: Images in these states are not shown to volunteers.
UNPUSHABLE_IMAGE_STATES = frozenset(
    {
        Item.ImageState.CORRUPT,
        Item.ImageState.INVALID,
        Item.ImageState.REFUSED,
        Item.ImageState.TOO_LARGE,
        Item.ImageState.MISSING,
        Item.ImageState.UNREACHABLE,
    }
)
_MIME_TYPES = {
    ".png": "image/png",
    ".gif": "image/gif",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
}


@dataclass
class PushResult:
    """What one :func:`round_push` did."""

    round_number: int
    subject_set_id: int
    set_created: bool = False
    created: int = 0
    existing: int = 0
    recovered: int = 0
    linked: int = 0
    workflow_linked: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"round {self.round_number} -> subject set {self.subject_set_id}"
            f"{' (new)' if self.set_created else ''}: {self.created} subjects created, "
            f"{self.existing} already there ({self.recovered} recovered from Zooniverse), "
            f"{self.linked} linked to the set, {len(self.skipped)} skipped"
        )


@dataclass(frozen=True)
class LocalImage:
    """A stored image to upload: its type (``image/png``) and its absolute path."""

    content_type: str
    path: Path


def _content_type(path: str) -> str:
    path = path.lower()
    suffix = path[path.rfind(".") :] if "." in path.rsplit("/", 1)[-1] else ""
    return _MIME_TYPES.get(suffix, "image/jpeg")


def image_source(item: Item) -> dict[str, str] | LocalImage | None:
    """Where a subject's image comes from: a location URL, a local file to upload, or None.

    A remote ``image_url`` wins; a local file is offered at ``PUBLIC_MEDIA_BASE_URL`` when that is
    set, and uploaded otherwise.
    """
    location = image_location(item)
    if location is not None or not item.image_file or item.image_url:
        return location
    try:
        path = image_path(item.image_file)
    except ValueError:
        return None
    return LocalImage(_content_type(item.image_file), path) if path.is_file() else None


def image_location(item: Item) -> dict[str, str] | None:
    """The subject location of an item's image, ``{"image/jpeg": url}``, or None if it has none.

    A remote ``image_url`` wins; a local file is offered at ``PUBLIC_MEDIA_BASE_URL``.
    """
    url = item.image_url
    if not url and item.image_file:
        base = settings.PUBLIC_MEDIA_BASE_URL.rstrip("/")
        if base:
            url = f"{base}/{item.image_file.lstrip('/')}"
    if not url or urlsplit(url).scheme not in ("http", "https"):
        return None
    return {_content_type(urlsplit(url).path): url}


def _upload(
    payload: SubjectPayload, image: LocalImage, *, client: ZooniverseClient, fresh: bool
) -> None:
    """PUT the image's bytes to the upload URL of the subject in ``payload``.

    ``fresh``: ``payload`` is the create's own answer, whose location is the signed upload URL.
    Otherwise (a subject found after a lost answer, or upstream but not recorded here) that URL
    is not known, and the subject is asked for a new one first.
    """
    if not fresh:
        payload = client.subject_locations_renew(
            subject_id=int(payload["id"]), content_types=[image.content_type]
        )
    locations = payload.get("locations") or []
    url = next(iter(locations[0].values()), None) if locations else None
    if not url:
        raise FatalError(f"subject {payload.get('id')}: no upload URL in its locations")
    client.media_upload(url=url, content_type=image.content_type, data=image.path.read_bytes())


def _subject_set_name(round: Round) -> str:
    return round.name or f"round-{round.number}"


def _round_key(round: Round) -> str:
    # Stored in the set's metadata: a set someone else named "round-3" is never taken for ours.
    return f"crowdloop-round:{round.number}"


def _subject_set_for(
    round: Round, *, client: ZooniverseClient, project_id: int
) -> tuple[int, bool]:
    """The round's subject set id, found or created once; the id is saved on the round at once."""
    with transaction.atomic():
        # Two pushes of one round serialise here (row lock on PostgreSQL; SQLite's IMMEDIATE
        # transactions already serialise writers), so they cannot both create a set.
        locked = Round.objects.select_for_update().get(pk=round.pk)
        if locked.subject_set_id:
            try:
                client.subject_set_get(locked.subject_set_id)
            except NotFoundError as exc:
                raise SyncConfigError(
                    f"round {round.number}: subject set {locked.subject_set_id} is gone from "
                    "Zooniverse; clear Round.subject_set_id to push the round as a new set"
                ) from exc
            round.subject_set_id = locked.subject_set_id
            return locked.subject_set_id, False
        subject_set, created = client.subject_set_ensure(
            project_id=project_id, display_name=_subject_set_name(round), key=_round_key(round)
        )
        set_id = int(subject_set["id"])
        Round.objects.filter(pk=round.pk).update(subject_set_id=set_id)
        round.subject_set_id = set_id
        return set_id, created


@zooniverse_operation
def round_push(
    *,
    round: Round,
    items: Sequence[Item],
    priorities: Mapping[int, float] | None = None,
    client: ZooniverseClient | None = None,
    progress: Callable[[int], object] | None = None,
) -> PushResult:
    """Push ``items`` (best first) to Zooniverse as the round's subject set, linked to its workflow.

    Each subject carries ``external_id``, ``crowdloop_id`` and ``#priority`` in its metadata;
    ``#priority`` is ``priorities[item.pk]`` or the item's rank (1 = shown first to volunteers
    in a prioritized workflow: Panoptes selects lower priorities first). Items without a public
    image are skipped and listed. Safe to call again: subjects already on Zooniverse (recorded
    here or found in the set) are not created again, and the call only repairs what is missing.
    """
    if round.workflow_id is None:
        raise SyncConfigError(f"round {round.number} has no workflow")
    workflow = round.workflow
    assert workflow is not None
    client = client_or_connect(client)
    project_id = workflow_project_id(workflow)
    set_id, set_created = _subject_set_for(round, client=client, project_id=project_id)
    result = PushResult(round_number=round.number, subject_set_id=set_id, set_created=set_created)

    # What already exists, upstream and here: the two can differ after a crash between a create
    # and its local record, which is exactly when a blind re-push would duplicate.
    remote = {
        str((s.get("metadata") or {}).get("external_id")): s for s in client.subjects_in_set(set_id)
    }
    local = {
        s.item_id: s
        for s in Subject.objects.filter(
            round=round, item__isnull=False, upstream_state=Subject.Upstream.ACTIVE
        )
    }
    _tombstone_deleted(local, remote_ids={int(s["id"]) for s in remote.values()}, client=client)
    to_link: list[int] = []

    for rank, item in enumerate(items, start=1):
        priority = float(priorities[item.pk]) if priorities and item.pk in priorities else rank
        source = None if item.image_state in UNPUSHABLE_IMAGE_STATES else image_source(item)
        if source is None:
            reason = (
                f"image {item.image_state}"
                if item.image_state in UNPUSHABLE_IMAGE_STATES
                else "no image URL and no stored image file"
            )
            result.skipped.append((item.external_id, reason))
            continue
        metadata: dict[str, Any] = {
            "external_id": item.external_id,
            "crowdloop_id": str(item.pk),
            "#priority": priority,
            "#crowdloop_round": round.number,
        }
        if item.pk in local:
            result.existing += 1
            subject_zid = local[item.pk].zooniverse_id
        elif item.external_id in remote:
            payload = remote[item.external_id]
            subject_zid = int(payload["id"])
            if isinstance(source, LocalImage):
                # Created upstream, never recorded here: its upload may not have happened.
                _upload(payload, source, client=client, fresh=False)
            _subject_record(
                subject_zid,
                item=item,
                round=round,
                priority=priority,
                metadata=payload.get("metadata") or metadata,
            )
            result.existing += 1
            result.recovered += 1
        else:
            found_instead: list[bool] = []

            def lookup(
                external_id: str = item.external_id, seen: list[bool] = found_instead
            ) -> SubjectPayload | None:
                found = client.subject_find(subject_set_id=set_id, external_id=external_id)
                seen.append(found is not None)
                return found

            payload = client.subject_create(
                project_id=project_id,
                subject_set_id=set_id,
                external_id=item.external_id,
                locations=[source.content_type if isinstance(source, LocalImage) else source],
                metadata=metadata,
                lookup=lookup,
            )
            subject_zid = int(payload["id"])
            if isinstance(source, LocalImage):
                _upload(payload, source, client=client, fresh=not any(found_instead))
            _subject_record(
                subject_zid,
                item=item,
                round=round,
                priority=priority,
                metadata=payload.get("metadata") or metadata,
            )
            result.created += 1
            # The create carries the set link; link it separately if the server dropped it.
            in_sets = {str(s) for s in (payload.get("links") or {}).get("subject_sets") or []}
            if str(set_id) in in_sets:
                remote[item.external_id] = payload
        if item.external_id not in remote:
            to_link.append(subject_zid)
        if progress is not None:
            progress(1)

    if to_link:
        result.linked = client.subject_set_add(subject_set_id=set_id, subject_ids=to_link)
    result.workflow_linked = client.workflow_link_subject_set(
        workflow_id=workflow.zooniverse_id, subject_set_id=set_id
    )
    updates: dict[str, Any] = {"status": Round.Status.PUSHED, "subject_set_id": set_id}
    if round.pushed_at is None:
        updates["pushed_at"] = timezone.now()
    Round.objects.filter(pk=round.pk).update(**updates)
    for name, value in updates.items():
        setattr(round, name, value)
    logger.info("Zooniverse push: %s", result.summary())
    return result


def _tombstone_deleted(
    local: dict[int | None, Subject], *, remote_ids: set[int], client: ZooniverseClient
) -> None:
    """Mark recorded subjects that no longer exist upstream as deleted, and forget them here.

    A recorded subject missing from the set either was unlinked (it still exists: it is linked
    again) or was deleted on Zooniverse (reliability B10: tombstoned, its votes kept, and the
    item pushed as a new subject).
    """
    missing = {
        s.zooniverse_id: item_id
        for item_id, s in local.items()
        if s.zooniverse_id not in remote_ids
    }
    if not missing:
        return
    alive = {int(s["id"]) for s in client.subjects_get(list(missing))}
    gone = [zid for zid in missing if zid not in alive]
    if gone:
        Subject.objects.filter(zooniverse_id__in=gone).update(
            upstream_state=Subject.Upstream.DELETED
        )
        logger.warning("Zooniverse subjects deleted upstream, tombstoned: %s", gone)
        for zid in gone:
            local.pop(missing[zid], None)


def round_items(*, round: Round) -> list[Item]:
    """The items of a round, best first: its picks by rank (relabel picks, which are already
    subjects, left out), else the items already recorded as its subjects (by ``#priority``).

    What a push of a round without an explicit item list sends; pushing it again repairs missing
    links and subjects and creates nothing that exists.
    """
    picks = list(
        round.picks.exclude(reason=RoundPick.Reason.RELABEL).select_related("item").order_by("rank")
    )
    if picks:
        return [p.item for p in picks]
    subjects = (
        Subject.objects.filter(round=round, item__isnull=False)
        .select_related("item")
        .order_by("priority", "pk")
    )
    return [s.item for s in subjects if s.item is not None]


def _subject_record(
    zooniverse_id: int, *, item: Item, round: Round, priority: float, metadata: dict[str, Any]
) -> None:
    """Record a subject as soon as it exists upstream (its own small transaction)."""
    Subject.objects.update_or_create(
        zooniverse_id=zooniverse_id,
        defaults={"item": item, "round": round, "priority": priority, "metadata": metadata},
    )
