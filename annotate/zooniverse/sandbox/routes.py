"""Request routing: /api to the resource handlers, sign-in and OAuth, media and /_sandbox admin."""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict
from urllib.parse import urlsplit

from .crowd import Crowd
from .csv_exports import Exports
from .faults import FaultAction, FaultPlan, FaultRule, fault_action
from .live_crowd import LiveCrowd
from .oauth import Auth
from .resources import Resources
from .store import Store
from .truth import Truth
from .volunteers import CrowdConfig
from .wire import (
    JSONAPI_MEDIA_TYPE,
    ApiError,
    Request,
    RequestLogEntry,
    Response,
    error_response,
    int_param,
    json_response,
    no_content,
)


class Router:
    """Routes requests: /api to the resources, sign-in and OAuth, media, and /_sandbox admin."""

    def __init__(
        self,
        store: Store,
        *,
        faults: FaultPlan,
        request_log: list[RequestLogEntry],
        crowd: Crowd,
        live: LiveCrowd,
        exports: Exports,
        auth: Auth,
        resources: Resources,
    ) -> None:
        self.store = store
        self.faults = faults
        self.request_log = request_log
        self.crowd = crowd
        self.live = live
        self.exports = exports
        self.auth = auth
        self.resources = resources
        self.uploads: dict[str, tuple[str, bytes]] = {}

    _API_ROUTES: list[tuple[str, str, str]] = [
        ("GET", r"/projects", "list_projects"),
        ("GET", r"/projects/(?P<id>\d+)", "show_project"),
        ("GET", r"/subject_sets", "list_subject_sets"),
        ("POST", r"/subject_sets", "create_subject_set"),
        ("GET", r"/subject_sets/(?P<id>[\d,]+)", "show_subject_set"),
        ("PUT", r"/subject_sets/(?P<id>\d+)", "update_subject_set"),
        ("POST", r"/subject_sets/(?P<id>\d+)/links/subjects", "link_subjects"),
        (
            "DELETE",
            r"/subject_sets/(?P<id>\d+)/links/subjects/(?P<ids>[\d,]+)",
            "unlink_subjects",
        ),
        ("GET", r"/subjects", "list_subjects"),
        ("POST", r"/subjects", "create_subject"),
        ("GET", r"/subjects/(?P<id>[\d,]+)", "show_subject"),
        ("PUT", r"/subjects/(?P<id>\d+)", "update_subject"),
        ("DELETE", r"/subjects/(?P<id>\d+)", "delete_subject"),
        ("GET", r"/set_member_subjects", "list_members"),
        ("GET", r"/set_member_subjects/(?P<id>\d+)", "show_member"),
        ("PUT", r"/set_member_subjects/(?P<id>\d+)", "update_member"),
        ("GET", r"/workflows", "list_workflows"),
        ("GET", r"/workflows/(?P<id>\d+)", "show_workflow"),
        ("GET", r"/workflow_versions", "list_workflow_versions"),
        ("POST", r"/workflows/(?P<id>\d+)/links/subject_sets", "link_sets"),
        ("DELETE", r"/workflows/(?P<id>\d+)/links/subject_sets/(?P<ids>[\d,]+)", "unlink_sets"),
        ("POST", r"/workflows/(?P<id>\d+)/retired_subjects", "retire"),
        ("POST", r"/workflows/(?P<id>\d+)/unretire_subjects", "unretire"),
        ("GET", r"/subject_workflow_statuses", "list_statuses"),
        ("GET", r"/classifications", "list_own_classifications"),
        ("GET", r"/classifications/project", "list_project_classifications"),
        ("GET", r"/classifications/gold_standard", "list_gold_classifications"),
        ("GET", r"/(?P<owner>projects|workflows)/(?P<id>\d+)/(?P<kind>\w+)_export", "show_export"),
        (
            "POST",
            r"/(?P<owner>projects|workflows)/(?P<id>\d+)/(?P<kind>\w+)_export",
            "create_export",
        ),
    ]
    _NEEDS_LOGIN = {"POST", "PUT", "DELETE"}

    def uploaded(self, url: str) -> tuple[str, bytes] | None:
        """The content type and bytes PUT to an upload URL this sandbox handed out, or None."""
        match = re.search(r"/media/uploads/([\w.-]+)$", urlsplit(url).path)
        with self.store.lock:
            return self.uploads.get(match.group(1)) if match else None

    def handle(self, request: Request, fault: FaultAction | None = None) -> Response:
        """Route one request. Never raises: errors become ``{"errors": [...]}`` responses."""
        try:
            if request.path.startswith("/api/") or request.path == "/api":
                if JSONAPI_MEDIA_TYPE not in request.headers.get("accept", ""):
                    # Panoptes routes /api only for its JSON-API media type.
                    return error_response(404, "Not Found")
                route_path = request.path[len("/api") :]
                with self.store.lock:
                    return self._route_api(request, route_path, fault)
            if request.path == "/_sandbox/live":
                # Outside the store lock: stopping waits for the crowd thread, which takes that
                # lock for every turn.
                return self._admin_live(request)
            with self.store.lock:
                return self._route_other(request, fault)
        except ApiError as exc:
            return error_response(exc.status, exc.message)

    def _route_api(self, req: Request, path: str, fault: FaultAction | None) -> Response:
        path = path.rstrip("/") or "/"
        method_allowed = False
        for method, pattern, name in self._API_ROUTES:
            match = re.fullmatch(pattern, path)
            if not match:
                continue
            method_allowed = True
            if method != req.method:
                continue
            if req.method in self._NEEDS_LOGIN and not req.bearer:
                return error_response(401, "You must be logged in to access this resource.")
            handler = getattr(self.resources, name)
            return handler(req, fault, **match.groupdict())
        if method_allowed:
            return error_response(405, f"{req.method} not allowed on {path}")
        return error_response(404, "Not Found")

    def _route_other(self, req: Request, fault: FaultAction | None) -> Response:
        path = req.path
        if path == "/users/sign_in" and req.method == "GET":
            token = secrets.token_urlsafe(24)
            self.auth.csrf.add(token)
            return json_response(200, {}, {"X-CSRF-Token": token})
        if path == "/users/sign_in" and req.method == "POST":
            return self.auth.sign_in(req)
        if path == "/oauth/token" and req.method == "POST":
            return self.auth.token(req)
        match = re.fullmatch(r"/media/exports/(\d+)/[\w.-]+\.csv", path)
        if match and req.method == "GET":
            record = self.store.state.exports.get(int(match.group(1)))
            if record is not None:
                self.exports.advance(record)
            if record is None or record.content is None:
                return Response(404, b"Not Found", {"Content-Type": "text/plain"})
            return Response(200, record.content.encode(), {"Content-Type": "text/csv"})
        match = re.fullmatch(r"/media/uploads/([\w.-]+)", path)
        if match:
            return self._upload(req, match.group(1))
        if path.startswith("/_sandbox/"):
            return self._admin(req, path[len("/_sandbox/") :])
        return Response(404, b"Not Found", {"Content-Type": "text/plain"})

    def _upload(self, req: Request, key: str) -> Response:
        if req.method == "PUT":
            self.uploads[key] = (
                req.headers.get("content-type", "application/octet-stream"),
                req.body,
            )
            return Response(201, b"", {})
        if req.method == "GET" and key in self.uploads:
            content_type, body = self.uploads[key]
            return Response(200, body, {"Content-Type": content_type})
        return Response(404, b"Not Found", {"Content-Type": "text/plain"})

    def _admin(self, req: Request, route: str) -> Response:
        if route == "faults":
            if req.method == "GET":
                return json_response(200, {"faults": [asdict(r) for r in self.faults.rules()]})
            if req.method == "DELETE":
                self.faults.clear()
                return no_content()
            if req.method == "POST":
                data = req.json()
                try:
                    rule = self.faults.add(
                        FaultRule(
                            path=str(data["path"]),
                            actions=[fault_action(a) for a in data.get("actions") or []],
                            method=str(data.get("method", "*")).upper(),
                            params={k: str(v) for k, v in (data.get("params") or {}).items()},
                            skip=int(data.get("skip", 0)),
                        )
                    )
                except (KeyError, TypeError, ValueError) as exc:
                    raise ApiError(422, f"bad fault rule: {exc}") from exc
                if not rule.actions:
                    raise ApiError(422, "a fault rule needs at least one action")
                return json_response(201, {"faults": [asdict(rule)]})
        if route == "volunteers" and req.method == "POST":
            data = req.json()
            try:
                crowd = CrowdConfig.from_json(data.get("crowd") or {})
                truth = data.get("truth")
                if truth is not None and not isinstance(truth, dict):
                    raise ValueError("truth must be an object {external_id: [labels]}")
                run = self.crowd.run(
                    int_param(data.get("workflow_id", self.store.workflow_id), "workflow_id"),
                    crowd=crowd,
                    classifications=data.get("classifications"),
                    truth=truth,
                )
            except (TypeError, ValueError) as exc:
                raise ApiError(422, f"bad crowd: {exc}") from exc
            return json_response(200, run.summary())
        if route == "state" and req.method == "GET":
            return json_response(200, self.store.state.to_json())
        if route == "requests" and req.method == "GET":
            return json_response(200, {"requests": [asdict(e) for e in self.request_log]})
        return error_response(404, f"Unknown sandbox admin route {route!r}")

    def _admin_live(self, req: Request) -> Response:
        if req.method == "GET":
            return json_response(200, self.live.status())
        if req.method == "DELETE":
            self.live.stop()
            return json_response(200, self.live.status())
        if req.method != "POST":
            return error_response(405, f"{req.method} not allowed on /_sandbox/live")
        data = req.json()
        if not isinstance(data, dict):
            raise ApiError(422, "the body must be a JSON object")
        per_minute = data.get("per_minute")
        if isinstance(per_minute, bool) or not isinstance(per_minute, int | float):
            raise ApiError(422, f"per_minute must be a number (0 stops), got {per_minute!r}")
        crowd = data.get("crowd") or {}
        if not isinstance(crowd, dict):
            raise ApiError(422, "crowd must be a JSON object of CrowdConfig fields")
        # Fields left out keep the running crowd's, so {"per_minute": K} only changes the rate.
        running = self.live.current
        truth: Truth | None = data.get("truth")
        workflow_id = data.get("workflow_id")
        try:
            if running is not None and "crowd" not in data:
                config = running.crowd
            else:
                config = CrowdConfig.from_json(crowd)
            if running is not None and "truth" not in data:
                truth = running.truth
            if running is not None and "workflow_id" not in data:
                workflow_id = running.workflow_id
            self.live.start(
                per_minute=per_minute,
                crowd=config,
                truth=truth,
                workflow_id=None if workflow_id is None else int_param(workflow_id, "workflow_id"),
            )
        except (TypeError, ValueError) as exc:
            raise ApiError(422, f"bad live crowd: {exc}") from exc
        return json_response(200, self.live.status())
