"""The API as its OpenAPI schema describes it: the endpoints the root lists, the operations the
docs page shows, and an example request for each.

Everything here is read from the schema, which drf-spectacular builds from the URLconf: a view
mounted under ``/api/v1/`` by any app (annotate, training, loop) shows up in the root and the docs
by being mounted, and annotate imports neither of the apps above it.
"""

from __future__ import annotations

import json
import shlex
from typing import Any, TypedDict

from django.utils.safestring import SafeString
from drf_spectacular.generators import SchemaGenerator

from annotate.api.rst import rst_html

METHODS = ("get", "post", "put", "patch", "delete")
#: The example requests read the token from this shell variable.
TOKEN_VARIABLE = "TOKEN"
EXAMPLE_URI = "https://example.org/image.jpg"
EXAMPLE_DATETIME = "2025-01-31T12:00:00Z"


class Endpoint(TypedDict):
    path: str
    url: str
    methods: list[str]


class BodyField(TypedDict):
    name: str
    type: str
    required: bool
    description: SafeString


class Operation(TypedDict):
    id: str
    method: str
    path: str
    description: str
    description_html: SafeString
    parameters: list[str]
    fields: list[BodyField]
    permission: str
    roles: list[str]
    example: str


def api_schema() -> dict[str, Any]:
    """The OpenAPI schema of every endpoint, whoever asks (a few tens of ms once warm)."""
    return SchemaGenerator().get_schema(request=None, public=True)


def api_endpoint_list(
    *, schema: dict[str, Any], prefix: str, base_url: str
) -> list[Endpoint]:
    """The endpoints whose path starts with ``prefix``, by path, each with its absolute URL.

    ``base_url`` is the site's root as the client sees it (scheme, host and script prefix, ending
    in ``/``). A path with parameters keeps them as ``{name}``, a URL template.
    """
    endpoints: list[Endpoint] = []
    for path, item in sorted(schema.get("paths", {}).items()):
        if not path.startswith(prefix):
            continue
        methods = [method.upper() for method in METHODS if method in item]
        if methods:
            endpoints.append(
                {"path": path, "url": base_url + path.lstrip("/"), "methods": methods}
            )
    return endpoints


def api_operation_list(*, schema: dict[str, Any], base_url: str) -> list[Operation]:
    """Every operation of the schema, by path then method, with its whole description as HTML,
    its query parameters, its body's fields, the permission it needs and an example request."""
    operations: list[Operation] = []
    for path, item in sorted(schema.get("paths", {}).items()):
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            required = op.get("x-required-permission") or {}
            description = op.get("description") or op.get("summary") or ""
            body = request_body_schema(schema, op)
            operations.append(
                {
                    "id": op.get("operationId") or f"{method}-{path}",
                    "method": method,
                    "path": path,
                    "description": description,
                    "description_html": rst_html(description),
                    "parameters": [
                        p["name"] for p in op.get("parameters", []) if p.get("in") == "query"
                    ],
                    "fields": body_fields(schema, body) if body else [],
                    "permission": required.get("permission", "authenticated"),
                    "roles": required.get("roles", []),
                    "example": operation_example(
                        schema=schema, method=method, path=path, base_url=base_url
                    ),
                }
            )
    return operations


# --- example requests -----------------------------------------------------------------------------


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """A property's schema with its ``$ref`` followed and an ``allOf``/``oneOf`` of references
    merged into it (drf-spectacular writes enums and nullable enums that way)."""
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    for combined in ("allOf", "oneOf"):
        for option in node.get(combined, ()):
            target = _resolve(schema, option)
            if target.get("enum") == [None]:
                continue  # NullEnum: the "or null" of a nullable choice
            node = {**target, **{k: v for k, v in node.items() if k != combined}}
            break
    return node


def _example_value(schema: dict[str, Any], prop: dict[str, Any]) -> Any:
    prop = _resolve(schema, prop)
    if "default" in prop:
        return prop["default"]
    if "example" in prop:
        return prop["example"]
    enum = [value for value in prop.get("enum", ()) if value is not None]
    if enum:
        return enum[0]
    kind = prop.get("type")
    if kind == "integer":
        return prop.get("minimum", 1)
    if kind == "number":
        return prop.get("minimum", 0.5)
    if kind == "boolean":
        return False
    if kind == "array":
        items = _resolve(schema, prop.get("items", {}))
        return [_example_value(schema, items)] if items.get("enum") else []
    if kind == "object":
        return {}
    if prop.get("format") == "uri":
        return EXAMPLE_URI
    if prop.get("format") == "date-time":
        return EXAMPLE_DATETIME
    if prop.get("pattern", "").startswith("^[0-9]"):
        return "1"
    return "text"


def _may_be_empty(schema: dict[str, Any], prop: dict[str, Any]) -> bool:
    """Whether null (or "" for a choice) is allowed: for an optional field, "the default"."""
    if prop.get("nullable") or _resolve(schema, prop).get("nullable"):
        return True
    options = [_resolve(schema, option).get("enum") for option in prop.get("oneOf", ())]
    return [None] in options or [""] in options


def _shown_in_example(schema: dict[str, Any], prop: dict[str, Any], required: bool) -> bool:
    """Required fields and the options a client would set. An optional field that may be left
    empty (null or "" is its default) is left out, and so is optional free text."""
    resolved = _resolve(schema, prop)
    if resolved.get("readOnly"):
        return False
    if required or "default" in resolved:
        return True
    if _may_be_empty(schema, prop):
        return False
    return bool(resolved.get("enum")) or resolved.get("type") != "string" or (
        resolved.get("format") == "uri"
    )


def request_body_schema(schema: dict[str, Any], op: dict[str, Any]) -> dict[str, Any] | None:
    """The schema of an operation's request body (its JSON form when it has one)."""
    content = (op.get("requestBody") or {}).get("content") or {}
    if not content:
        return None
    media = content.get("application/json") or next(iter(content.values()))
    return _resolve(schema, media.get("schema", {}))


def request_body_example(schema: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """A body built from the request schema's fields, each with an example value."""
    required = set(body.get("required", ()))
    return {
        name: _example_value(schema, prop)
        for name, prop in body.get("properties", {}).items()
        if _shown_in_example(schema, prop, name in required)
    }


def body_fields(schema: dict[str, Any], body: dict[str, Any]) -> list[BodyField]:
    required = set(body.get("required", ()))
    fields: list[BodyField] = []
    for name, prop in body.get("properties", {}).items():
        resolved = _resolve(schema, prop)
        if resolved.get("readOnly"):
            continue
        kind = resolved.get("type", "string")
        if kind == "array":
            kind = f"array of {_resolve(schema, resolved.get('items', {})).get('type', 'string')}"
        fields.append(
            {
                "name": name,
                "type": kind,
                "required": name in required,
                "description": rst_html(prop.get("description") or "", compact=True),
            }
        )
    return fields


def _path_example(schema: dict[str, Any], path: str, op: dict[str, Any]) -> str:
    for parameter in op.get("parameters", ()):
        if parameter.get("in") == "path":
            value = _example_value(schema, parameter.get("schema", {}))
            path = path.replace("{" + parameter["name"] + "}", str(value))
    return path


def operation_example(*, schema: dict[str, Any], method: str, path: str, base_url: str) -> str:
    """A curl command for the operation: the token header, and a JSON body for a request that
    takes one (``-F`` form fields when the operation takes no JSON)."""
    op = schema["paths"][path][method]
    url = base_url + _path_example(schema, path, op).lstrip("/")
    lines = ["curl" if method == "get" else f"curl -X {method.upper()}"]
    lines[0] += f" {shlex.quote(url)}"
    lines.append(f'-H "Authorization: Token ${TOKEN_VARIABLE}"')
    body = request_body_schema(schema, op)
    if body is not None:
        values = request_body_example(schema, body)
        content = (op.get("requestBody") or {}).get("content") or {}
        if "application/json" in content:
            lines.append("-H 'Content-Type: application/json'")
            lines.append(f"-d {shlex.quote(json.dumps(values))}")
        else:
            for name, value in values.items():
                text = value if isinstance(value, str) else json.dumps(value)
                lines.append(f"-F {shlex.quote(f'{name}={text}')}")
    return " \\\n  ".join(lines)
