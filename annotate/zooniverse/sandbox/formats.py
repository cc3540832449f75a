"""Timestamps and JSON cells as Panoptes writes them, on the wire and in its exports."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Panoptes' API timestamp format: ``2024-02-21T09:44:28.745Z``."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def csv_time(value: str | None) -> str:
    """The exports' timestamp format: ``2024-02-23 16:17:42 UTC``."""
    if not value:
        return ""
    return parse_iso(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def compact_json(value: Any) -> str:
    # Panoptes writes JSON cells with Ruby's to_json: no spaces after separators.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
