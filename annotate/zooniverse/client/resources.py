"""The Panoptes resources crowdloop uses, as methods of :class:`ZooniverseClient`.

* Creates that must not be repeated blindly (subjects, subject sets) go out as one attempt each;
  after a transient failure the object is looked up by the id crowdloop put in its metadata and
  re-sent only when absent (:meth:`ZooniverseClient.subject_create`); no ``Subject.save()``.
* Classifications are paged by keyset from a ``last_id`` the caller stores
  (:meth:`ZooniverseClient.classifications_page`), never through the library iterator.
* Exports are requested, awaited and downloaded by the methods it inherits from
  :class:`~annotate.zooniverse.client.data_exports.PanoptesExports`.

Payloads come back as Panoptes sends them (string ids) unless a method says otherwise;
:func:`connect` builds a client from arguments or settings and logs it in.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from panoptes_client.panoptes import Panoptes, PanoptesAPIException

from annotate.zooniverse.client.data_exports import PanoptesExports
from annotate.zooniverse.client.errors import (
    FatalError,
    NotFoundError,
    TransientError,
)
from annotate.zooniverse.client.payloads import (
    ClassificationPayload,
    SubjectPayload,
    SubjectSetPayload,
    SubjectWorkflowStatusPayload,
    WorkflowPayload,
    WorkflowVersionPayload,
)
from annotate.zooniverse.client.transport import (
    PAGE_SIZE,
    RetryPolicy,
    policy_from_settings,
)

logger = logging.getLogger(__name__)

#: The payload a create answers with, and its lookup finds.
PayloadT = TypeVar("PayloadT")

#: Retire, unretire and link calls take at most this many ids each.
ID_BATCH = 100
#: Retirement reasons Panoptes accepts (``app/models/subject_workflow_status.rb``).
RETIREMENT_REASONS = frozenset(
    {"classification_count", "flagged", "nothing_here", "consensus", "other", "human"}
)


@dataclass(frozen=True)
class ClassificationPage:
    """One keyset page: the rows newer than ``after_id`` and the largest id among them."""

    after_id: int
    rows: list[ClassificationPayload]
    last_id: int
    #: Rows the server sent again although their id is not above ``after_id``; dropped.
    repeated: int = 0


def _batches(ids: Sequence[int | str], size: int = ID_BATCH) -> Iterator[list[str]]:
    for start in range(0, len(ids), size):
        yield [str(i) for i in ids[start : start + size]]


# -- the client --------------------------------------------------------------------------------


class ZooniverseClient(PanoptesExports):
    """A logged-in (or anonymous) Panoptes client with our timeouts, retries and operations.

    Build it with :func:`connect`; the transport (timeouts, retries, the wall budget and the
    JSON calls) is :class:`~annotate.zooniverse.client.transport.PanoptesTransport`.
    """

    # -- classifications ---------------------------------------------------------------------

    def classifications_page(
        self, *, project_id: int, workflow_id: int, last_id: int, page_size: int = PAGE_SIZE
    ) -> ClassificationPage | None:
        """The classifications after ``last_id``, or ``None`` at the end.

        ``GET /classifications/project?project_id=&workflow_id=&last_id=&page_size=`` directly,
        not the library's paginator: every page is a request of its own, retried by ``_send``,
        and the position is the caller's stored ``last_id`` rather than iterator state. Rows whose
        id is not above ``last_id`` (a page repeating ids) are dropped; a page with nothing new
        counts as the end, so a server repeating itself cannot loop us forever.
        """
        body = self.get(
            "/classifications/project",
            {
                "project_id": project_id,
                "workflow_id": workflow_id,
                "last_id": last_id,
                "page_size": page_size,
            },
        )
        rows: list[ClassificationPayload] = body.get("classifications") or []
        fresh: list[ClassificationPayload] = []
        seen: set[int] = set()
        for row in rows:
            try:
                row_id = int(row["id"])
            except (KeyError, TypeError, ValueError):
                fresh.append(row)  # the ingest quarantines it; it must not stop the page
                continue
            if row_id > last_id and row_id not in seen:
                seen.add(row_id)
                fresh.append(row)
        if not seen:
            if rows:
                logger.warning(
                    "Workflow %s: a page after id %s held no newer classification; stopping",
                    workflow_id,
                    last_id,
                )
            return None
        return ClassificationPage(
            after_id=last_id, rows=fresh, last_id=max(seen), repeated=len(rows) - len(fresh)
        )

    def classifications_pages(
        self, *, project_id: int, workflow_id: int, last_id: int, page_size: int = PAGE_SIZE
    ) -> Iterator[ClassificationPage]:
        """Pages from ``last_id`` on, each starting after the previous page's largest id.

        Convenience for read-only callers; a syncing caller should ask
        :meth:`classifications_page` with the ``last_id`` it has committed.
        """
        while page := self.classifications_page(
            project_id=project_id, workflow_id=workflow_id, last_id=last_id, page_size=page_size
        ):
            yield page
            last_id = page.last_id

    # -- workflows ---------------------------------------------------------------------------

    def workflow_get(self, workflow_id: int) -> WorkflowPayload:
        body = self.get(f"/workflows/{workflow_id}")
        rows = body.get("workflows") or []
        if not rows:
            raise NotFoundError(f"workflow {workflow_id} not found", status=404)
        return rows[0]

    def workflow_versions(self, workflow_id: int) -> list[WorkflowVersionPayload]:
        """Every version of a workflow: ``GET /workflow_versions?workflow_id=``, all pages."""
        versions: list[WorkflowVersionPayload] = []
        params = {"workflow_id": workflow_id}
        for rows in self.pages("/workflow_versions", "workflow_versions", params):
            versions.extend(rows)
        return versions

    def workflow_link_subject_set(self, *, workflow_id: int, subject_set_id: int) -> bool:
        """Link a subject set to a workflow unless it already is; ``True`` when a link was made."""
        linked = self.workflow_get(workflow_id).get("links", {}).get("subject_sets") or []
        if str(subject_set_id) in {str(s) for s in linked}:
            return False
        self.post(
            f"/workflows/{workflow_id}/links/subject_sets",
            {"subject_sets": [str(subject_set_id)]},
        )
        return True

    def subjects_retire(
        self, *, workflow_id: int, subject_ids: Sequence[int], reason: str = "consensus"
    ) -> int:
        """Retire subjects in batches of 100 (idempotent upstream); the number sent."""
        if reason not in RETIREMENT_REASONS:
            raise ValueError(f"unknown retirement reason {reason!r}: use {RETIREMENT_REASONS}")
        for batch in _batches(subject_ids):
            self.post(
                f"/workflows/{workflow_id}/retired_subjects",
                {"subject_ids": batch, "retirement_reason": reason},
            )
        return len(subject_ids)

    def subjects_unretire(self, *, workflow_id: int, subject_ids: Sequence[int]) -> int:
        """Put subjects back in the workflow's queue, in batches of 100; the number sent."""
        for batch in _batches(subject_ids):
            self.post(f"/workflows/{workflow_id}/unretire_subjects", {"subject_ids": batch})
        return len(subject_ids)

    def subject_workflow_statuses(
        self, *, workflow_id: int, subject_ids: Sequence[int]
    ) -> list[SubjectWorkflowStatusPayload]:
        """Retirement state and counts of subjects in a workflow, 100 subject ids per request."""
        found: list[SubjectWorkflowStatusPayload] = []
        for batch in _batches(subject_ids):
            params = {"workflow_id": workflow_id, "subject_ids": ",".join(batch)}
            for rows in self.pages(
                "/subject_workflow_statuses", "subject_workflow_statuses", params
            ):
                found.extend(rows)
        return found

    # -- subject sets and subjects -----------------------------------------------------------

    def subject_sets(self, *, project_id: int) -> list[SubjectSetPayload]:
        sets: list[SubjectSetPayload] = []
        for rows in self.pages("/subject_sets", "subject_sets", {"project_id": project_id}):
            sets.extend(rows)
        return sets

    def subject_set_get(self, subject_set_id: int) -> SubjectSetPayload:
        rows = self.get(f"/subject_sets/{subject_set_id}").get("subject_sets") or []
        if not rows:
            raise NotFoundError(f"subject set {subject_set_id} not found", status=404)
        return rows[0]

    def subject_set_find(
        self, *, project_id: int, display_name: str, key: str | None = None
    ) -> SubjectSetPayload | None:
        """The project's subject set with this name (and ``metadata.crowdloop_key`` when given).

        Panoptes has no search by name that we rely on, so the project's sets are listed; a
        project holds tens of sets, not thousands.
        """
        for subject_set in self.subject_sets(project_id=project_id):
            if subject_set.get("display_name") != display_name:
                continue
            if key is not None and (subject_set.get("metadata") or {}).get("crowdloop_key") != key:
                continue
            return subject_set
        return None

    def subject_set_ensure(
        self, *, project_id: int, display_name: str, key: str
    ) -> tuple[SubjectSetPayload, bool]:
        """The subject set named ``display_name`` tagged ``key``, created once; (set, created)."""
        existing = self.subject_set_find(project_id=project_id, display_name=display_name, key=key)
        if existing is not None:
            return existing, False
        body = {
            "subject_sets": {
                "display_name": display_name,
                "metadata": {"crowdloop_key": key},
                "links": {"project": str(project_id)},
            }
        }
        created = self._create_once(
            "/subject_sets",
            "subject_sets",
            body,
            lookup=lambda: self.subject_set_find(
                project_id=project_id, display_name=display_name, key=key
            ),
            what=f"subject set {display_name!r}",
        )
        return created, True

    def subjects_in_set(self, subject_set_id: int) -> list[SubjectPayload]:
        """Every subject of a set: ``GET /subjects?subject_set_id=``, 100 a page."""
        subjects: list[SubjectPayload] = []
        for rows in self.pages("/subjects", "subjects", {"subject_set_id": subject_set_id}):
            subjects.extend(rows)
        return subjects

    def subjects_get(self, subject_ids: Sequence[int]) -> list[SubjectPayload]:
        """Subjects by id, 100 ids per request (``GET /subjects?id=1,2,3``)."""
        found: list[SubjectPayload] = []
        for batch in _batches(subject_ids):
            for rows in self.pages("/subjects", "subjects", {"id": ",".join(batch)}):
                found.extend(rows)
        return found

    def subject_find(self, *, subject_set_id: int, external_id: str) -> SubjectPayload | None:
        """The subject of the set whose ``metadata.external_id`` is ``external_id``, if any.

        Real Panoptes cannot search metadata, so this lists the set (its subjects carry their
        metadata) and matches; a round is hundreds of subjects, a few pages. Subjects are created
        with their set link in the same POST, so a create that succeeded server-side is visible
        here even when its response was lost.
        """
        # ``metadata.external_id`` narrows the listing on the sandbox; real Panoptes ignores it
        # and lists the whole set, so the match is always checked here.
        params = {"subject_set_id": subject_set_id, "metadata.external_id": external_id}
        for rows in self.pages("/subjects", "subjects", params):
            for subject in rows:
                if str((subject.get("metadata") or {}).get("external_id")) == external_id:
                    return subject
        return None

    def subject_create(
        self,
        *,
        project_id: int,
        subject_set_id: int,
        external_id: str,
        locations: list[dict[str, str] | str],
        metadata: dict[str, Any],
        lookup: Callable[[], SubjectPayload | None] | None = None,
    ) -> SubjectPayload:
        """Create one subject, linked to its project and subject set, never twice.

        A location is ``{"image/jpeg": url}`` for a remote image, or a type (``"image/png"``) for
        a file to upload: the answer then holds a signed URL to ``PUT`` it to
        (:meth:`media_upload`).

        ``POST /subjects`` is sent once per attempt (the session does not repeat it, and the
        library's ``Subject.save`` with its retry-on-any-error is not used). After a transient
        failure the subject is looked up by ``external_id`` (``lookup``, by default
        :meth:`subject_find` on the set) and re-sent only when it is not there.
        """
        body = {
            "subjects": {
                "locations": locations,
                "metadata": {**metadata, "external_id": external_id},
                "links": {"project": str(project_id), "subject_sets": [str(subject_set_id)]},
            }
        }
        return self._create_once(
            "/subjects",
            "subjects",
            body,
            lookup=lookup
            or (lambda: self.subject_find(subject_set_id=subject_set_id, external_id=external_id)),
            what=f"subject {external_id!r}",
        )

    def subject_locations_renew(
        self, *, subject_id: int, content_types: Sequence[str]
    ) -> SubjectPayload:
        """Ask again for upload URLs: ``PUT /subjects/{id}`` with local-file locations
        (``["image/png"]``), as a save of a subject with new files does; Panoptes answers with a
        fresh signed URL for each. For a subject whose create answer, and with it the upload URL,
        was lost. Idempotent: each call only replaces the locations."""
        try:
            _, etag = self.panoptes.get(f"/subjects/{subject_id}")
            answer, _ = self.panoptes.put(
                f"/subjects/{subject_id}",
                json={"subjects": {"locations": list(content_types)}},
                etag=etag,
            )
        except PanoptesAPIException as exc:
            raise FatalError(f"subject {subject_id}: new upload URL: {exc}") from exc
        rows = (answer or {}).get("subjects") or []
        if not rows:
            raise FatalError(f"PUT /subjects/{subject_id}: the response held no subjects")
        return rows[0]

    def media_upload(self, *, url: str, content_type: str, data: bytes) -> None:
        """PUT a file's bytes to the signed storage URL of a subject location.

        The same headers as the library's upload (Azure block blobs), the session's timeouts and
        retries (a PUT of the same bytes is idempotent), and no Panoptes token: ``url`` is a
        storage URL that carries its own signature.
        """
        response = self.panoptes.session.put(
            url, data=data, headers={"Content-Type": content_type, "x-ms-blob-type": "BlockBlob"}
        )
        response.close()

    def subject_set_add(self, *, subject_set_id: int, subject_ids: Sequence[int]) -> int:
        """Link subjects to a set in batches of 100, skipping members; the number linked.

        ``POST /subject_sets/{id}/links/subjects`` directly: the library's ``add`` costs a GET
        per subject.
        """
        members = {str(s.get("id")) for s in self.subjects_in_set(subject_set_id)}
        missing = [str(i) for i in subject_ids if str(i) not in members]
        for batch in _batches(missing):
            self.post(f"/subject_sets/{subject_set_id}/links/subjects", {"subjects": batch})
        return len(missing)

    def _create_once(
        self,
        path: str,
        slug: str,
        body: dict[str, Any],
        *,
        lookup: Callable[[], PayloadT | None],
        what: str,
    ) -> PayloadT:
        """POST a create; after a transient failure, look before re-sending."""
        attempt = 0
        while True:
            attempt += 1
            if attempt > 1:
                # The failed POST may have been stored with only its answer lost: find it first.
                found = lookup()
                if found is not None:
                    logger.info("Zooniverse %s was created by an earlier attempt", what)
                    return found
            try:
                rows = self.post(path, body, once=True).get(slug) or []
            except TransientError as exc:
                if attempt >= self.policy.max_attempts:
                    raise
                delay = max(self._backoff(attempt), exc.retry_after or 0.0)
                self.retries += 1
                logger.warning(
                    "Zooniverse create of %s failed (%s); checking before resending", what, exc
                )
                self._wait(delay, why=f"create {what}")
                continue
            if not rows:
                raise FatalError(f"POST {path}: the response held no {slug}")
            return rows[0]


# -- connecting --------------------------------------------------------------------------------


def connect(
    *,
    endpoint: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    username: str | None = None,
    password: str | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> ZooniverseClient:
    """A :class:`ZooniverseClient` from arguments, else from settings.

    Client credentials when a secret is set (``grant_type=client_credentials``), else username
    and password (the sign-in form, then ``grant_type=password``), else anonymous. The client is
    not installed as the library's thread-local default: callers use it explicitly, so two tasks
    in one process never share a login.

    The library's constructor would log in at once, before our timeouts are mounted, and falls
    back to ``PANOPTES_*`` environment variables for anything passed as ``None``; so it is built
    with empty credentials, wrapped, and only then given the real ones and asked to log in.
    """
    from django.conf import settings

    endpoint = (endpoint or settings.PANOPTES_ENDPOINT or "https://www.zooniverse.org").rstrip("/")
    client_id = client_id if client_id is not None else settings.PANOPTES_CLIENT_ID
    client_secret = client_secret if client_secret is not None else settings.PANOPTES_CLIENT_SECRET
    username = username if username is not None else settings.PANOPTES_USERNAME
    password = password if password is not None else settings.PANOPTES_PASSWORD

    panoptes = Panoptes(endpoint=endpoint, username="", password="")
    panoptes.client_secret = client_secret or None
    if client_id:
        panoptes.client_id = client_id
    client = ZooniverseClient(
        panoptes=panoptes,
        policy=policy or policy_from_settings(),
        sleep=sleep,
        clock=clock,
        rng=rng or random.Random(),
    )
    if client_secret:
        auth = "client credentials"
        # The token is fetched now, so bad credentials fail here and not mid-sync.
        panoptes.get_bearer_token()
    elif username and password:
        auth = f"user {username}"
        panoptes.username, panoptes.password = username, password
        try:
            panoptes.login()
        except PanoptesAPIException as exc:
            raise FatalError(f"Zooniverse log-in failed for {username}: {exc}") from exc
    else:
        auth = "anonymous"
    logger.info("Connected to Zooniverse at %s (%s)", endpoint, auth)
    return client


def is_configured() -> bool:
    """Whether settings name a Zooniverse endpoint and project to sync with."""
    from django.conf import settings

    return bool(settings.PANOPTES_ENDPOINT and settings.PANOPTES_PROJECT_ID)
