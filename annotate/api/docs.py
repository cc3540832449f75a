"""The API's docs page: every operation with its whole description, the permission it needs, the
roles that hold it and an example request, rendered on the server from the OpenAPI schema (no
JavaScript or CDN assets, so it works offline)."""

from __future__ import annotations

from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.urls import get_script_prefix, reverse
from drf_spectacular.views import SpectacularAPIView

from annotate import roles
from annotate.api.catalogue import TOKEN_VARIABLE, api_operation_list, api_schema
from annotate.api.permissions import CanRead

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>crowdloop API</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4rem;
text-align:left;vertical-align:top}code{font-size:90%}.m{font-weight:600;text-transform:uppercase}
section{border-top:1px solid #ddd;margin-top:1.5rem}h2{font-size:1.1rem}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
</style></head><body>
<h1>crowdloop API {{ version }}</h1>
<p>Authenticate with a session (the admin login) or <code>Authorization: Token &lt;key&gt;</code>
(an admin makes a key with <code>manage.py drf_create_token &lt;username&gt;</code>; the examples
read it from <code>${{ token_variable }}</code>). Lists are paginated (<code>?page=</code>, then
follow <code>next</code>); the items and labels lists give no total <code>count</code>. Only the
filters and orderings listed per endpoint are honoured. Every endpoint with its URL:
<a href="{{ root_url }}">the API root</a>; machine-readable schema:
<a href="{{ schema_url }}">OpenAPI 3</a>.</p>
<p>Roles: viewer (read), curator (review), staff (rounds, retraining, releases), admin. There is no
self-registration: an admin creates accounts and puts them in a group.</p>
<table><thead><tr><th>Method</th><th>Path</th><th>Needs</th><th>Roles</th></tr></thead><tbody>
{% for op in operations %}<tr><td class="m">{{ op.method }}</td>
<td><a href="#{{ op.id }}"><code>{{ op.path }}</code></a></td>
<td><code>{{ op.permission }}</code></td><td>{{ op.roles|join:", " }}</td></tr>
{% endfor %}</tbody></table>
{% for op in operations %}<section id="{{ op.id }}">
<h2><span class="m">{{ op.method }}</span> <code>{{ op.path }}</code></h2>
<div class="description">{{ op.description_html }}</div>
{% if op.parameters %}<p>Query parameters:
{% for name in op.parameters %}<code>{{ name }}</code>{% if not forloop.last %}, {% endif %}
{% endfor %}</p>{% endif %}
{% if op.fields %}<p>Body fields:</p><ul class="fields">{% for field in op.fields %}
<li><code>{{ field.name }}</code>
({{ field.type }}{% if field.required %}, required{% endif %}){% if field.description %}:
{{ field.description }}{% endif %}</li>{% endfor %}
</ul>{% endif %}
<p>Example:</p>
<pre class="example">{{ op.example }}</pre>
</section>
{% endfor %}</body></html>"""


@permission_required(roles.PERM_READ)
def api_docs(request: HttpRequest) -> HttpResponse:
    base_url = request.build_absolute_uri(get_script_prefix())
    html = (
        engines["django"]
        .from_string(TEMPLATE)
        .render(
            {
                "operations": api_operation_list(schema=api_schema(), base_url=base_url),
                "version": "v1",
                "root_url": reverse("api:root"),
                "schema_url": reverse("api:schema"),
                "token_variable": TOKEN_VARIABLE,
            },
            request,
        )
    )
    return HttpResponse(html)


schema_view = SpectacularAPIView.as_view(permission_classes=[CanRead])
