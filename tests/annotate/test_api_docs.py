"""The API's docs page lists every operation of the OpenAPI schema with the permission it needs
and the roles that hold it, and the schema says what the API is."""

from __future__ import annotations

import html
import re

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from drf_spectacular.generators import SchemaGenerator

pytestmark = pytest.mark.django_db

#: A row of the page's index: method, path (a link to the operation's section), permission, roles.
ROW = re.compile(
    r'<tr><td class="m">(?P<method>\w+)</td>\s*<td><a href="#[^"]+"><code>(?P<path>[^<]+)</code>'
    r"</a></td>\s*<td><code>(?P<permission>[^<]*)</code></td><td>(?P<roles>[^<]*)</td>",
)

@pytest.fixture
def docs_page(django_user_model) -> dict[tuple[str, str], tuple[str, str]]:
    """(method, path) -> (permission, roles) of every row of the page, as a viewer reads it."""
    viewer = django_user_model.objects.create_user("reader")
    viewer.groups.add(Group.objects.get(name="viewer"))  # the groups come with migrate
    client = Client()
    client.force_login(viewer)
    response = client.get("/api/v1/docs/")
    assert response.status_code == 200
    rows = {}
    for row in ROW.finditer(response.content.decode()):
        key = (row["method"], html.unescape(row["path"]))
        assert key not in rows, f"{key} listed twice"
        rows[key] = (html.unescape(row["permission"]), html.unescape(row["roles"]))
    return rows


def test_every_operation_of_the_schema_is_on_the_docs_page_with_its_permission_and_roles(
    docs_page,
):
    schema = SchemaGenerator().get_schema(request=None, public=True)
    listed = set()
    for path, item in schema["paths"].items():
        for method in ("get", "post", "put", "patch", "delete"):
            if method not in item:
                continue
            required = item[method]["x-required-permission"]
            assert docs_page.get((method, path)) == (
                required["permission"],
                ", ".join(required["roles"]),
            ), (method, path)
            assert required["roles"], f"{method} {path} names no roles"
            listed.add((method, path))
    assert set(docs_page) == listed
    assert len(listed) >= 20


def test_the_schema_says_what_the_api_is():
    info = SchemaGenerator().get_schema(request=None, public=True)["info"]
    assert info["title"] == "crowdloop API" and info["version"]
    assert "x-required-permission" in info["description"]
