"""The Panoptes JSON payloads the client reads and sends, as ``TypedDict``s.

They describe the wire format only (string ids, as Panoptes sends them) and hold no client logic,
so the local sandbox can serve the same shapes.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class PageMeta(TypedDict, total=False):
    page: int
    page_size: int
    count: int
    page_count: int
    next_page: int | None
    next_href: str | None


class ClassificationLinks(TypedDict, total=False):
    project: str
    user: str | None
    user_group: str | None
    workflow: str
    subjects: list[str]


class AnnotationPayload(TypedDict, total=False):
    task: str
    value: Any


class ClassificationPayload(TypedDict, total=False):
    id: str
    created_at: str
    updated_at: str
    metadata: dict[str, Any]
    annotations: list[AnnotationPayload]
    gold_standard: bool | None
    expert_classifier: Any
    links: ClassificationLinks


class SubjectPayload(TypedDict, total=False):
    id: str
    locations: list[dict[str, str]]
    metadata: dict[str, Any]
    links: dict[str, Any]


class SubjectSetPayload(TypedDict, total=False):
    id: str
    display_name: str
    metadata: dict[str, Any]
    set_member_subjects_count: int
    links: dict[str, Any]


class WorkflowPayload(TypedDict, total=False):
    id: str
    display_name: str
    version: str
    tasks: dict[str, Any]
    links: dict[str, Any]


class WorkflowVersionPayload(TypedDict, total=False):
    id: str
    major_number: int
    minor_number: int
    tasks: dict[str, Any]
    strings: dict[str, str]
    links: dict[str, Any]


class SubjectWorkflowStatusPayload(TypedDict, total=False):
    id: str
    classifications_count: int
    retired_at: str | None
    retirement_reason: str | None
    links: dict[str, Any]


class ExportMediaPayload(TypedDict):
    id: NotRequired[str]
    src: str
    content_type: NotRequired[str]
    metadata: NotRequired[dict[str, Any]]
    created_at: NotRequired[str]
    updated_at: NotRequired[str]
