"""The API's docs page: every endpoint, its methods and the permission each one needs, rendered
on the server from the OpenAPI schema (no JavaScript or CDN assets, so it works offline)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.template import engines
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.views import SpectacularAPIView

from annotate import roles
from annotate.api.permissions import CanRead

METHODS = ("get", "post", "put", "patch", "delete")

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>crowdloop API</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4rem;
text-align:left;vertical-align:top}code{font-size:90%}.m{font-weight:600;text-transform:uppercase}
</style></head><body>
<h1>crowdloop API {{ version }}</h1>
<p>Authenticate with a session (the admin login) or <code>Authorization: Token &lt;key&gt;</code>.
Lists are paginated (<code>?page=</code>, then follow <code>next</code>); the items and labels
lists give no total <code>count</code>. Only the filters and orderings listed per endpoint are
honoured. Machine-readable schema: <a href="{{ schema_url }}">OpenAPI 3</a>.</p>
<p>Roles: viewer (read), curator (review), staff (rounds, retraining, releases), admin. There is no
self-registration: an admin creates accounts and puts them in a group.</p>
<table><thead><tr><th>Method</th><th>Path</th><th>What</th><th>Needs</th><th>Roles</th>
</tr></thead><tbody>
{% for op in operations %}<tr><td class="m">{{ op.method }}</td><td><code>{{ op.path }}</code></td>
<td>{{ op.summary }}{% if op.parameters %}<br><small>parameters: {{ op.parameters|join:", " }}
</small>{% endif %}</td><td><code>{{ op.permission }}</code></td><td>{{ op.roles|join:", " }}</td>
</tr>{% endfor %}
</tbody></table></body></html>"""


def api_operations(request: HttpRequest | None = None) -> list[dict[str, Any]]:
    """Every operation of the API as (method, path, summary, parameters, permission, roles)."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    operations = []
    for path, item in sorted(schema.get("paths", {}).items()):
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            required = op.get("x-required-permission") or {}
            description = (op.get("description") or "").split("\n\n")
            summary = op.get("summary") or (description[-1] if description else "")
            operations.append(
                {
                    "method": method,
                    "path": path,
                    "summary": summary.strip().split("\n")[0],
                    "parameters": [
                        p["name"] for p in op.get("parameters", []) if p.get("in") == "query"
                    ],
                    "permission": required.get("permission", "authenticated"),
                    "roles": required.get("roles", []),
                }
            )
    return operations


@permission_required(roles.PERM_READ)
def api_docs(request: HttpRequest) -> HttpResponse:
    html = (
        engines["django"]
        .from_string(TEMPLATE)
        .render(
            {"operations": api_operations(request), "version": "v1", "schema_url": "schema/"},
            request,
        )
    )
    return HttpResponse(html)


schema_view = SpectacularAPIView.as_view(permission_classes=[CanRead])
