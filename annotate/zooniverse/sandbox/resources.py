"""The /api handlers, one per route: Panoptes' resources read and changed in the store."""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from .csv_exports import EXPORT_TYPES, Exports
from .faults import FaultAction
from .jsonapi import JsonApi, check_if_match, document, link_id, page_of, request_body
from .oauth import Auth
from .records import ClassificationRecord, by_id
from .store import Store, priority_of
from .wire import (
    ApiError,
    Request,
    Response,
    etag_for,
    id_list_param,
    int_param,
    json_response,
    no_content,
)


class Resources:
    """The handlers of the /api routes: each reads or changes the store under its lock."""

    def __init__(self, store: Store, jsonapi: JsonApi, exports: Exports, auth: Auth) -> None:
        self.store = store
        self.jsonapi = jsonapi
        self.exports = exports
        self.auth = auth

    def list_projects(self, req: Request, fault: FaultAction | None) -> Response:
        ids = id_list_param(req.query.get("id"), "id")
        items = [
            self.jsonapi.project(p)
            for p in sorted(self.store.state.projects.values(), key=by_id)
            if ids is None or p.id in ids
        ]
        return page_of(req, "projects", "/projects", items, fault)

    def show_project(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        return document("projects", [self.jsonapi.project(self.store.project_record(int(id)))])

    def list_subject_sets(self, req: Request, fault: FaultAction | None) -> Response:
        ids = id_list_param(req.query.get("id"), "id")
        project = req.query.get("project_id")
        workflow = req.query.get("workflow_id")
        name = req.query.get("display_name")
        items = []
        for s in sorted(self.store.state.subject_sets.values(), key=by_id):
            if ids is not None and s.id not in ids:
                continue
            if project and s.project_id != int_param(project, "project_id"):
                continue
            if workflow and int_param(workflow, "workflow_id") not in self.store.workflows_of_set(
                s.id
            ):
                continue
            if name is not None and s.display_name != name:
                continue
            items.append(self.jsonapi.subject_set(s))
        return page_of(req, "subject_sets", "/subject_sets", items, fault)

    def show_subject_set(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        ids = id_list_param(id, "id") or []
        return document(
            "subject_sets",
            [self.jsonapi.subject_set(self.store.subject_set_record(i)) for i in ids],
        )

    def create_subject_set(self, req: Request, fault: FaultAction | None) -> Response:
        body = request_body(req, "subject_sets")
        project_id = link_id(body.get("links"), "project")
        if project_id is None:
            raise ApiError(422, "links.project is required")
        if not body.get("display_name"):
            raise ApiError(400, "Validation failed: display_name can't be blank")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise ApiError(422, "metadata must be an object")
        set_id = self.store.create_subject_set(
            str(body["display_name"]), project_id=project_id, metadata=metadata
        )
        record = self.jsonapi.subject_set(self.store.state.subject_sets[set_id])
        return document(
            "subject_sets", [record], 201, {"Location": f"{req.base_url}/api/subject_sets/{set_id}"}
        )

    def update_subject_set(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        subject_set = self.store.subject_set_record(int(id))
        check_if_match(req, self.jsonapi.subject_set(subject_set))
        body = request_body(req, "subject_sets")
        if "display_name" in body:
            subject_set.display_name = str(body["display_name"])
        if "metadata" in body:
            if not isinstance(body["metadata"], dict):
                raise ApiError(422, "metadata must be an object")
            subject_set.metadata = body["metadata"]
        subject_set.updated_at = self.store.now()
        subject_set.lock_version += 1
        self.store.save()
        return document("subject_sets", [self.jsonapi.subject_set(subject_set)])

    def link_subjects(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        data = req.json()
        ids = data.get("subjects") if isinstance(data, dict) else None
        if not isinstance(ids, list) or not ids:
            raise ApiError(422, "param is missing or the value is empty: subjects")
        self.store.link_subjects(int(id), [int_param(i, "subjects") for i in ids])
        self.store.save()
        return document(
            "subject_sets", [self.jsonapi.subject_set(self.store.state.subject_sets[int(id)])]
        )

    def unlink_subjects(
        self, req: Request, fault: FaultAction | None, id: str, ids: str
    ) -> Response:
        self.store.subject_set_record(int(id))
        drop = set(id_list_param(ids, "subjects") or [])
        for member in self.store.members_of_set(int(id)):
            if member.subject_id in drop:
                self.store.drop_member(member)
        self.store.save()
        return no_content()

    def list_subjects(self, req: Request, fault: FaultAction | None) -> Response:
        ids = id_list_param(req.query.get("id"), "id")
        set_id = req.query.get("subject_set_id")
        project = req.query.get("project_id")
        workflow = req.query.get("workflow_id")
        # Sandbox extension: metadata.<key>=<value> filters on subject metadata (as text).
        wanted = {
            k[len("metadata.") :]: v for k, v in req.query.items() if k.startswith("metadata.")
        }
        in_set = None
        linked: set[int] = set()
        if set_id:
            in_set = [
                m.subject_id
                for m in sorted(
                    self.store.members_of_set(int_param(set_id, "subject_set_id")), key=by_id
                )
            ]
        if workflow:
            linked = set(self.store.linked_subject_ids(int_param(workflow, "workflow_id")))
        candidates = (
            [self.store.state.subjects[i] for i in in_set]
            if in_set is not None
            else sorted(self.store.state.subjects.values(), key=by_id)
        )
        items = []
        for s in candidates:
            if ids is not None and s.id not in ids:
                continue
            if project and s.project_id != int_param(project, "project_id"):
                continue
            if workflow and s.id not in linked:
                continue
            if any(str(s.metadata.get(k)) != v for k, v in wanted.items()):
                continue
            items.append(self.jsonapi.subject(s))
        return page_of(req, "subjects", "/subjects", items, fault)

    def show_subject(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        out = []
        for i in id_list_param(id, "id") or []:
            if i not in self.store.state.subjects:
                raise ApiError(404, f"Could not find subject with id='{i}'")
            out.append(self.jsonapi.subject(self.store.state.subjects[i]))
        return document("subjects", out)

    def create_subject(self, req: Request, fault: FaultAction | None) -> Response:
        body = request_body(req, "subjects")
        links = body.get("links") or {}
        project_id = link_id(links, "project")
        if project_id is None:
            raise ApiError(422, "links.project is required")
        self.store.project_record(project_id)
        locations = self._locations(req, body.get("locations"))
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise ApiError(422, "metadata must be an object")
        set_ids = links.get("subject_sets") or []
        if not isinstance(set_ids, list):
            set_ids = [set_ids]
        for set_id in set_ids:
            self.store.subject_set_record(int_param(set_id, "links.subject_sets"))
        subject = self.store.new_subject(project_id, locations, metadata)
        for set_id in set_ids:
            self.store.link_subjects(int_param(set_id, "links.subject_sets"), [subject.id])
        self.store.save()
        return document(
            "subjects",
            [self.jsonapi.subject(subject)],
            201,
            {"Location": f"{req.base_url}/api/subjects/{subject.id}"},
        )

    def _locations(self, req: Request, locations: Any) -> list[dict[str, str]]:
        if not isinstance(locations, list) or not locations:
            raise ApiError(422, "locations must be a non-empty list")
        out = []
        for loc in locations:
            if isinstance(loc, dict) and len(loc) == 1:
                out.append({str(k): str(v) for k, v in loc.items()})
            elif isinstance(loc, str) and "/" in loc:
                # A local file: Panoptes answers with a signed URL to PUT the bytes to.
                ext = loc.split("/", 1)[1].split("+")[0]
                out.append({loc: f"{req.base_url}/media/uploads/{uuid.uuid4().hex}.{ext}"})
            else:
                raise ApiError(422, f"invalid location {loc!r}")
        return out

    def update_subject(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        subject = self.store.state.subjects.get(int(id))
        if subject is None:
            raise ApiError(404, f"Could not find subject with id='{id}'")
        check_if_match(req, self.jsonapi.subject(subject))
        body = request_body(req, "subjects")
        if "metadata" in body:
            if not isinstance(body["metadata"], dict):
                raise ApiError(422, "metadata must be an object")
            subject.metadata = body["metadata"]
            # SubjectMetadataWorker copies #priority to the subject's set memberships.
            for member in self.store.state.set_member_subjects.values():
                if member.subject_id == subject.id:
                    member.priority = priority_of(subject.metadata)
        if "locations" in body:
            subject.locations = self._locations(req, body["locations"])
        subject.updated_at = self.store.now()
        subject.lock_version += 1
        self.store.save()
        return document("subjects", [self.jsonapi.subject(subject)])

    def delete_subject(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        subject = self.store.state.subjects.get(int(id))
        if subject is None:
            raise ApiError(404, f"Could not find subject with id='{id}'")
        check_if_match(req, self.jsonapi.subject(subject))
        self.store.remove_subject(subject.id)
        self.store.save()
        return no_content()

    def list_members(self, req: Request, fault: FaultAction | None) -> Response:
        set_ids = id_list_param(req.query.get("subject_set_id"), "subject_set_id")
        subject_ids = id_list_param(req.query.get("subject_id"), "subject_id")
        ids = id_list_param(req.query.get("id"), "id")
        if set_ids is not None:
            pool = [m for set_id in set_ids for m in self.store.members_of_set(set_id)]
        else:
            pool = list(self.store.state.set_member_subjects.values())
        items = [
            self.jsonapi.member(m)
            for m in sorted(pool, key=by_id)
            if (set_ids is None or m.subject_set_id in set_ids)
            and (subject_ids is None or m.subject_id in subject_ids)
            and (ids is None or m.id in ids)
        ]
        return page_of(req, "set_member_subjects", "/set_member_subjects", items, fault)

    def show_member(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        member = self.store.state.set_member_subjects.get(int(id))
        if member is None:
            raise ApiError(404, f"Could not find set_member_subject with id='{id}'")
        return document("set_member_subjects", [self.jsonapi.member(member)])

    def update_member(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        member = self.store.state.set_member_subjects.get(int(id))
        if member is None:
            raise ApiError(404, f"Could not find set_member_subject with id='{id}'")
        check_if_match(req, self.jsonapi.member(member))
        body = request_body(req, "set_member_subjects")
        if "priority" in body:
            value = body["priority"]
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise ApiError(422, "priority must be a number or null")
            member.priority = None if value is None else float(value)
        member.updated_at = self.store.now()
        member.lock_version += 1
        self.store.save()
        return document("set_member_subjects", [self.jsonapi.member(member)])

    def list_workflows(self, req: Request, fault: FaultAction | None) -> Response:
        ids = id_list_param(req.query.get("id"), "id")
        project = req.query.get("project_id")
        items = [
            self.jsonapi.workflow(w)
            for w in sorted(self.store.state.workflows.values(), key=by_id)
            if (ids is None or w.id in ids)
            and (not project or w.project_id == int_param(project, "project_id"))
        ]
        return page_of(req, "workflows", "/workflows", items, fault, max_size=25)

    def show_workflow(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        return document("workflows", [self.jsonapi.workflow(self.store.workflow_record(int(id)))])

    def list_workflow_versions(self, req: Request, fault: FaultAction | None) -> Response:
        workflow = req.query.get("workflow_id")
        items = [
            self.jsonapi.workflow_version(v)
            for v in sorted(self.store.state.workflow_versions.values(), key=by_id)
            if not workflow or v.workflow_id == int_param(workflow, "workflow_id")
        ]
        return page_of(req, "workflow_versions", "/workflow_versions", items, fault)

    def link_sets(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        data = req.json()
        ids = data.get("subject_sets") if isinstance(data, dict) else None
        if not isinstance(ids, list) or not ids:
            raise ApiError(422, "param is missing or the value is empty: subject_sets")
        self.store.link_sets(int(id), [int_param(i, "subject_sets") for i in ids])
        self.store.save()
        return document("workflows", [self.jsonapi.workflow(self.store.state.workflows[int(id)])])

    def unlink_sets(self, req: Request, fault: FaultAction | None, id: str, ids: str) -> Response:
        self.store.workflow_record(int(id))
        for set_id in id_list_param(ids, "subject_sets") or []:
            self.store.unlink_subject_set(int(id), set_id)
        return no_content()

    def retire(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        data = req.json()
        if not isinstance(data, dict):
            raise ApiError(422, "body must be an object")
        ids = data.get("subject_ids")
        if ids is None and data.get("subject_id") is not None:
            ids = [data["subject_id"]]
        if not isinstance(ids, list) or not ids:
            raise ApiError(422, "param is missing or the value is empty: subject_ids")
        reason = data.get("retirement_reason") or "other"
        self.store.retire_subjects(int(id), [int_param(i, "subject_ids") for i in ids], str(reason))
        self.store.save()
        return no_content()

    def unretire(self, req: Request, fault: FaultAction | None, id: str) -> Response:
        data = req.json()
        if not isinstance(data, dict):
            raise ApiError(422, "body must be an object")
        ids = [int_param(i, "subject_ids") for i in (data.get("subject_ids") or [])]
        for set_id in data.get("subject_set_ids") or []:
            ids.extend(
                m.subject_id
                for m in self.store.members_of_set(int_param(set_id, "subject_set_ids"))
            )
        if not ids and not data.get("subject_set_ids"):
            raise ApiError(422, "param is missing or the value is empty: subject_ids")
        self.store.unretire_subjects(int(id), ids)
        self.store.save()
        return no_content()

    def list_statuses(self, req: Request, fault: FaultAction | None) -> Response:
        subject_ids = id_list_param(
            req.query.get("subject_ids") or req.query.get("subject_id"), "subject_ids"
        )
        workflow = req.query.get("workflow_id")
        ids = id_list_param(req.query.get("id"), "id")
        items = [
            self.jsonapi.status(s)
            for s in sorted(self.store.state.statuses.values(), key=by_id)
            if (subject_ids is None or s.subject_id in subject_ids)
            and (not workflow or s.workflow_id == int_param(workflow, "workflow_id"))
            and (ids is None or s.id in ids)
        ]
        return page_of(req, "subject_workflow_statuses", "/subject_workflow_statuses", items, fault)

    def list_own_classifications(self, req: Request, fault: FaultAction | None) -> Response:
        # Without a scope Panoptes lists only the caller's own classifications.
        info = self.auth.tokens.get(req.bearer or "")
        user_id = info["user_id"] if info else None
        return self._classification_page(
            req, "/classifications", lambda c: user_id is not None and c.user_id == user_id, fault
        )

    def list_project_classifications(self, req: Request, fault: FaultAction | None) -> Response:
        if not req.bearer:
            raise ApiError(401, "You must be logged in to access this resource.")
        return self._classification_page(req, "/classifications/project", lambda c: True, fault)

    def list_gold_classifications(self, req: Request, fault: FaultAction | None) -> Response:
        if not req.query.get("workflow_id"):
            raise ApiError(422, "workflow_id is required")
        return self._classification_page(
            req, "/classifications/gold_standard", lambda c: c.gold_standard, fault
        )

    def _classification_page(
        self,
        req: Request,
        path: str,
        scope: Callable[[ClassificationRecord], bool],
        fault: FaultAction | None,
    ) -> Response:
        """Panoptes' NoCountSerializer paging: count 0, walk ``next_href`` until an empty page."""
        query = req.query
        last_id = query.get("last_id")
        if last_id not in (None, "") and not query.get("project_id"):
            raise ApiError(422, "Project ID required if last_id is included")
        project_id = (
            int_param(query["project_id"], "project_id") if query.get("project_id") else None
        )
        workflow_id = (
            int_param(query["workflow_id"], "workflow_id") if query.get("workflow_id") else None
        )

        def keep(c: ClassificationRecord) -> bool:
            return (
                (project_id is None or c.project_id == project_id)
                and (workflow_id is None or c.workflow_id == workflow_id)
                and scope(c)
            )

        page_size = min(max(int_param(query.get("page_size", 20), "page_size"), 1), 100)
        page = max(int_param(query.get("page", 1), "page"), 1)
        params = {k: v for k, v in query.items() if k not in ("page", "admin", "last_id")}
        params["page_size"] = str(page_size)
        table = self.store.state.classifications
        if last_id not in (None, ""):
            # Keyset: start right after the cursor in the sorted id list, so a page costs
            # O(page) however many classifications are stored (load tests page through 1M).
            cursor = int_param(last_id, "last_id")
            start = bisect.bisect_right(self.store.classification_ids, cursor)
            ids = self.store.classification_ids
            chunk = []
            for k in range(start, len(ids)):
                if keep(table[ids[k]]):
                    chunk.append(table[ids[k]])
                    if len(chunk) == page_size:
                        break
            previous = None
            if fault is not None and fault.kind == "repeat_id":
                previous = next(
                    (table[ids[k]] for k in range(start - 1, -1, -1) if keep(table[ids[k]])),
                    None,
                )
            page = 1
        else:
            items = [table[cid] for cid in self.store.classification_ids if keep(table[cid])]
            start = (page - 1) * page_size
            chunk = items[start : start + page_size]
            previous = items[start - 1] if start > 0 and start - 1 < len(items) else None
        if fault is not None and fault.kind == "empty_page":
            chunk = []
        elif fault is not None and fault.kind == "repeat_id" and chunk:
            chunk = [previous or chunk[0], *chunk]
        resources = [self.jsonapi.classification(c) for c in chunk]

        def href(extra: dict[str, Any]) -> str:
            return f"{path}?{urlencode(sorted({**params, **extra}.items()))}"

        if not chunk:
            next_href = None
        elif last_id not in (None, ""):
            next_href = href({"last_id": max(c.id for c in chunk)})
        else:
            next_href = href({"page": page + 1})
        meta = {
            "page": page,
            "page_size": page_size,
            "count": 0,
            "include": [],
            "page_count": 0,
            "previous_page": page - 1 if page > 1 else None,
            "next_page": page + 1 if next_href else None,
            "first_href": href({"page": 1}) if last_id in (None, "") else href({}),
            "previous_href": href({"page": page - 1}) if page > 1 else None,
            "next_href": next_href,
            "last_href": None,
        }
        return json_response(
            200,
            {"classifications": resources, "links": {}, "meta": {"classifications": meta}},
            {"ETag": etag_for(resources)},
        )

    def show_export(
        self, req: Request, fault: FaultAction | None, owner: str, id: str, kind: str
    ) -> Response:
        if kind not in EXPORT_TYPES:
            raise ApiError(404, f"Unknown export type {kind!r}")
        if not req.bearer:
            raise ApiError(401, "You must be logged in to access this resource.")
        record = self.exports.describe(kind, owner, int(id))
        if record is None:
            raise ApiError(404, f"No {kind}_export exists for {owner[:-1]} {id}")
        return document("media", [self.jsonapi.export(record, req.base_url)])

    def create_export(
        self, req: Request, fault: FaultAction | None, owner: str, id: str, kind: str
    ) -> Response:
        data = req.json()
        if not isinstance(data, dict) or not isinstance(data.get("media"), dict):
            raise ApiError(422, "param is missing or the value is empty: media")
        record = self.exports.request(kind, owner, int(id), fault=fault)
        return document(
            "media",
            [self.jsonapi.export(record, req.base_url)],
            201,
            {"Location": f"{req.base_url}/api/{owner}/{id}/{kind}_export"},
        )
