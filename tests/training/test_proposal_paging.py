"""Paging the proposal collection: a page costs the same whatever the size of the collection (the
total is counted once, the links carry keyset cursors), and a walk by ``next`` meets every
proposal exactly once, even while the crowd labels items in between."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from annotate.models import AggregatedLabel, Concept, Item
from annotate.services.datasets.records import concept_uri
from tests.clients import as_user
from training.models import ModelVersion, Prediction
from training.services.proposals import PAGE_SIZE, proposal_total

pytestmark = pytest.mark.django_db

URL = "/api/v1/proposals/"
COLLECTION = f"http://testserver{URL}"
KEYS = ["painting", "photograph", "map"]
THRESHOLDS = [0.6, 0.5, 0.9]


def scores_of(i: int) -> list[float]:
    """Painting always proposed, photograph every other item, map every third: 55 proposals in
    every 30 items."""
    return [0.8 + (i % 5) / 100, 0.7 if i % 2 == 0 else 0.3, 0.95 if i % 3 == 0 else 0.5]


def proposals_of(n: int) -> list[tuple[str, str]]:
    """(external id, concept key) of every proposal of ``n`` items, in the collection's order."""
    return [
        (f"/2021672/record_{i:05d}", key)
        for i in range(n)
        for key, score, cut in sorted(zip(KEYS, scores_of(i), THRESHOLDS, strict=True))
        if score >= cut
    ]


def pool(n: int) -> ModelVersion:
    """An active version that scored ``n`` unlabelled items."""
    version = ModelVersion.objects.create(
        status="active",
        backbone="small_cnn",
        concepts=KEYS,
        thresholds=THRESHOLDS,
        checkpoint_path="x.json",
        checkpoint_sha256="0" * 64,
    )
    items = Item.objects.bulk_create(Item(external_id=f"/2021672/record_{i:05d}") for i in range(n))
    Prediction.objects.bulk_create(
        Prediction(
            model_version=version,
            item=item,
            uncertainty=0.5,
            scores=Prediction.pack(np.array(scores_of(i))),
        )
        for i, item in enumerate(items)
    )
    return version


@pytest.fixture
def viewer(people, fresh_throttles):
    return as_user(people["viewer"])


def target_and_key(annotation: dict) -> tuple[str, str]:
    keys = {concept_uri(c): c.key for c in Concept.objects.filter(key__in=KEYS)}
    return annotation["target"].rsplit("/", 1)[-1], keys[annotation["body"]]


def walk(viewer, url: str) -> list[dict]:
    pages = []
    while url:
        response = viewer.get(url)
        assert response.status_code == 200, url
        pages.append(response.json())
        url = pages[-1].get("next")
    return pages


def queries(viewer, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert viewer.get(url).status_code == 200
    return len(captured)


def page_costs(viewer) -> dict[str, int]:
    """Queries of the collection and of its pages reached by each kind of link, once the total
    was counted."""
    collection = viewer.get(URL).json()
    first = viewer.get(collection["first"]).json()
    second = viewer.get(first["next"]).json()
    third = viewer.get(second["next"]).json()
    return {
        "collection": queries(viewer, URL),
        "first": queries(viewer, collection["first"]),
        "next": queries(viewer, second["next"]),
        "prev": queries(viewer, third["prev"]),
        "last": queries(viewer, collection["last"]),
    }


def test_a_page_request_costs_as_many_queries_whatever_the_number_of_proposals(
    concepts, viewer, monkeypatch
):
    # Counting reads 100 items a query here, so a page that counted the collection would cost
    # three times the queries in a collection three times the size.
    monkeypatch.setattr("training.services.proposals.CHUNK_SIZE", 100)
    small = pool(600)  # 1,100 proposals: 11 full pages
    small_costs = page_costs(viewer)
    assert proposal_total() == 1100
    ModelVersion.objects.filter(pk=small.pk).update(status="archived")
    Item.objects.all().delete()
    pool(1800)  # 3,300 proposals: 33 full pages
    large_costs = page_costs(viewer)
    assert proposal_total() == 3300

    assert large_costs == small_costs
    assert max(small_costs.values()) < 1800 / 100  # fewer than one read per 100 items


def test_walking_the_pages_by_next_yields_every_proposal_exactly_once(concepts, viewer):
    pool(600)
    expected = proposals_of(600)
    collection = viewer.get(URL).json()
    assert collection["total"] == len(expected) == 1100
    assert collection["last"] == f"{COLLECTION}?page=11"

    pages = walk(viewer, collection["first"])
    assert [page["id"] for page in pages] == [f"{COLLECTION}?page={n}" for n in range(1, 12)]
    assert [page["startIndex"] for page in pages] == [n * PAGE_SIZE for n in range(11)]
    assert all(page["partOf"]["total"] == 1100 for page in pages)
    assert all(len(page["items"]) == PAGE_SIZE for page in pages)
    walked = [target_and_key(a) for page in pages for a in page["items"]]
    assert walked == [(external_id.rsplit("/", 1)[-1], key) for external_id, key in expected]
    assert len({a["id"] for page in pages for a in page["items"]}) == 1100

    # Back by prev from the last page: the same pages, in reverse.
    back = [pages[-1]]
    while "prev" in back[-1]:
        back.append(viewer.get(back[-1]["prev"]).json())
    assert [page["items"] for page in back] == [page["items"] for page in reversed(pages)]
    assert back[-1]["id"] == f"{COLLECTION}?page=1" and "prev" not in back[-1]

    # A page asked for by number alone, from either end, is the page the walk met.
    for number in (2, 5, 10, 11):
        assert viewer.get(URL, {"page": number}).json()["items"] == pages[number - 1]["items"]
    assert viewer.get(collection["last"]).json()["items"] == pages[-1]["items"]


def test_a_walk_meets_every_proposal_once_while_the_crowd_labels_items(concepts, viewer):
    pool(600)
    expected = [(e.rsplit("/", 1)[-1], key) for e, key in proposals_of(600)]
    first = viewer.get(URL, {"page": 1}).json()
    second = viewer.get(first["next"]).json()
    served = [target_and_key(a) for page in (first, second) for a in page["items"]]

    # The crowd labels an item already served: it is no proposal any more.
    gone = Item.objects.get(external_id="/2021672/record_00004")
    AggregatedLabel.objects.create(
        item=gone,
        concept=concepts["painting"],
        posterior=0.9,
        votes_for=3,
        votes_against=0,
        method="majority",
    )
    rest = walk(viewer, second["next"])

    walked = served + [target_and_key(a) for page in rest for a in page["items"]]
    assert walked == expected  # nothing skipped, nothing twice
    removed = sum(1 for external_id, _ in expected if external_id == "record_00004")
    assert rest[0]["partOf"]["total"] == 1100 - removed  # a new crowd label counts at once
    assert viewer.get(URL).json()["total"] == 1100 - removed


@pytest.mark.parametrize(
    "query",
    [
        {"page": "2", "after": "x"},
        {"page": "2", "after": "12"},
        {"page": "2", "after": "0.painting"},
        {"page": "2", "before": "12.no such key"},
        {"page": "1", "after": "12.painting"},
        {"page": "3", "after": "12.painting", "before": "40.map"},
    ],
)
def test_a_malformed_cursor_is_not_found(concepts, viewer, query):
    pool(60)
    assert viewer.get(URL, query).status_code == 404
