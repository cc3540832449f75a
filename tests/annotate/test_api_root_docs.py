"""The API root lists every endpoint of the three apps; the docs page shows every description
whole, rendered, with an example request that works; items carry the URLs to show their image;
the browsable API's request forms post as they are shown."""

from __future__ import annotations

import json
import re
import shlex
from html.parser import HTMLParser

import pytest
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from rest_framework.authtoken.models import Token

from annotate.api.rst import rst_html
from annotate.models import AggregatedLabel, DatasetRelease, Item, Review, Round, Volunteer
from tests.clients import as_user
from training.models import ModelVersion, RoundRequest, TrainingRun

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_throttles")]

METHODS = ("get", "post", "put", "patch", "delete")
BLOCKS = {"p", "li", "ul", "pre", "h2", "div", "section", "td", "tr"}


@pytest.fixture
def staff(people):
    """The staff persona with an admin-site account, as staff accounts are made."""
    user = people["staff"]
    user.is_staff = True
    user.save()
    return user


@pytest.fixture
def world(concepts, people, django_capture_on_commit_callbacks):
    """One row behind every read endpoint, so each detail URL has something to show."""
    from annotate.services.releases import release_request

    stored = Item.objects.create(
        external_id="stored",
        image_url="https://images.example.org/full/1.jpg",
        image_file="items/ab/abc.jpg",
        thumbnail="thumbs/ab/abc.jpg",
        image_state="ok",
    )
    remote = Item.objects.create(
        external_id="remote", image_url="https://images.example.org/full/2.jpg"
    )
    unsafe = Item.objects.create(external_id="unsafe", image_url="javascript:alert(1)")
    AggregatedLabel.objects.create(
        item=stored, concept=concepts["painting"], posterior=0.9, method="dawid_skene"
    )
    Volunteer.objects.create(key="v1", user_name="vol")
    Round.objects.create(number=1, name="round 1")
    Review.objects.create(item=remote, curator=people["curator"], action="accept")
    with django_capture_on_commit_callbacks(execute=True):
        release = release_request(user=people["staff"])
    release.refresh_from_db()
    assert release.status == DatasetRelease.Status.SUCCEEDED, release.error
    ModelVersion.objects.create(
        status="active",
        backbone="small_cnn",
        concepts=["painting"],
        thresholds=[0.5],
        checkpoint_path="checkpoints/x.json",
        checkpoint_sha256="a" * 64,
    )
    TrainingRun.objects.create(trigger=TrainingRun.Trigger.API)
    RoundRequest.objects.create(params={"size": 5})
    return {"stored": stored, "remote": remote, "unsafe": unsafe}


def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def operations(raw: dict) -> list[tuple[str, str, dict]]:
    return [
        (method, path, item[method])
        for path, item in raw["paths"].items()
        for method in METHODS
        if method in item
    ]


# --- the root -------------------------------------------------------------------------------------


def test_the_root_lists_every_endpoint_of_the_three_apps_with_absolute_links(staff):
    client = Client()
    client.force_login(staff)
    response = client.get("/api/v1/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    root = response.json()
    assert root["docs"] == "http://testserver/api/v1/docs/"
    assert root["schema"] == "http://testserver/api/v1/schema/"
    listed = {endpoint["path"]: endpoint for endpoint in root["endpoints"]}
    assert set(listed) == set(schema()["paths"])
    for path in (
        "/api/v1/items/",  # annotate
        "/api/v1/releases/{id}/download/{what}/",
        "/api/v1/training-runs/",  # training
        "/api/v1/model-versions/{id}/",
        "/api/v1/predict/",
        "/api/v1/loop/",  # loop
    ):
        assert listed[path]["url"] == f"http://testserver{path}", path
    assert listed["/api/v1/predict/"]["methods"] == ["POST"]
    assert listed["/api/v1/reviews/"]["methods"] == ["GET", "POST"]


def test_every_link_of_the_root_answers_200_to_a_staff_reader(world, staff):
    client = Client()
    client.force_login(staff)
    root = client.get("/api/v1/").json()
    what = next(
        p["schema"]["enum"][0]
        for p in schema()["paths"]["/api/v1/releases/{id}/download/{what}/"]["get"]["parameters"]
        if p["name"] == "what"
    )
    checked = 0
    for endpoint in root["endpoints"]:
        if "GET" not in endpoint["methods"]:
            continue
        url = endpoint["url"]
        if "{id}" in url:
            # A real id: the first row of the list the detail belongs to.
            listing = client.get(url.split("{id}")[0]).json()
            rows = listing["results"] if isinstance(listing, dict) else listing
            url = url.replace("{id}", str(rows[0]["id"]))
        url = url.replace("{what}", what)
        assert "{" not in url, url
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        checked += 1
    assert checked >= 20
    assert client.get(root["docs"]).status_code == 200
    assert client.get(root["schema"]).status_code == 200


def test_the_root_answers_readers_only_as_the_rest_of_the_api_does(people):
    assert as_user(None).get("/api/v1/").status_code in (401, 403)
    assert as_user(people["nobody"]).get("/api/v1/").status_code == 403
    for role in ("viewer", "curator", "staff", "admin"):
        assert as_user(people[role]).get("/api/v1/").status_code == 200, role
    assert as_user(people["viewer"]).post("/api/v1/", {}).status_code == 405


def test_the_root_is_browsable_in_html(people):
    response = as_user(people["viewer"]).get("/api/v1/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    assert "http://testserver/api/v1/loop/" in response.content.decode()


# --- the docs page --------------------------------------------------------------------------------


class _Sections(HTMLParser):
    """The text of each ``<section id=...>`` and of its example, as a reader sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.examples: dict[str, str] = {}
        self._section: str | None = None
        self._in_example = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "section":
            self._section = found["id"]
            self.text[self._section] = ""
            self.examples[self._section] = ""
        elif tag == "pre" and found.get("class") == "example":
            self._in_example = True
        if tag in BLOCKS and self._section:
            self.text[self._section] += " "

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None
        elif tag == "pre":
            self._in_example = False
        if tag in BLOCKS and self._section:
            self.text[self._section] += " "

    def handle_data(self, data: str) -> None:
        if self._section:
            self.text[self._section] += data
            if self._in_example:
                self.examples[self._section] += data


def plain(rst: str) -> str:
    """What a reader should see of a description: its words, without the markup."""
    text = re.sub(r":[\w.+-]+:`([^`]+)`", r"\1", rst)
    text = text.replace("``", "").replace("`", "").replace("**", "")
    text = re.sub(r"^\s*[-*+] +", "", text, flags=re.MULTILINE)
    return " ".join(text.split())


@pytest.fixture
def docs_page(people) -> tuple[str, _Sections]:
    client = Client()
    client.force_login(people["viewer"])
    response = client.get("/api/v1/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    sections = _Sections()
    sections.feed(page)
    return page, sections


def test_the_docs_page_shows_every_description_whole_and_no_raw_restructuredtext(docs_page):
    page, sections = docs_page
    assert "``" not in page
    assert not re.search(r":[a-z]+:`", page)
    raw = schema()
    for method, path, op in operations(raw):
        shown = " ".join(sections.text[op["operationId"]].split())
        assert plain(op["description"]) in shown, (method, path)
    items = " ".join(sections.text["items_list"].split())
    assert "image, review and consensus state, and uncertainty." in items  # cut off before
    assert "<code>/api/v1/training-runs/</code>" in page  # ``...`` in a docstring, rendered


def test_every_operation_has_an_example_request_with_the_token_header(docs_page):
    _, sections = docs_page
    raw = schema()
    for method, path, op in operations(raw):
        example = sections.examples[op["operationId"]]
        words = shlex.split(example.replace("\\\n", " "))
        assert words[0] == "curl", example
        assert "Authorization: Token $TOKEN" in words, example
        url = next(w for w in words if w.startswith("http://testserver/"))
        assert re.fullmatch(re.sub(r"\\{\w+\\}", "[^/]+", re.escape(path)), url[17:]), url
        if method == "get":
            assert "-X" not in words
            continue
        assert words[words.index("-X") + 1] == method.upper()
        if "requestBody" not in op:  # an action without input (undo a review): no body
            assert "-d" not in words, example
            continue
        body = json.loads(words[words.index("-d") + 1])
        request = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        fields = raw["components"]["schemas"][request.rsplit("/", 1)[-1]]
        assert set(fields.get("required", ())) <= set(body) <= set(fields["properties"])


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/api/v1/round-requests/", 202), ("/api/v1/releases/", 202), ("/api/v1/training-runs/", 201)],
)
def test_a_post_example_works_as_written_with_a_real_token(docs_page, staff, path, expected):
    _, sections = docs_page
    op = schema()["paths"][path]["post"]
    words = shlex.split(sections.examples[op["operationId"]].replace("\\\n", " "))
    token = Token.objects.create(user=staff).key
    headers = [words[i + 1] for i, w in enumerate(words) if w == "-H"]
    assert "Content-Type: application/json" in headers
    response = Client().generic(
        words[words.index("-X") + 1],
        next(w for w in words if w.startswith("http://testserver/"))[17:],
        words[words.index("-d") + 1],
        content_type="application/json",
        HTTP_AUTHORIZATION=next(h for h in headers if h.startswith("Authorization")).replace(
            "$TOKEN", token
        ).split(": ", 1)[1],
    )
    assert response.status_code == expected, response.content


def test_restructuredtext_becomes_safe_html():
    html = rst_html(
        "Reads ``a < b`` with :func:`~annotate.roles.roles_setup` and :class:`Item`.\n"
        "Second line of the **same** paragraph.\n\n"
        "- one <script>alert(1)</script>\n"
        "  continued\n"
        "- two\n\n"
        "Example::\n\n"
        "    curl -H 'x'\n"
    )
    assert html == (
        "<p>Reads <code>a &lt; b</code> with <code>roles_setup</code> and <code>Item</code>.\n"
        "Second line of the <strong>same</strong> paragraph.</p>\n"
        "<ul><li>one &lt;script&gt;alert(1)&lt;/script&gt;\ncontinued</li><li>two</li></ul>\n"
        "<p>Example:</p>\n"
        "<pre>curl -H &#x27;x&#x27;</pre>"
    )


# --- items carry image URLs -----------------------------------------------------------------------


def test_items_carry_the_url_of_their_image_and_thumbnail(world, people, settings):
    settings.IMAGE_HOSTS = ("images.example.org",)  # remote images shown from their source
    client = as_user(people["viewer"])
    rows = {row["external_id"]: row for row in client.get("/api/v1/items/").json()["results"]}
    assert rows["stored"]["image"] == "http://testserver/media/items/ab/abc.jpg"
    assert rows["stored"]["thumbnail"] == "http://testserver/media/thumbs/ab/abc.jpg"
    assert rows["stored"]["image_url"] == "https://images.example.org/full/1.jpg"
    assert rows["remote"]["image"] == rows["remote"]["thumbnail"] == (
        "https://images.example.org/full/2.jpg"
    )
    assert rows["unsafe"]["image"] is None and rows["unsafe"]["thumbnail"] is None
    detail = client.get(f"/api/v1/items/{world['stored'].pk}/").json()
    assert detail["image"] == rows["stored"]["image"]
    assert detail["thumbnail"] == rows["stored"]["thumbnail"]


# --- the browsable API's forms --------------------------------------------------------------------


class _Forms(HTMLParser):
    """Every POST form of a page, with what a browser submits when nothing is changed."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []
        self._select: str | None = None
        self._options: list[tuple[str, bool]] = []
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"method": found.get("method", "get").upper(), "fields": []})
        elif not self.forms:
            return
        fields = self.forms[-1]["fields"]
        if tag == "input" and "name" in found:
            if found.get("type") in ("checkbox", "radio") and "checked" not in found:
                fields.append((found["name"], None))  # shown, but not submitted
            else:
                fields.append((found["name"], found.get("value", "")))
        elif tag == "select":
            self._select, self._options = found["name"], []
        elif tag == "option" and self._select:
            self._options.append((found.get("value", ""), "selected" in found))
        elif tag == "textarea":
            self._textarea = found["name"]
            fields.append((self._textarea, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "select" and self._select:
            chosen = [value for value, selected in self._options if selected]
            first = [value for value, _ in self._options[:1]]
            self.forms[-1]["fields"].append((self._select, (chosen or first or [""])[0]))
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea:
            name, value = self.forms[-1]["fields"][-1]
            self.forms[-1]["fields"][-1] = (name, value + data)


def post_forms(client: Client, path: str) -> tuple[dict, dict]:
    """The HTML form's fields and the raw-content form's fields of a browsable API page."""
    page = client.get(path, HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    parser = _Forms()
    parser.feed(page.content.decode())
    posts = [dict(form["fields"]) for form in parser.forms if form["method"] == "POST"]
    html_form = next(form for form in posts if "_content" not in form)
    raw_form = next(form for form in posts if "_content" in form)
    return html_form, raw_form


def test_the_round_request_form_shows_only_inputs_and_posts_as_shown(staff, settings):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    html_form, raw_form = post_forms(client, "/api/v1/round-requests/")
    fields = set(html_form) - {"csrfmiddlewaretoken"}
    assert fields == {
        "size", "strategy", "random_share", "relabel", "seed", "push", "model_version"
    }
    assert html_form["size"] == str(settings.ROUND_NEXT_SIZE)
    submitted = {k: v for k, v in html_form.items() if v is not None}
    response = client.post("/api/v1/round-requests/", submitted, HTTP_ACCEPT="text/html")
    assert response.status_code == 202, response.content.decode()[-2000:]
    made = RoundRequest.objects.get()
    assert made.params["size"] == settings.ROUND_NEXT_SIZE and made.params["seed"] == 0
    assert made.status == RoundRequest.Status.QUEUED

    # The raw-content form's JSON, sent as the browsable API's script sends it.
    response = client.post(
        "/api/v1/round-requests/",
        raw_form["_content"],
        content_type=raw_form["_content_type"],
        HTTP_X_CSRFTOKEN=html_form["csrfmiddlewaretoken"],
    )
    assert response.status_code == 202, response.content
    assert RoundRequest.objects.count() == 2


def test_the_training_run_form_shows_only_inputs_and_posts_as_shown(staff):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    html_form, raw_form = post_forms(client, "/api/v1/training-runs/")
    assert set(html_form) - {"csrfmiddlewaretoken"} == {"backbone", "epochs", "mode", "dropout"}
    submitted = {k: v for k, v in html_form.items() if v is not None}
    response = client.post("/api/v1/training-runs/", submitted, HTTP_ACCEPT="text/html")
    assert response.status_code == 201, response.content.decode()[-2000:]
    run = TrainingRun.objects.get()
    assert run.params["backbone"] == "small_cnn" and run.status == TrainingRun.Status.QUEUED
    response = client.post(
        "/api/v1/training-runs/",
        raw_form["_content"],
        content_type=raw_form["_content_type"],
        HTTP_X_CSRFTOKEN=html_form["csrfmiddlewaretoken"],
    )
    assert response.status_code == 200, (raw_form["_content"], response.content)
    assert response.json()["created"] is False  # the run already in flight


def test_round_and_training_run_outputs_are_read_only_in_the_schema():
    components = schema()["components"]["schemas"]
    for name in ("RoundRequest", "TrainingRunOutput"):
        properties = components[name]["properties"]
        assert all(prop.get("readOnly") for prop in properties.values()), name
    assert set(components["RoundRequestInput"]["properties"]) == {
        "size", "strategy", "random_share", "relabel", "seed", "push", "model_version"
    }
