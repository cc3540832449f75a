"""harvest_europeana against recorded Search API responses served from a local HTTP server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotate.models import ImportReport, Item, PriorLabel
from annotate.services.europeana import HarvestError, europeana_harvest

pytestmark = pytest.mark.django_db
FIXTURES = Path(__file__).parent / "fixtures" / "europeana"


class RecordedSearchApi(BaseHTTPRequestHandler):
    requests: list[dict[str, list[str]]] = []
    fail_first_with: list[int] = []

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        query = parse_qs(urlsplit(self.path).query)
        type(self).requests.append(query)
        if type(self).fail_first_with:
            status = type(self).fail_first_with.pop(0)
            self._send(status, {"success": False, "error": "busy"}, {"Retry-After": "1"})
            return
        if query.get("wskey") != ["test-key"]:
            self._send(401, json.loads((FIXTURES / "invalid_key.json").read_text()))
            return
        page = "page1" if query.get("cursor") == ["*"] else "page2"
        self._send(200, json.loads((FIXTURES / f"search_painting_{page}.json").read_text()))

    def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def search_api(settings):
    RecordedSearchApi.requests = []
    RecordedSearchApi.fail_first_with = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordedSearchApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.EUROPEANA_API_URL = f"http://127.0.0.1:{server.server_port}/record/v2/search.json"
    settings.EUROPEANA_API_KEY = "test-key"
    yield RecordedSearchApi
    server.shutdown()
    server.server_close()


def test_it_harvests_items_with_images_per_concept_following_the_cursor(concepts, search_api):
    report, counts = europeana_harvest(concept_keys=["painting"], limit=10, sleep=lambda s: None)

    first, second = search_api.requests
    assert first["qf"] == ['skos_concept:"http://data.europeana.eu/concept/base/47"']
    assert first["media"] == ["true"] and first["cursor"] == ["*"] and first["query"] == ["*"]
    assert second["cursor"] == ["AoE/GS85MDQwMi9TS19BXzEwMDE="]

    assert counts.created == 3
    item = Item.objects.get(external_id="/90402/SK_A_1000")
    assert item.image_url == "https://lh3.example.org/images/1000.jpg"
    assert (item.title, item.provider) == ("Portrait of a Woman", "Rijksmuseum")
    assert item.metadata["item_uri"] == "http://data.europeana.eu/item/90402/SK_A_1000"
    assert list(item.prior_labels.values_list("concept__key", "source")) == [
        ("painting", "europeana")
    ]
    # The record without an image is reported, not imported.
    assert [(r.record_id, r.field) for r in report.rows.all()] == [
        ("/90402/SK_A_1002", "edmIsShownBy")
    ]


def test_harvesting_again_is_a_no_op(concepts, search_api):
    europeana_harvest(concept_keys=["painting"], limit=10, sleep=lambda s: None)
    before = (Item.objects.count(), PriorLabel.objects.count())
    _, counts = europeana_harvest(concept_keys=["painting"], limit=10, sleep=lambda s: None)
    assert (counts.created, counts.updated, counts.unchanged) == (0, 0, 3)
    assert (Item.objects.count(), PriorLabel.objects.count()) == before


def test_an_item_found_under_two_concepts_gets_both_as_priors(concepts, search_api):
    europeana_harvest(concept_keys=["painting", "drawing"], limit=10, sleep=lambda s: None)
    item = Item.objects.get(external_id="/90402/SK_A_1000")
    assert sorted(item.prior_labels.values_list("concept__key", flat=True)) == [
        "drawing",
        "painting",
    ]


def test_the_limit_stops_the_harvest(concepts, search_api):
    _, counts = europeana_harvest(concept_keys=["painting"], limit=1, sleep=lambda s: None)
    assert counts.total == 1 and len(search_api.requests) == 1
    assert search_api.requests[0]["rows"] == ["1"]


def test_a_busy_api_is_retried_after_its_retry_after(concepts, search_api):
    search_api.fail_first_with = [429, 503]
    slept: list[float] = []
    _, counts = europeana_harvest(concept_keys=["painting"], limit=10, sleep=slept.append)
    assert counts.created == 3
    assert len(slept) == 2 and all(s >= 1 for s in slept)


def test_a_refused_key_fails_with_the_apis_reason_and_a_failed_report(
    concepts, search_api, settings
):
    settings.EUROPEANA_API_KEY = "wrong"
    with pytest.raises(HarvestError, match="401: Invalid API key"):
        europeana_harvest(concept_keys=["painting"], limit=10, sleep=lambda s: None)
    assert ImportReport.objects.get().status == ImportReport.Status.FAILED


def test_the_command_needs_an_api_key_and_known_concepts(concepts, settings):
    settings.EUROPEANA_API_KEY = ""
    with pytest.raises(CommandError, match="EUROPEANA_API_KEY is not set"):
        call_command("harvest_europeana", "--concept", "painting")
    settings.EUROPEANA_API_KEY = "k"
    with pytest.raises(CommandError, match="unknown concept"):
        call_command("harvest_europeana", "--concept", "unicorn")


def test_a_busy_api_is_given_up_after_five_attempts_with_its_last_answer(concepts, search_api):
    search_api.fail_first_with = [503] * 10
    slept: list[float] = []
    with pytest.raises(HarvestError, match="answered 503: busy"):
        europeana_harvest(concept_keys=["painting"], limit=10, sleep=slept.append)
    assert len(search_api.requests) == 5 and len(slept) == 4
    assert ImportReport.objects.get().status == ImportReport.Status.FAILED
