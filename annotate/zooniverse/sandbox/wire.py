"""Requests and responses without HTTP, so routing can be exercised without sockets."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from .formats import compact_json

JSONAPI_MEDIA_TYPE = "application/vnd.api+json"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""
    base_url: str = "http://127.0.0.1"

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"Invalid JSON body: {exc}") from exc

    def form(self) -> dict[str, str]:
        if "json" in self.headers.get("content-type", ""):
            data = self.json()
            return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        parsed = parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[-1] for k, v in parsed.items()}

    def cookie(self, name: str) -> str | None:
        jar = SimpleCookie()
        jar.load(self.headers.get("cookie", ""))
        return jar[name].value if name in jar else None

    @property
    def bearer(self) -> str | None:
        value = self.headers.get("authorization", "")
        return value[7:].strip() or None if value.lower().startswith("bearer ") else None


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RequestLogEntry:
    method: str
    path: str
    query: dict[str, str]
    status: int
    fault: str | None = None


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload).encode()
    out = {"Content-Type": f"{JSONAPI_MEDIA_TYPE}; charset=utf-8"}
    out.update(headers or {})
    return Response(status, body, out)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, {"errors": [{"message": message}]}, headers)


def no_content() -> Response:
    return Response(204, b"", {})


def etag_for(resources: Sequence[dict[str, Any]]) -> str:
    """Weak ETag over the serialized resources, so a list of one equals that resource's ETag."""
    digest = hashlib.md5(compact_json(list(resources)).encode(), usedforsecurity=False).hexdigest()
    return f'W/"{digest}"'


def int_param(value: Any, name: str) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError) as exc:
        raise ApiError(422, f"{name} must be an integer, got {value!r}") from exc


def id_list_param(value: str | None, name: str) -> list[int] | None:
    if value is None or value == "":
        return None
    return [int_param(part, name) for part in str(value).split(",") if part.strip()]


def str_ids(ids: Iterable[int]) -> list[str]:
    return [str(i) for i in ids]
