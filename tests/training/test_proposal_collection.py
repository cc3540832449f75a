"""Enrichment proposals over the API: a W3C Web Annotation AnnotationCollection in pages, each
annotation with the model's confidence and the model version as its generator."""

from __future__ import annotations

import numpy as np
import pytest

from annotate.models import AggregatedLabel, Item
from annotate.services.datasets.records import concept_uri, item_uri
from annotate.services.datasets.writers import W3C_CONTEXT
from tests.clients import as_user
from training.models import ModelVersion, Prediction
from training.services.proposals import PAGE_SIZE

pytestmark = pytest.mark.django_db

URL = "/api/v1/proposals/"
COLLECTION = f"http://testserver{URL}"
MEDIA_TYPE = 'application/ld+json; profile="http://www.w3.org/ns/anno.jsonld"'
KEYS = ["painting", "photograph", "map"]
THRESHOLDS = [0.6, 0.5, 0.9]


def scores_of(i: int) -> list[float]:
    """Item i's scores: painting always proposed, photograph every other item, map every third."""
    return [0.8 + (i % 5) / 100, 0.7 if i % 2 == 0 else 0.3, 0.95 if i % 3 == 0 else 0.5]


@pytest.fixture
def proposals(concepts):
    """An active model version and 60 unlabelled items it scored (110 proposals), plus an item
    the crowd labelled, whose high scores are no proposal."""
    version = ModelVersion.objects.create(
        status="active", backbone="small_cnn", concepts=KEYS, thresholds=THRESHOLDS,
        checkpoint_path="x.json", checkpoint_sha256="0" * 64,
    )
    expected = []
    for i in range(60):
        item = Item.objects.create(external_id=f"/2021672/record_{i:03d}")
        scores = scores_of(i)
        Prediction.objects.create(model_version=version, item=item,
                                  scores=Prediction.pack(np.array(scores)), uncertainty=0.5)
        expected += [(item, key, float(np.float32(s)))
                     for key, s, cut in sorted(zip(KEYS, scores, THRESHOLDS, strict=True))
                     if s >= cut]
    labelled = Item.objects.create(external_id="local-labelled", n_classifications=4)
    AggregatedLabel.objects.create(item=labelled, concept=concepts["painting"], posterior=0.9,
                                   votes_for=4, votes_against=0, method="majority")
    Prediction.objects.create(model_version=version, item=labelled,
                              scores=Prediction.pack(np.array([0.99, 0.99, 0.99])),
                              uncertainty=0.5)
    return version, expected


@pytest.fixture
def viewer(people):
    return as_user(people["viewer"])


def test_the_collection_has_a_total_and_first_and_last_pages_as_json_ld(proposals, viewer):
    _, expected = proposals
    assert PAGE_SIZE < len(expected) <= 2 * PAGE_SIZE  # two pages, the second one partial

    response = viewer.get(URL)

    assert response.status_code == 200
    assert response["Content-Type"] == MEDIA_TYPE
    body = response.json()
    assert body["@context"][0] == W3C_CONTEXT
    assert body["@context"][1]["confidence"]["@id"] == "crowdloop:confidence"
    assert body["id"] == COLLECTION and body["type"] == "AnnotationCollection"
    assert body["total"] == len(expected) == 110
    assert body["first"] == f"{COLLECTION}?page=1"
    assert body["last"] == f"{COLLECTION}?page=2"
    assert "items" not in body


def test_pages_link_to_each_other_and_together_hold_every_proposal_once(proposals, viewer):
    version, expected = proposals
    first = viewer.get(viewer.get(URL).json()["first"])
    assert first["Content-Type"] == MEDIA_TYPE
    page1 = first.json()
    assert page1["type"] == "AnnotationPage" and page1["id"] == f"{COLLECTION}?page=1"
    assert page1["@context"][0] == W3C_CONTEXT
    assert page1["partOf"]["id"] == COLLECTION and page1["partOf"]["total"] == 110
    assert page1["partOf"]["type"] == "AnnotationCollection"
    assert page1["startIndex"] == 0 and "prev" not in page1
    assert len(page1["items"]) == PAGE_SIZE

    page2 = viewer.get(page1["next"]).json()
    assert page2["id"] == f"{COLLECTION}?page=2" == page1["partOf"]["last"]
    assert page2["startIndex"] == PAGE_SIZE
    assert page2["prev"] == f"{COLLECTION}?page=1" and "next" not in page2
    assert len(page2["items"]) == 110 - PAGE_SIZE

    annotations = page1["items"] + page2["items"]
    assert [(a["target"], a["body"]) for a in annotations] == [
        (item_uri(item.external_id, item.metadata), concept_uri(concept))
        for item, key, _ in expected
        for concept in [item_concept(key)]
    ]
    assert len({a["id"] for a in annotations}) == 110
    assert all(a["id"].startswith(f"urn:crowdloop:model:{version.pk}:proposal:")
               for a in annotations)


def item_concept(key: str):  # type: ignore[no-untyped-def]
    from annotate.models import Concept

    return Concept.objects.get(key=key)


def test_each_annotation_carries_the_models_confidence_and_the_version_as_generator(
    proposals, viewer
):
    version, expected = proposals
    annotations = viewer.get(URL, {"page": 1}).json()["items"]

    generator = {
        "id": f"http://testserver/api/v1/model-versions/{version.pk}/",
        "type": "Software",
        "name": f"crowdloop model v{version.pk} (small_cnn)",
    }
    assert len(annotations) == PAGE_SIZE
    for annotation, (_, key, score) in zip(annotations, expected, strict=False):
        assert annotation["type"] == "Annotation" and annotation["motivation"] == "tagging"
        assert annotation["generator"] == generator
        assert annotation["confidence"] == pytest.approx(score, abs=1e-6)
        assert annotation["confidence"] >= THRESHOLDS[KEYS.index(key)] - 1e-6
    assert viewer.get(generator["id"]).status_code == 200  # the generator's id is a real URL


def test_without_an_active_model_the_collection_is_empty_and_has_no_pages(concepts, viewer):
    body = viewer.get(URL).json()

    assert body["type"] == "AnnotationCollection" and body["total"] == 0
    assert "first" not in body and "last" not in body
    assert viewer.get(URL, {"page": 1}).status_code == 404


@pytest.mark.parametrize("page", ["3", "0", "-1", "x", "１"])
def test_a_page_outside_the_collection_is_not_found(proposals, viewer, page):
    assert viewer.get(URL, {"page": page}).status_code == 404


def test_an_account_without_a_role_may_not_read_proposals(proposals, people):
    assert as_user(people["nobody"]).get(URL).status_code == 403
    assert as_user(None).get(URL).status_code in (401, 403)
