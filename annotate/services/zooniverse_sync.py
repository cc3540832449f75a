"""Zooniverse sync: push a round of items as subjects, pull classifications, retire subjects.

Every function here is safe to run again after a crash or a redelivered Celery message
(``reliability.md`` §1-§2):

* :func:`round_push` finds the round's subject set and its subjects on Zooniverse before creating
  anything, records each subject as soon as it exists, and never re-sends a create without
  looking first, so a re-run creates nothing new;
* :func:`classifications_pull` pages by keyset from the stored ``SyncCursor.last_id``; each page
  is ingested and the cursor advanced in one transaction, so a crash replays at most the page it
  was on, and two pulls at once cannot interleave (the cursor row is locked for each commit and a
  page fetched from a stale cursor is dropped);
* retirement calls are idempotent upstream and mirrored locally afterwards.

The HTTP side (timeouts, retries, budget, no duplicate creates) lives in
:mod:`annotate.zooniverse.client`.

Images: an item's remote ``image_url`` is sent as the subject location. An item with only a local
file is uploaded: the create names its type (``"locations": ["image/png"]``), Panoptes answers
with a signed storage URL, and the file's bytes are ``PUT`` there before the subject is recorded
here. A subject whose create answer was lost, or that a re-push finds upstream but not here, asks
for a fresh upload URL (``PUT /subjects/{id}`` with the type again) and uploads again, so no
subject is left without its image. With ``PUBLIC_MEDIA_BASE_URL`` set, local files are offered
at that URL (our own web server serves ``/media/``) instead of uploaded.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from annotate.models import (
    ImportReport,
    Item,
    Round,
    RoundPick,
    Subject,
    SyncCursor,
    Workflow,
    WorkflowVersion,
)
from annotate.services.classifications import (
    SUPPORTED_TASK_TYPES,
    WILDCARD_VERSION,
    ClassificationRecord,
    IngestCounts,
    QuarantineEntry,
    classifications_ingest,
    votes_stored_announce,
)
from annotate.services.media import image_path
from annotate.zooniverse.client import (
    ClassificationPage,
    ClassificationPayload,
    FatalError,
    NotFoundError,
    ZooniverseClient,
    connect,
)
from annotate.zooniverse.exports import survey_labels
from annotate.zooniverse.records import survey_choices

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
#: A pull stops before a page when less than this is left of the client's budget.
BUDGET_MARGIN_S = 60.0


class SyncConfigError(Exception):
    """Sync cannot run with the configuration given (no project id, no workflow on the round)."""


def _client(client: ZooniverseClient | None) -> ZooniverseClient:
    return client if client is not None else connect()


P = ParamSpec("P")
R = TypeVar("R")


def zooniverse_operation(func: Callable[P, R]) -> Callable[P, R]:
    """Give a service a client (``client=`` or one from settings) and its own wall budget.

    A client passed in by a long-lived caller (the demo, a command looping over workflows) gets a
    fresh budget for this call; a nested service call shares its caller's.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        client = _client(kwargs.get("client"))  # type: ignore[arg-type]
        kwargs["client"] = client
        with client.operation():
            return func(*args, **kwargs)

    return wrapper


def _project_id(workflow: Workflow) -> int:
    value = workflow.project_id or settings.PANOPTES_PROJECT_ID
    if not value:
        raise SyncConfigError(
            f"workflow {workflow.zooniverse_id} has no project id: set PANOPTES_PROJECT_ID"
        )
    return int(value)


# -- push ----------------------------------------------------------------------------------------


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
    payload: dict[str, Any], image: LocalImage, *, client: ZooniverseClient, fresh: bool
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
    progress: Callable[[int], None] | None = None,
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
    client = _client(client)
    project_id = _project_id(workflow)
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
            ) -> dict[str, Any] | None:
                found = client.subject_find(subject_set_id=set_id, external_id=external_id)
                seen.append(found is not None)
                return found  # type: ignore[return-value]

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


# -- workflow versions ---------------------------------------------------------------------------


@dataclass
class VersionSyncResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.created)} versions created, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.unmapped)} answers unmapped"
        )


def _version_answers(
    payload: dict[str, Any], *, task_key: str, concepts: dict[str, str]
) -> tuple[str, list[dict[str, Any]]]:
    """(task type, answers in index order mapped to concept keys) of one workflow version."""
    from annotate.services.workflows import answers_map

    task = (payload.get("tasks") or {}).get(task_key)
    if not isinstance(task, dict):
        return "absent", []
    task_type = str(task.get("type") or "unknown")
    if task_type not in SUPPORTED_TASK_TYPES:
        return task_type, []
    strings = payload.get("strings") or {}
    if task_type == "survey":  # its answers are its choices, read as the workflow export's
        choices, labels = survey_labels(task_key, task, strings)
        return task_type, answers_map(labels, concepts, choices)
    labels = []
    for answer in task.get("answers") or []:
        reference = answer.get("label") if isinstance(answer, dict) else answer
        # Project Builder keeps the text in ``strings``; older workflows hold it inline.
        labels.append(str(strings.get(str(reference), reference) or ""))
    return task_type, answers_map(labels, concepts)


@zooniverse_operation
def workflow_versions_sync(
    *, workflow: Workflow, client: ZooniverseClient | None = None
) -> VersionSyncResult:
    """Fetch the workflow's versions (``GET /workflow_versions``) and store their answer maps.

    API classifications give answer indices, which mean something only for the exact version;
    this stores answer *i* of the workflow's task with the concept whose key or label matches
    its text. A version already stored with the same answer texts is left alone, so a mapping a
    curator corrected is not overwritten.
    """
    from annotate.services.vocabulary import concept_index

    client = _client(client)
    concepts = concept_index()
    result = VersionSyncResult()
    stored = {v.version: v for v in WorkflowVersion.objects.filter(workflow=workflow)}
    for payload in client.workflow_versions(workflow.zooniverse_id):
        version = f"{payload.get('major_number')}.{payload.get('minor_number')}"
        task_type, answers = _version_answers(
            dict(payload), task_key=workflow.task_key, concepts=concepts
        )
        result.unmapped += [f"{version}:{a['label']}" for a in answers if not a["concept"]]
        existing = stored.get(version)
        if existing is None:
            WorkflowVersion.objects.create(
                workflow=workflow,
                version=version,
                task_key=workflow.task_key,
                task_type=task_type,
                answers=answers,
            )
            result.created.append(version)
        elif [a.get("label") for a in existing.answers or []] != [a["label"] for a in answers] or (
            existing.task_type != task_type
        ):
            existing.answers, existing.task_type = answers, task_type
            existing.save(update_fields=["answers", "task_type"])
            result.updated.append(version)
        else:
            result.unchanged.append(version)
    return result


# -- pull ------------------------------------------------------------------------------------------


@dataclass
class PullResult:
    """What one :func:`classifications_pull` did."""

    workflow_id: int
    #: The sync's import report; None when the pull found nothing and left no report.
    report_id: int | None
    counts: IngestCounts = field(default_factory=IngestCounts)
    pages: int = 0
    last_id: int = 0
    complete: bool = False
    stale_pages: int = 0

    def summary(self) -> str:
        state = "up to date" if self.complete else "more to fetch"
        return (
            f"workflow {self.workflow_id}: {self.pages} pages, {self.counts.summary()}; "
            f"cursor {self.last_id} ({state})"
        )


@dataclass(frozen=True)
class PageCommitted:
    """Handed to ``on_batch_committed`` after a page and its cursor have committed."""

    page: ClassificationPage
    counts: IngestCounts
    last_id: int


def classification_record(
    row: ClassificationPayload, *, task_key: str
) -> ClassificationRecord | QuarantineEntry:
    """One API classification as a record; a row that cannot be read becomes a quarantine entry.

    The API's ``value`` is an answer index (single), a list of indices (multiple) or a survey's
    list of ``{"choice", "answers", "filters"}`` (read as its choice codes). The API does
    not carry the volunteer's login: logged-in volunteers are keyed by user id; logged-out ones
    by their browser session (``not-logged-in-<session>``), the only stable handle the API gives.
    """
    raw = json.dumps(row, default=str)[:10_000]
    record_id = str(row.get("id", ""))

    def refuse(field_name: str, reason: str) -> QuarantineEntry:
        return QuarantineEntry(None, record_id, field_name, reason, raw)

    try:
        zooniverse_id = int(record_id)
    except ValueError:
        return refuse("id", "invalid_id")
    links = row.get("links") or {}
    metadata = row.get("metadata") or {}
    try:
        workflow_id = int(links.get("workflow") or 0)
        subject_ids = [int(s) for s in links.get("subjects") or []]
        user = links.get("user")
        user_id = int(user) if user not in (None, "") else None
    except (TypeError, ValueError):
        return refuse("links", "invalid_link_id")
    created_at = parse_datetime(str(row.get("created_at") or ""))
    if created_at is None:
        return refuse("created_at", "invalid_created_at")
    annotations = row.get("annotations") or []
    annotation = next(
        (a for a in annotations if isinstance(a, dict) and a.get("task") == task_key), None
    )
    # Without the task (a decision tree's other branch, a version without it) the volunteer was
    # not asked: stored, but no vote, as the export readers do.
    value = annotation.get("value") if annotation is not None else None
    answers: list[int] | list[str] | None
    choices = survey_choices(value)
    if annotation is None or value is None:
        answers = None  # a single-answer task left unanswered: the ingest reads it as skipped
    elif isinstance(value, int) and not isinstance(value, bool):
        answers = [value]
    elif choices is not None:  # a survey: the choice codes marked
        answers = choices
    elif isinstance(value, list):
        answers = value
    else:
        return refuse("annotations", "invalid_answer_type")
    session = str(metadata.get("session") or "")
    user_name = "" if user_id is not None else f"not-logged-in-{session[:64] or 'unknown'}"
    return ClassificationRecord(
        zooniverse_id=zooniverse_id,
        workflow_id=workflow_id,
        workflow_version=str(metadata.get("workflow_version") or ""),
        subject_ids=subject_ids,
        user_id=user_id,
        user_name=user_name,
        created_at=created_at,
        answers=answers,
        gold_standard=bool(row.get("gold_standard")),
        expert=bool(row.get("expert_classifier")),
        session=session,
        source="api",
        task_shown=annotation is not None,
    )


def _attach_subject_metadata(
    records: list[ClassificationRecord | QuarantineEntry], *, client: ZooniverseClient
) -> None:
    """Give records of subjects we have never seen their metadata, so they match an item."""
    wanted = {sid for r in records if isinstance(r, ClassificationRecord) for sid in r.subject_ids}
    known = set(
        Subject.objects.filter(zooniverse_id__in=wanted).values_list("zooniverse_id", flat=True)
    )
    unknown = sorted(wanted - known)
    if not unknown:
        return
    metadata = {int(s["id"]): s.get("metadata") or {} for s in client.subjects_get(unknown)}
    for record in records:
        if isinstance(record, ClassificationRecord):
            for sid in record.subject_ids:
                if sid in metadata:
                    record.subject_metadata[sid] = metadata[sid]


def _cursor_read(workflow: Workflow) -> int:
    cursor = SyncCursor.objects.filter(workflow=workflow).values_list("last_id", flat=True)
    return cursor.first() or 0


def _page_commit(
    *,
    workflow: Workflow,
    report: ImportReport,
    page: ClassificationPage,
    records: list[ClassificationRecord | QuarantineEntry],
) -> IngestCounts | None:
    """Ingest one page and move the cursor in one transaction; None if the cursor moved away.

    The cursor row is locked first (PostgreSQL ``SELECT ... FOR UPDATE``; on SQLite the
    IMMEDIATE transaction already holds the write lock), and the page is only written when the
    cursor is still where the page was fetched from: another pull that got there first wins, and
    this one refetches from the new position instead of writing a page out of order.
    """
    with transaction.atomic():
        cursor = SyncCursor.objects.select_for_update().get(workflow=workflow)
        if cursor.last_id != page.after_id:
            return None
        counts = classifications_ingest(
            records=records,
            workflow=workflow,
            report=report,
            batch_size=max(1, len(records)),
            cursor=True,
        )
        # The ingest moves the cursor to the largest id it read; a page whose rows were all
        # refused before an id could be read still has to move past them.
        SyncCursor.objects.filter(pk=cursor.pk, last_id__lt=page.last_id).update(
            last_id=page.last_id, updated_at=timezone.now()
        )
    return counts


@zooniverse_operation
def classifications_pull(
    *,
    workflow: Workflow,
    client: ZooniverseClient | None = None,
    page_size: int = 100,
    max_pages: int | None = None,
    on_batch_committed: Callable[[PageCommitted], None] | None = None,
) -> PullResult:
    """Fetch the workflow's classifications after the stored cursor and ingest them page by page.

    Each page goes through :func:`classifications_ingest` (idempotent upserts, answer maps,
    repeats, quarantine) and moves ``SyncCursor.last_id`` in the same transaction;
    ``on_batch_committed`` runs after that commit. The pull ends at the first empty page (or a
    page with nothing newer than the cursor), after ``max_pages``, or when the client's wall
    budget is nearly spent (``complete`` is then False and the next run continues).

    Versions named by classifications but not stored yet are fetched once per pull
    (:func:`workflow_versions_sync`); rows of versions still unknown are quarantined.
    """
    client = _client(client)
    project_id = _project_id(workflow)
    SyncCursor.objects.get_or_create(workflow=workflow)
    report = ImportReport.objects.create(
        kind=ImportReport.Kind.SYNC,
        source=f"zooniverse project {project_id} workflow {workflow.zooniverse_id}",
    )
    result = PullResult(workflow_id=workflow.zooniverse_id, report_id=report.pk)
    versions_synced = False
    known_versions = set(
        WorkflowVersion.objects.filter(workflow=workflow).values_list("version", flat=True)
    )
    try:
        last_id = _cursor_read(workflow)
        while max_pages is None or result.pages < max_pages:
            # Stop between pages when the budget is nearly spent (the next run continues), but
            # always try one page, so a small budget cannot starve the sync for good.
            margin = min(BUDGET_MARGIN_S, client.policy.budget_s / 10)
            if result.pages and client.time_left() < margin:
                logger.warning(
                    "Workflow %s: budget nearly spent; stopping at cursor %s",
                    workflow.zooniverse_id,
                    last_id,
                )
                break
            page = client.classifications_page(
                project_id=project_id,
                workflow_id=workflow.zooniverse_id,
                last_id=last_id,
                page_size=page_size,
            )
            if page is None:
                result.complete = True
                break
            records = [classification_record(row, task_key=workflow.task_key) for row in page.rows]
            versions = {r.workflow_version for r in records if isinstance(r, ClassificationRecord)}
            if not versions_synced and versions - known_versions - {WILDCARD_VERSION}:
                workflow_versions_sync(workflow=workflow, client=client)
                versions_synced = True
            _attach_subject_metadata(records, client=client)
            counts = _page_commit(workflow=workflow, report=report, page=page, records=records)
            if counts is None:
                result.stale_pages += 1
                last_id = _cursor_read(workflow)
                logger.info(
                    "Workflow %s: another pull moved the cursor to %s; continuing there",
                    workflow.zooniverse_id,
                    last_id,
                )
                continue
            result.counts.add(counts)
            result.pages += 1
            last_id = page.last_id
            if on_batch_committed is not None:
                on_batch_committed(PageCommitted(page=page, counts=counts, last_id=last_id))
    except BaseException as exc:
        result.last_id = _cursor_read(workflow)
        _report_finish(report, ImportReport.Status.FAILED, f"{type(exc).__name__}: {exc}")
        # The pages committed before the failure are stored votes all the same.
        votes_stored_announce(workflow=workflow, created=result.counts.created, source="pull")
        raise
    result.last_id = _cursor_read(workflow)
    votes_stored_announce(workflow=workflow, created=result.counts.created, source="pull")
    if result.pages == 0 and result.stale_pages == 0:
        # A periodic pull that found nothing leaves no report behind: every few minutes per
        # workflow they would bury the ones that matter. The cursor's updated_at tells when
        # classifications last arrived.
        report.delete()
        result.report_id = None
    else:
        _report_finish(report, ImportReport.Status.SUCCEEDED, result.summary())
    return result


@zooniverse_operation
def classifications_export_pull(
    *,
    workflow: Workflow,
    client: ZooniverseClient | None = None,
    directory: Path | None = None,
    generate: bool = True,
    deadline_s: float = 3600.0,
    poll_s: float = 15.0,
    max_bytes: int | None = None,
) -> tuple[ImportReport, IngestCounts]:
    """Request the workflow's classification export, download it and import it.

    The bulk alternative to :func:`classifications_pull` (a first sync of a large project, or a
    reconciliation). The export must be no older than the request and ready within
    ``deadline_s``; it is streamed to a temporary file under ``directory`` (default
    ``ARTIFACT_ROOT/exports``) with a byte cap (``ZOONIVERSE_EXPORT_MAX_BYTES``, default 2 GiB),
    and the file is deleted afterwards. Any export failure raises before a single row is
    ingested; the import itself is idempotent (classification ids are unique).
    """
    from annotate.services.imports import classifications_import

    client = _client(client)
    directory = directory or Path(settings.ARTIFACT_ROOT) / "exports"
    cap = max_bytes or int(settings.ZOONIVERSE_EXPORT_MAX_BYTES)
    path = client.export_fetch(
        resource="workflows",
        resource_id=workflow.zooniverse_id,
        directory=directory,
        max_bytes=cap,
        generate=generate,
        deadline_s=deadline_s,
        poll_s=poll_s,
    )
    try:
        return classifications_import(path=path, workflow_id=workflow.zooniverse_id)
    finally:
        path.unlink(missing_ok=True)


def _report_finish(report: ImportReport, status: str, message: str) -> None:
    report.status = status
    report.message = "\n".join(part for part in (message[:2000], report.message) if part)
    report.finished_at = timezone.now()
    report.save(update_fields=["status", "message", "finished_at"])


def workflows_active() -> list[Workflow]:
    """The workflows a periodic sync pulls."""
    return list(Workflow.objects.filter(active=True).order_by("zooniverse_id"))


# -- retirement ------------------------------------------------------------------------------------


def _active(subjects: Iterable[Subject]) -> list[Subject]:
    return [s for s in subjects if s.upstream_state == Subject.Upstream.ACTIVE]


def subjects_retire(
    *,
    workflow: Workflow,
    subjects: Iterable[Subject],
    reason: str = "consensus",
    client: ZooniverseClient | None = None,
) -> int:
    """Retire subjects in the workflow (batches of 100) and mirror it locally; the number sent.

    Retiring an already retired subject is a no-op upstream, so a re-run is harmless.
    """
    chosen = _active(subjects)
    if not chosen:
        return 0
    client = _client(client)
    with client.operation():
        client.subjects_retire(
            workflow_id=workflow.zooniverse_id,
            subject_ids=[s.zooniverse_id for s in chosen],
            reason=reason,
        )
    Subject.objects.filter(pk__in=[s.pk for s in chosen], retired_at__isnull=True).update(
        retired_at=timezone.now(), retirement_reason=reason[:32]
    )
    return len(chosen)


def subjects_unretire(
    *,
    workflow: Workflow,
    subjects: Iterable[Subject],
    client: ZooniverseClient | None = None,
) -> int:
    """Put subjects back in the workflow's queue and clear their local retirement."""
    chosen = _active(subjects)
    if not chosen:
        return 0
    client = _client(client)
    with client.operation():
        client.subjects_unretire(
            workflow_id=workflow.zooniverse_id, subject_ids=[s.zooniverse_id for s in chosen]
        )
    Subject.objects.filter(pk__in=[s.pk for s in chosen]).update(
        retired_at=None, retirement_reason=""
    )
    return len(chosen)


def subject_statuses_sync(
    *,
    workflow: Workflow,
    subjects: Iterable[Subject],
    client: ZooniverseClient | None = None,
) -> int:
    """Copy Zooniverse's retirement state of subjects into ours; the number of subjects changed.

    Subjects retire upstream by classification count too, not only when we ask.
    """
    by_zid = {s.zooniverse_id: s for s in _active(subjects)}
    if not by_zid:
        return 0
    client = _client(client)
    with client.operation():
        statuses = client.subject_workflow_statuses(
            workflow_id=workflow.zooniverse_id, subject_ids=list(by_zid)
        )
    changed: list[Subject] = []
    for status in statuses:
        subject = by_zid.get(int((status.get("links") or {}).get("subject") or 0))
        if subject is None:
            continue
        retired_at = parse_datetime(str(status.get("retired_at") or "")) or None
        reason = str(status.get("retirement_reason") or "")[:32] if retired_at else ""
        changed_state = (subject.retired_at is None) != (retired_at is None)
        if changed_state or subject.retirement_reason != reason:
            subject.retired_at, subject.retirement_reason = retired_at, reason
            changed.append(subject)
    Subject.objects.bulk_update(changed, ["retired_at", "retirement_reason"])
    return len(changed)
