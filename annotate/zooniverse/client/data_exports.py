"""Panoptes data exports: request one, wait until it is no older than the request, download it.

An export is read with our own deadline, refused when older than the request
(Panoptes-Front-End#1257), capped in bytes, streamed to a temporary file and deleted when cut
short. :class:`PanoptesExports` adds these methods to the transport; ``ZooniverseClient`` has them.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from annotate.zooniverse.client.errors import (
    ExportIncomplete,
    ExportNotReady,
    ExportStale,
    ExportTooLarge,
)
from annotate.zooniverse.client.payloads import ExportMediaPayload
from annotate.zooniverse.client.transport import NETWORK_ERRORS, PanoptesTransport


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class PanoptesExports(PanoptesTransport):
    """The export calls, on the transport's session, timeouts and wall budget."""

    def export_describe(
        self, *, resource: Literal["projects", "workflows"], resource_id: int, export_type: str
    ) -> ExportMediaPayload | None:
        media = self.get(f"/{resource}/{resource_id}/{export_type}_export").get("media") or []
        return media[0] if media else None

    def export_request(
        self, *, resource: Literal["projects", "workflows"], resource_id: int, export_type: str
    ) -> datetime:
        """Ask Panoptes for a fresh export; the time an acceptable export must not predate.

        That is the later of the media's own ``updated_at`` in the response (server clock, so no
        skew against the finished export's stamp) and our request time less ``clock_skew_s``: a
        response that echoes an old export (Panoptes-Front-End#1257) must not lower the bar.
        """
        requested_at = self.now() - timedelta(seconds=self.policy.clock_skew_s)
        body = self.post(
            f"/{resource}/{resource_id}/{export_type}_export",
            {"media": {"content_type": "text/csv"}},
        )
        media = body.get("media") or []
        stamp = None
        if media:
            stamp = _parse_time(media[0].get("updated_at") or media[0].get("created_at"))
        return max(stamp, requested_at) if stamp else requested_at

    def export_wait(
        self,
        *,
        resource: Literal["projects", "workflows"],
        resource_id: int,
        export_type: str,
        not_before: datetime,
        deadline_s: float = 3600.0,
        poll_s: float = 15.0,
    ) -> ExportMediaPayload:
        """Poll until an export updated at or after ``not_before`` is ready, within our deadline.

        Raises :class:`ExportNotReady` when none is ready in time (stuck in ``creating``) and
        :class:`ExportStale` when only an older one is on offer.
        """
        deadline = self.clock() + deadline_s
        stale: ExportMediaPayload | None = None
        while True:
            media = self.export_describe(
                resource=resource, resource_id=resource_id, export_type=export_type
            )
            if media is not None:
                state = (media.get("metadata") or {}).get("state", "")
                updated = _parse_time(media.get("updated_at"))
                fresh = updated is not None and updated >= not_before
                if state in ("ready", "finished"):
                    if fresh:
                        return media
                    stale = media
            left = deadline - self.clock()
            if left <= 0:
                if stale is not None:
                    raise ExportStale(
                        f"{export_type} export of {resource} {resource_id}: only an export from "
                        f"{stale.get('updated_at')} is ready, older than the request at "
                        f"{not_before.isoformat()}"
                    )
                raise ExportNotReady(
                    f"{export_type} export of {resource} {resource_id} not ready within "
                    f"{deadline_s:.0f} s"
                )
            self._wait(min(poll_s, left), why="export wait")

    def export_download(
        self,
        *,
        media: ExportMediaPayload,
        directory: Path,
        max_bytes: int,
        deadline_s: float = 1800.0,
        chunk_size: int = 1 << 16,
    ) -> Path:
        """Stream the export file to a temporary file in ``directory``; its path.

        The file is deleted on any failure: a cut body (``ExportIncomplete``), more bytes than
        ``max_bytes`` (``ExportTooLarge``) or the deadline. The caller parses it and deletes it.
        The download uses the same session (timeouts, retries of the initial response) but
        carries no Panoptes token: ``src`` is a plain storage URL.
        """
        directory.mkdir(parents=True, exist_ok=True)
        deadline = self.clock() + deadline_s
        handle = tempfile.NamedTemporaryFile(
            dir=directory, prefix="export-", suffix=".part", delete=False
        )
        path = Path(handle.name)
        try:
            with handle:
                response = self.panoptes.session.get(media["src"], stream=True)
                with response:
                    expected = response.headers.get("Content-Length")
                    written = 0
                    try:
                        for chunk in response.iter_content(chunk_size=chunk_size):
                            written += len(chunk)
                            if written > max_bytes:
                                raise ExportTooLarge(
                                    f"export larger than the cap of {max_bytes} bytes"
                                )
                            if self.clock() > deadline:
                                raise ExportNotReady(
                                    f"export download passed its deadline of {deadline_s:.0f} s"
                                )
                            handle.write(chunk)
                    except NETWORK_ERRORS as exc:
                        raise ExportIncomplete(
                            f"export download cut after {written} bytes ({type(exc).__name__})"
                        ) from exc
                    if expected is not None and expected.isdigit() and written != int(expected):
                        raise ExportIncomplete(
                            f"export download ended at {written} of {expected} bytes"
                        )
            final = path.with_suffix(".csv")
            path.replace(final)
            return final
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def export_fetch(
        self,
        *,
        resource: Literal["projects", "workflows"],
        resource_id: int,
        directory: Path,
        max_bytes: int,
        export_type: str = "classifications",
        generate: bool = True,
        not_before: datetime | None = None,
        deadline_s: float = 3600.0,
        poll_s: float = 15.0,
    ) -> Path:
        """Request (or reuse) an export, wait for one no older than the request, download it.

        With ``generate=False`` the latest export is used if it is no older than ``not_before``.
        """
        if generate:
            not_before = self.export_request(
                resource=resource, resource_id=resource_id, export_type=export_type
            )
        elif not_before is None:
            not_before = self.now() - timedelta(days=1)
        started = self.clock()
        media = self.export_wait(
            resource=resource,
            resource_id=resource_id,
            export_type=export_type,
            not_before=not_before,
            deadline_s=deadline_s,
            poll_s=poll_s,
        )
        left = max(1.0, deadline_s - (self.clock() - started))
        return self.export_download(
            media=media, directory=directory, max_bytes=max_bytes, deadline_s=left
        )
