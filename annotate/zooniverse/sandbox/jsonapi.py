"""Panoptes' JSON-API: resources serialised from the store, pages and single documents."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlencode

from .faults import FaultAction
from .records import (
    ClassificationRecord,
    ExportRecord,
    ProjectRecord,
    SetMemberSubjectRecord,
    StatusRecord,
    SubjectRecord,
    SubjectSetRecord,
    WorkflowRecord,
    WorkflowVersionRecord,
    by_id,
)
from .store import Store
from .wire import ApiError, Request, Response, etag_for, int_param, json_response, str_ids


class JsonApi:
    """Serialises the store's objects as Panoptes' JSON-API resources."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def project(self, p: ProjectRecord) -> dict[str, Any]:
        return {
            "id": str(p.id),
            "display_name": p.display_name,
            "slug": p.slug,
            "description": "Local stand-in for a Zooniverse project.",
            "primary_language": "en",
            "private": False,
            "launch_approved": False,
            "live": True,
            "configuration": {},
            "classifications_count": sum(
                1 for c in self.store.state.classifications.values() if c.project_id == p.id
            ),
            "subjects_count": sum(
                1 for s in self.store.state.subjects.values() if s.project_id == p.id
            ),
            "created_at": p.created_at,
            "updated_at": p.updated_at,
            "href": f"/projects/{p.id}",
            "links": {
                "workflows": str_ids(p.workflow_ids),
                "active_workflows": str_ids(
                    w for w in p.workflow_ids if self.store.state.workflows[w].active
                ),
                "subject_sets": str_ids(p.subject_set_ids),
                "owner": {
                    "id": "1",
                    "display_name": "crowdloop",
                    "type": "users",
                    "href": "/users/1",
                },
            },
        }

    def workflow(self, w: WorkflowRecord) -> dict[str, Any]:
        linked = {
            m.subject_id
            for m in self.store.state.set_member_subjects.values()
            if m.subject_set_id in w.subject_set_ids
        }
        retired = sum(
            1
            for s in self.store.state.statuses.values()
            if s.workflow_id == w.id and s.retired_at is not None
        )
        return {
            "id": str(w.id),
            "display_name": w.display_name,
            "tasks": w.tasks,
            "strings": w.strings,
            "first_task": w.first_task,
            "primary_language": w.primary_language,
            "version": w.version_string,
            "content_language": w.primary_language,
            "prioritized": w.prioritized,
            "grouped": w.grouped,
            "pairwise": w.pairwise,
            "retirement": w.retirement,
            "active": w.active,
            "mobile_friendly": False,
            "configuration": {},
            "aggregation": {},
            "classifications_count": w.classifications_count,
            "subjects_count": len(linked),
            "retired_set_member_subjects_count": retired,
            "completeness": (retired / len(linked)) if linked else 0.0,
            "created_at": w.created_at,
            "updated_at": w.updated_at,
            "href": f"/workflows/{w.id}",
            "links": {
                "project": str(w.project_id),
                "subject_sets": str_ids(w.subject_set_ids),
                "tutorial_subject": None,
            },
        }

    def workflow_version(self, v: WorkflowVersionRecord) -> dict[str, Any]:
        return {
            "id": str(v.id),
            "major_number": v.major_number,
            "minor_number": v.minor_number,
            "first_task": v.first_task,
            "tasks": v.tasks,
            "strings": v.strings,
            "created_at": v.created_at,
            "updated_at": v.created_at,
            "href": f"/workflow_versions/{v.id}",
            "links": {"workflow": str(v.workflow_id)},
        }

    def subject_set(self, s: SubjectSetRecord) -> dict[str, Any]:
        members = sorted(self.store.members_of_set(s.id), key=by_id)
        return {
            "id": str(s.id),
            "display_name": s.display_name,
            "metadata": s.metadata,
            "set_member_subjects_count": len(members),
            "created_at": s.created_at,
            "updated_at": s.updated_at,
            "href": f"/subject_sets/{s.id}",
            "links": {
                "project": str(s.project_id),
                "workflows": str_ids(self.store.workflows_of_set(s.id)),
                "subjects": str_ids(m.subject_id for m in members),
            },
        }

    def subject(self, s: SubjectRecord) -> dict[str, Any]:
        return {
            "id": str(s.id),
            "metadata": s.metadata,
            "locations": s.locations,
            "zooniverse_id": None,
            "external_id": None,
            "created_at": s.created_at,
            "updated_at": s.updated_at,
            "href": f"/subjects/{s.id}",
            "links": {
                "project": str(s.project_id),
                "collections": [],
                "subject_sets": str_ids(self.store.sets_of_subject(s.id)),
            },
        }

    def member(self, m: SetMemberSubjectRecord) -> dict[str, Any]:
        retired_in = [
            str(w)
            for w in self.store.workflows_of_set(m.subject_set_id)
            if self.store.is_retired(m.subject_id, w)
        ]
        return {
            "id": str(m.id),
            "state": "active",
            "priority": m.priority,
            "created_at": m.created_at,
            "updated_at": m.updated_at,
            "href": f"/set_member_subjects/{m.id}",
            "links": {
                "subject": str(m.subject_id),
                "subject_set": str(m.subject_set_id),
                "retired_workflows": retired_in,
            },
        }

    def status(self, s: StatusRecord) -> dict[str, Any]:
        return {
            "id": str(s.id),
            "classifications_count": s.classifications_count,
            "retired_at": s.retired_at,
            "retirement_reason": s.retirement_reason,
            "created_at": s.created_at,
            "updated_at": s.updated_at,
            "href": f"/subject_workflow_statuses/{s.id}",
            "links": {"workflow": str(s.workflow_id), "subject": str(s.subject_id)},
        }

    def classification(self, c: ClassificationRecord) -> dict[str, Any]:
        return {
            "id": str(c.id),
            "created_at": c.created_at,
            "updated_at": c.created_at,
            "completed": True,
            "gold_standard": True if c.gold_standard else None,
            "expert_classifier": "expert" if c.expert else None,
            "metadata": c.metadata,
            "annotations": c.annotations,
            "href": f"/classifications/{c.id}",
            "links": {
                "project": str(c.project_id),
                "user": None if c.user_id is None else str(c.user_id),
                "user_group": None,
                "workflow": str(c.workflow_id),
                "subjects": str_ids(c.subject_ids),
            },
        }

    def export(self, e: ExportRecord, base_url: str) -> dict[str, Any]:
        owner_singular = "project" if e.owner_type == "projects" else "workflow"
        return {
            "id": str(e.id),
            "href": f"/{e.owner_type}/{e.owner_id}/{e.export_type}_export",
            "src": f"{base_url}/media/exports/{e.id}/{owner_singular}-{e.owner_id}-"
            f"{e.export_type}.csv",
            "content_type": "text/csv",
            "media_type": f"{owner_singular}_{e.export_type}_export",
            "external_link": False,
            "metadata": {"state": e.state},
            "created_at": e.created_at,
            "updated_at": e.updated_at,
            "links": {
                "linked": {
                    "href": f"/{e.owner_type}/{e.owner_id}",
                    "id": str(e.owner_id),
                    "type": e.owner_type,
                }
            },
        }


def page_of(
    req: Request,
    slug: str,
    path: str,
    resources: list[dict[str, Any]],
    fault: FaultAction | None,
    *,
    max_size: int = 100,
) -> Response:
    page_size = min(max(int_param(req.query.get("page_size", 20), "page_size"), 1), max_size)
    page = max(int_param(req.query.get("page", 1), "page"), 1)
    count = len(resources)
    page_count = math.ceil(count / page_size) if count else 0
    chunk = resources[(page - 1) * page_size : page * page_size]
    if fault is not None and fault.kind == "empty_page":
        chunk = []
    elif fault is not None and fault.kind == "repeat_id" and chunk:
        start = (page - 1) * page_size
        chunk = [resources[start - 1] if start > 0 else chunk[0], *chunk]
    params = {k: v for k, v in req.query.items() if k not in ("page", "admin")}
    params["page_size"] = str(page_size)

    def href(n: int | None) -> str | None:
        return None if n is None else f"{path}?{urlencode(sorted({**params, 'page': n}.items()))}"

    empty_fault = fault is not None and fault.kind == "empty_page"
    next_page = page + 1 if page < page_count and not empty_fault else None
    meta = {
        "page": page,
        "page_size": page_size,
        "count": count,
        "include": [],
        "page_count": page_count,
        "previous_page": page - 1 if page > 1 else None,
        "next_page": next_page,
        "first_href": href(1),
        "previous_href": href(page - 1 if page > 1 else None),
        "next_href": href(next_page),
        "last_href": href(page_count or 1),
    }
    return json_response(
        200, {slug: chunk, "links": {}, "meta": {slug: meta}}, {"ETag": etag_for(chunk)}
    )


def document(
    slug: str,
    resources: list[dict[str, Any]],
    status: int = 200,
    extra: dict[str, str] | None = None,
) -> Response:
    headers = {"ETag": etag_for(resources), **(extra or {})}
    return json_response(status, {slug: resources, "links": {}, "meta": {}}, headers)


def request_body(req: Request, slug: str) -> dict[str, Any]:
    data = req.json()
    body = data.get(slug) if isinstance(data, dict) else None
    if not isinstance(body, dict):
        raise ApiError(422, f"param is missing or the value is empty: {slug}")
    return body


def check_if_match(req: Request, current: dict[str, Any]) -> None:
    given = req.headers.get("if-match")
    if not given:
        raise ApiError(428, "Precondition required: send If-Match with the resource's ETag")
    if given != etag_for([current]):
        raise ApiError(412, "Precondition failed: the resource changed since it was read")


def link_id(links: Any, name: str) -> int | None:
    if not isinstance(links, dict) or links.get(name) in (None, ""):
        return None
    return int_param(links[name], f"links.{name}")
