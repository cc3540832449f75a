"""The REST API: who may do what (S1-S3, S16), allow-listed filters (S5), CSRF (S6), throttling
(S15), downloads (S17), bad input (B16), and the endpoints doing their job."""

from __future__ import annotations

import hashlib
import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

from annotate.api.authentication import AuthFailureThrottle
from annotate.models import (
    AggregatedLabel,
    Concept,
    DatasetRelease,
    Item,
    Review,
    Round,
    Volunteer,
)
from annotate.roles import ROLES
from tests.clients import as_user

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_throttles")]


@pytest.fixture
def data(concepts, people):
    painting, map_ = concepts["painting"], concepts["map"]
    a = Item.objects.create(
        external_id="a",
        title="<img src=x onerror=alert(1)>",
        image_url="javascript:alert(1)",
        uncertainty=0.1,
        n_classifications=3,
    )
    b = Item.objects.create(external_id="b", uncertainty=0.8, n_classifications=2)
    c = Item.objects.create(
        external_id="c", review_state="edited", curated_concepts=["map"], uncertainty=0.3
    )
    for item, concept, p in (
        (a, painting, 0.9),
        (b, painting, 0.4),
        (b, map_, 0.7),
        (c, painting, 0.95),
    ):
        AggregatedLabel.objects.create(
            item=item, concept=concept, posterior=p, method="dawid_skene"
        )
    volunteer = Volunteer.objects.create(key="v1", user_name="vol")
    volunteer.skills.create(concept=painting, sensitivity=0.9, specificity=0.8, n_votes=4)
    Round.objects.create(number=1, name="round 1")
    review = Review.objects.create(item=c, curator=people["curator"], action="edit", after=["map"])
    from training.models import ModelVersion

    ModelVersion.objects.create(
        status="active",
        backbone="small_cnn",
        concepts=["painting", "map"],
        thresholds=[0.5, 0.5],
        checkpoint_path="checkpoints/secret/path.json",
        checkpoint_sha256="a" * 64,
    )
    return {"a": a, "b": b, "c": c, "review": review}


@pytest.fixture
def release(data, people, django_capture_on_commit_callbacks) -> DatasetRelease:
    from annotate.services.releases import release_request

    with django_capture_on_commit_callbacks(execute=True):
        made = release_request(user=people["staff"])
    made.refresh_from_db()
    assert made.status == "succeeded", made.error
    return made


def routes(data, release) -> list[tuple[str, str]]:
    """(name, path) of every API route, with real ids."""
    from training.models import ModelVersion

    item, label = data["a"].pk, AggregatedLabel.objects.first().pk
    return [
        ("concepts", "/api/v1/concepts/"),
        ("concept", f"/api/v1/concepts/{Concept.objects.first().pk}/"),
        ("items", "/api/v1/items/"),
        ("item", f"/api/v1/items/{item}/"),
        ("labels", "/api/v1/labels/"),
        ("label", f"/api/v1/labels/{label}/"),
        ("reviews", "/api/v1/reviews/"),
        ("review", f"/api/v1/reviews/{data['review'].pk}/"),
        ("volunteers", "/api/v1/volunteers/"),
        ("volunteer", f"/api/v1/volunteers/{Volunteer.objects.get().pk}/"),
        ("rounds", "/api/v1/rounds/"),
        ("round", f"/api/v1/rounds/{Round.objects.get().pk}/"),
        ("releases", "/api/v1/releases/"),
        ("release", f"/api/v1/releases/{release.pk}/"),
        ("download", f"/api/v1/releases/{release.pk}/download/csv/"),
        ("model_versions", "/api/v1/model-versions/"),
        ("model_version", f"/api/v1/model-versions/{ModelVersion.objects.get().pk}/"),
        ("schema", "/api/v1/schema/"),
    ]


# --- S1: nobody gets in without credentials -------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete", "options"])
def test_s1_every_route_refuses_an_anonymous_client(data, release, method):
    client = APIClient()
    for name, path in routes(data, release):
        response = getattr(client, method)(path)
        assert response.status_code in (401, 403), (name, method, response.status_code)
    assert getattr(client, method)("/api/v1/predict/").status_code in (401, 403)
    docs = Client().get("/api/v1/docs/")
    assert docs.status_code == 302 and "/admin/login/" in docs["Location"]


def test_s1_health_is_the_only_open_route(client, db):
    assert client.get("/healthz").status_code == 200


# --- S2, S3: the role matrix --------------------------------------------------------------------

READS = [
    "concepts",
    "concept",
    "items",
    "item",
    "labels",
    "label",
    "reviews",
    "review",
    "volunteers",
    "volunteer",
    "rounds",
    "round",
    "releases",
    "release",
    "download",
    "schema",
]


@pytest.mark.parametrize("role", ["viewer", "curator", "staff", "admin"])
def test_every_role_reads_everything(data, release, people, role):
    client = as_user(people[role])
    for name, path in routes(data, release):
        assert client.get(path).status_code == 200, (role, name)


def test_an_account_with_no_role_sees_nothing(data, release, people):
    client = as_user(people["nobody"])
    for name, path in routes(data, release):
        assert client.get(path).status_code == 403, name
    client = Client()
    client.force_login(people["nobody"])
    assert client.get("/api/v1/docs/").status_code == 302


@pytest.mark.parametrize("role", [*ROLES, "nobody"])
@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_nothing_is_changed_or_deleted_through_the_api(data, release, people, role, method):
    client = as_user(people[role])
    for name, path in routes(data, release):
        response = getattr(client, method)(path, {}, format="json")
        expected = (403,) if role == "nobody" else (403, 405)
        assert response.status_code in expected, (role, name, method, response.status_code)
    assert Review.objects.count() == 1 and DatasetRelease.objects.count() == 1


def review_payload(data) -> dict:
    return {"item": data["b"].pk, "action": "edit", "concepts": ["painting"], "comment": "ok"}


@pytest.mark.parametrize(
    ("role", "expected"),
    [("nobody", 403), ("viewer", 403), ("curator", 201), ("staff", 201), ("admin", 201)],
)
def test_only_curators_and_up_record_reviews(data, people, role, expected):
    response = as_user(people[role]).post("/api/v1/reviews/", review_payload(data), format="json")
    assert response.status_code == expected, response.content
    assert Review.objects.count() == (2 if expected == 201 else 1)


@pytest.mark.parametrize(
    ("role", "expected"),
    [("nobody", 403), ("viewer", 403), ("curator", 403), ("staff", 202), ("admin", 202)],
)
def test_only_staff_and_admins_make_releases(
    data, people, role, expected, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = as_user(people[role]).post(
            "/api/v1/releases/", {"formats": ["csv"]}, format="json"
        )
    assert response.status_code == expected, response.content
    assert DatasetRelease.objects.count() == (1 if expected == 202 else 0)


@pytest.mark.parametrize("role", ["viewer", "curator", "staff"])
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/items/",
        "/api/v1/labels/",
        "/api/v1/concepts/",
        "/api/v1/volunteers/",
        "/api/v1/rounds/",
        "/api/v1/model-versions/",
    ],
)
def test_read_only_collections_refuse_a_post(data, people, role, path):
    assert as_user(people[role]).post(path, {}, format="json").status_code in (403, 405)


# --- the endpoints at work ------------------------------------------------------------------------


def test_a_curator_edit_lands_in_the_audit_and_the_item(data, people):
    response = as_user(people["curator"]).post(
        "/api/v1/reviews/", review_payload(data), format="json"
    )
    body = response.json()
    assert (body["action"], body["after"], body["curator"]) == ("edit", ["painting"], "curator")
    item = as_user(people["viewer"]).get(f"/api/v1/items/{data['b'].pk}/").json()
    assert (item["review_state"], item["final_labels"]) == ("edited", ["painting"])
    assert {label["concept"] for label in item["labels"]} == {"painting", "map"}


def test_items_filter_by_final_and_aggregated_concept_state_and_uncertainty(data, people):
    client = as_user(people["viewer"])

    def ids(query: str) -> list[str]:
        response = client.get(f"/api/v1/items/?{query}")
        assert response.status_code == 200, response.content
        return [r["external_id"] for r in response.json()["results"]]

    assert ids("concept=painting") == ["a"]  # c's curator label is map, b is below 0.5
    assert ids("concept=map") == ["b", "c"]
    assert ids("aggregated_concept=painting") == ["a", "c"]
    assert ids("review_state=edited") == ["c"]
    assert ids("min_uncertainty=0.2&max_uncertainty=0.5") == ["c"]
    assert ids("ordering=-uncertainty") == ["b", "c", "a"]
    listed = client.get("/api/v1/items/").json()["results"]
    assert {r["external_id"]: r["final_labels"] for r in listed} == {
        "a": ["painting"],
        "b": ["map"],
        "c": ["map"],
    }


def test_labels_filter_by_item_and_concept(data, people):
    client = as_user(people["viewer"])
    rows = client.get(f"/api/v1/labels/?item={data['b'].pk}&concept=map").json()["results"]
    assert [(r["item_external_id"], r["concept"], r["posterior"]) for r in rows] == [
        ("b", "map", 0.7)
    ]


def test_volunteers_come_with_their_skills(data, people):
    [volunteer] = as_user(people["viewer"]).get("/api/v1/volunteers/").json()["results"]
    assert volunteer["skills"] == [
        {"concept": "painting", "sensitivity": 0.9, "specificity": 0.8, "n_votes": 4}
    ]


def test_the_big_lists_page_through_every_row_without_counting(data, people, concepts):
    items = Item.objects.bulk_create(Item(external_id=f"x{i:03d}") for i in range(60))
    AggregatedLabel.objects.bulk_create(
        AggregatedLabel(item=item, concept=concepts["map"], posterior=0.5, method="majority")
        for item in items
    )
    client = as_user(people["viewer"])
    for path, total in (("/api/v1/labels/", 64), ("/api/v1/items/", 63)):
        seen, url = [], path
        while url:
            with CaptureQueriesContext(connection) as queries:
                page = client.get(url).json()
            assert "count" not in page
            assert not [q for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
            seen += [row["id"] for row in page["results"]]
            url = page["next"]
        assert len(seen) == len(set(seen)) == total
    second = client.get("/api/v1/labels/?page=2&ordering=-id").json()
    assert second["previous"].endswith("/api/v1/labels/?ordering=-id") and second["next"] is None
    for page in ("3", "0", "-1", "last", "1e309", "99999999999999999999"):
        assert client.get(f"/api/v1/labels/?page={page}").status_code == 404


def test_the_schema_lists_labels_and_items_without_a_count(people):
    schema = as_user(people["viewer"]).get("/api/v1/schema/?format=json").json()
    pages = schema["components"]["schemas"]
    assert "count" not in pages["PaginatedAggregatedLabelList"]["properties"]
    assert "count" not in pages["PaginatedItemList"]["properties"]
    assert "count" in pages["PaginatedVolunteerList"]["properties"]


def test_the_item_list_costs_the_same_few_queries_for_any_page(
    data, people, django_assert_max_num_queries
):
    Item.objects.bulk_create(Item(external_id=f"x{i}") for i in range(40))
    client = as_user(people["viewer"])
    with django_assert_max_num_queries(8):
        assert client.get("/api/v1/items/").status_code == 200
    with django_assert_max_num_queries(8):
        assert client.get("/api/v1/labels/").status_code == 200
    with django_assert_max_num_queries(8):
        assert client.get("/api/v1/volunteers/").status_code == 200


def test_s13_unsafe_image_urls_are_not_handed_on_and_text_stays_data(data, people):
    response = as_user(people["viewer"]).get(f"/api/v1/items/{data['a'].pk}/")
    assert response["Content-Type"] == "application/json"
    assert response.json()["image_url"] == ""
    assert response.json()["title"] == "<img src=x onerror=alert(1)>"


def test_a_staff_release_downloads_in_every_format_with_matching_hashes(
    data, people, django_capture_on_commit_callbacks
):
    client = as_user(people["staff"])
    with django_capture_on_commit_callbacks(execute=True):
        created = client.post("/api/v1/releases/", {"note": "api"}, format="json")
    assert created.status_code == 202
    detail = client.get(f"/api/v1/releases/{created.json()['id']}/").json()
    assert detail["status"] == "succeeded" and detail["n_items"] == 3
    hashes = {f["path"]: f["sha256"] for f in detail["files"]}
    names = {
        "csv": "labels.csv",
        "jsonl": "labels.jsonl",
        "webannotation": "annotations.jsonld",
        "imagefolder": "imagefolder.zip",
    }
    for what, url in detail["downloads"].items():
        response = as_user(people["viewer"]).get(url)
        assert response.status_code == 200, what
        body = b"".join(response.streaming_content)
        assert response["Content-Disposition"].startswith("attachment;")  # S17
        assert (
            f'filename="crowdloop-release-{detail["version"]}-' in response["Content-Disposition"]
        )
        assert response["X-Content-Type-Options"] == "nosniff"
        if what == "manifest":
            assert json.loads(body)["content_hash"] == detail["content_hash"]
        else:
            assert hashlib.sha256(body).hexdigest() == hashes[names[what]]


def test_s11_s17_a_download_cannot_name_its_own_path(release, people):
    client = as_user(people["viewer"])
    for what in ("..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f", "passwd", "CSV", "x" * 40):
        response = client.get(f"/api/v1/releases/{release.pk}/download/{what}/")
        assert response.status_code == 404, what
    assert client.get("/api/v1/releases/999/download/csv/").status_code == 404


def test_the_docs_page_lists_every_endpoint_with_its_permission(data, release, people):
    client = Client()
    client.force_login(people["viewer"])
    page = client.get("/api/v1/docs/").content.decode()
    for path in (
        "/api/v1/items/",
        "/api/v1/reviews/",
        "/api/v1/releases/{id}/download/{what}/",
        "/api/v1/model-versions/",
        "/api/v1/predict/",
    ):
        assert f"<code>{path}</code>" in page
    assert "annotate.add_review" in page and "annotate.add_datasetrelease" in page
    assert "curator, staff, admin" in page


def test_the_schema_states_each_operations_permission(people):
    response = as_user(people["viewer"]).get("/api/v1/schema/?format=json")
    schema = json.loads(response.content)
    post = schema["paths"]["/api/v1/reviews/"]["post"]
    assert post["x-required-permission"]["permission"] == "annotate.add_review"
    assert schema["paths"]["/api/v1/items/"]["get"]["x-required-permission"]["roles"] == [
        "viewer",
        "curator",
        "staff",
        "admin",
    ]


# --- S5: only allow-listed filters and orderings ------------------------------------------------


def test_s5_ordering_by_a_secret_is_ignored(data, people):
    client = as_user(people["viewer"])
    plain = client.get("/api/v1/reviews/").json()
    for ordering in ("curator__password", "-curator__password", "item__metadata", "password"):
        response = client.get(f"/api/v1/reviews/?ordering={ordering}")
        assert response.status_code == 200
        assert response.json() == plain


def test_s5_filtering_on_a_related_secret_is_ignored(data, people):
    client = as_user(people["viewer"])
    curator = people["curator"]
    curator.set_password("a-long-test-password-1")
    curator.save()
    prefix = curator.password[:12]
    hit = client.get(f"/api/v1/reviews/?curator__password__startswith={prefix}").json()
    miss = client.get("/api/v1/reviews/?curator__password__startswith=nope").json()
    assert hit == miss and hit["count"] == 1


# --- S6: sessions need CSRF -----------------------------------------------------------------------


def test_s6_a_session_post_without_a_csrf_token_is_refused(data, people):
    client = Client(enforce_csrf_checks=True)
    client.force_login(people["curator"])
    response = client.post(
        "/api/v1/reviews/", json.dumps(review_payload(data)), content_type="application/json"
    )
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert Review.objects.count() == 1


def test_a_token_client_needs_no_csrf_token(data, people):
    token = Token.objects.create(user=people["curator"])
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = client.post("/api/v1/reviews/", review_payload(data), format="json")
    assert response.status_code == 201


# --- S15: throttling ------------------------------------------------------------------------------


def test_s15_a_user_over_the_rate_gets_429(data, people, monkeypatch):
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"user": "3/minute"})
    client = as_user(people["viewer"])
    codes = [client.get("/api/v1/concepts/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


def test_s15_guessing_tokens_ends_in_429_even_for_the_right_token(data, people, monkeypatch):
    monkeypatch.setattr(AuthFailureThrottle, "THROTTLE_RATES", {"auth_failures": "3/minute"})
    monkeypatch.setattr(AnonRateThrottle, "THROTTLE_RATES", {"anon": "1000/minute"})
    good = Token.objects.create(user=people["viewer"]).key
    client = APIClient()
    codes = []
    for guess in ("a" * 40, "b" * 40, "c" * 40, "d" * 40):
        client.credentials(HTTP_AUTHORIZATION=f"Token {guess}")
        codes.append(client.get("/api/v1/concepts/").status_code)
    assert codes[:3] in ([401] * 3, [403] * 3) and codes[3] == 429
    client.credentials(HTTP_AUTHORIZATION=f"Token {good}")
    assert client.get("/api/v1/concepts/").status_code == 429


# --- S16: no self-registration --------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/register/",
        "/api/v1/users/",
        "/api/v1/auth/register/",
        "/accounts/signup/",
        "/register/",
        "/signup/",
    ],
)
def test_s16_there_is_no_route_to_register(people, path):
    assert (
        as_user(people["admin"]).post(path, {"username": "x", "password": "y"}).status_code == 404
    )
    assert APIClient().post(path, {"username": "x", "password": "y"}).status_code in (401, 403, 404)


# --- B16: bad input is a 400 with field errors, never a 500 ---------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"item": "abc", "action": "accept"}, "item"),
        ({"item": 1e308 * 10, "action": "accept"}, "item"),
        ({"item": 10**30, "action": "accept"}, "item"),
        ({"item": -1, "action": "accept"}, "item"),
        ({"item": 1, "action": 5}, "action"),
        ({"item": 1, "action": "delete"}, "action"),
        ({"item": 1, "action": "edit", "concepts": "painting"}, "concepts"),
        ({"item": 1, "action": "edit", "concepts": [{"a": 1}]}, "concepts"),
        ({"item": 1, "action": "accept", "comment": "x" * 5000}, "comment"),
        ({"item": 1, "action": "accept", "comment": "a\x00b"}, "comment"),
        ({"item": 999999, "action": "accept"}, "item"),
    ],
)
def test_b16_bad_review_input_is_a_400_with_the_field_named(data, people, payload, field):
    if payload.get("item") == 1:
        payload = {**payload, "item": data["a"].pk}
    body = json.dumps(payload).replace("Infinity", "1e309")
    response = as_user(people["curator"]).post(
        "/api/v1/reviews/", body, content_type="application/json"
    )
    assert response.status_code == 400, response.content
    assert field in response.json()


def test_b16_a_review_the_service_refuses_is_a_400(data, people):
    payload = {"item": data["a"].pk, "action": "edit", "concepts": ["no-such-concept"]}
    response = as_user(people["curator"]).post("/api/v1/reviews/", payload, format="json")
    assert response.status_code == 400 and "no-such-concept" in response.content.decode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"min_confidence": 1e309}', "min_confidence"),
        ('{"min_confidence": "high"}', "min_confidence"),
        ('{"min_confidence": 0.1}', "min_confidence"),
        ('{"formats": ["exe"]}', "formats"),
        ('{"formats": "csv"}', "formats"),
        ('{"concepts": ["../../etc"]}', "concepts"),
        ('{"reviewed_only": "perhaps"}', "reviewed_only"),
        ('{"note": "' + "n" * 600 + '"}', "note"),
    ],
)
def test_b16_bad_release_input_is_a_400_with_the_field_named(data, people, body, field):
    response = as_user(people["staff"]).post(
        "/api/v1/releases/", body, content_type="application/json"
    )
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert DatasetRelease.objects.count() == 0


def test_b16_unknown_concepts_in_a_release_are_a_400(data, people):
    response = as_user(people["staff"]).post(
        "/api/v1/releases/", {"concepts": ["nope"]}, format="json"
    )
    assert response.status_code == 400 and "nope" in response.content.decode()


@pytest.mark.parametrize(
    "query",
    [
        "min_uncertainty=1e309",
        "min_uncertainty=abc",
        "max_uncertainty=NaN",
        "review_state=gone",
        "image_state=%00",
        "concept=" + "x" * 100,
    ],
)
def test_b16_bad_filters_are_a_400(data, people, query):
    response = as_user(people["viewer"]).get(f"/api/v1/items/?{query}")
    assert response.status_code == 400, response.content


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/items/9999999999999999999/",
        "/api/v1/items/99999999999999999999999/",
        "/api/v1/items/abc/",
        "/api/v1/items/?page=1e309",
        "/api/v1/labels/?item=1e309",
        "/api/v1/labels/?item=99999999999999999999",
    ],
)
def test_b16_huge_or_odd_ids_are_a_404_or_400(data, people, path):
    assert as_user(people["viewer"]).get(path).status_code in (400, 404)


def test_b16_a_ten_megabyte_body_is_refused_without_a_500(data, people):
    body = json.dumps({"item": data["a"].pk, "action": "accept", "comment": "x" * 10_000_000})
    response = as_user(people["curator"]).post(
        "/api/v1/reviews/", body, content_type="application/json"
    )
    assert response.status_code in (400, 413)
    assert Review.objects.count() == 1


def test_b16_malformed_json_is_a_400(data, people):
    response = as_user(people["curator"]).post(
        "/api/v1/reviews/", '{"item": ', content_type="application/json"
    )
    assert response.status_code == 400
