"""The model side's API: model versions (read-only, no server paths) and predict (one image in,
the active model's scores and Grad-CAM maps out, for staff only)."""

from __future__ import annotations

import json

import pytest

from tests.clients import as_user
from training.models import ModelVersion

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_throttles")]


# --- model versions -------------------------------------------------------------------------------


@pytest.fixture
def active_version(db) -> ModelVersion:
    return ModelVersion.objects.create(
        status="active",
        backbone="small_cnn",
        concepts=["painting", "map"],
        thresholds=[0.5, 0.5],
        checkpoint_path="checkpoints/secret/path.json",
        checkpoint_sha256="a" * 64,
    )


def test_model_versions_are_listed_without_server_paths(active_version, people):
    [version] = (
        as_user(people["viewer"]).get("/api/v1/model-versions/?status=active").json()["results"]
    )
    assert (version["status"], version["concepts"]) == ("active", ["painting", "map"])
    assert "checkpoint_path" not in version and "secret" not in json.dumps(version)
    assert (
        as_user(people["viewer"]).get("/api/v1/model-versions/?status=archived").json()["count"]
        == 0
    )


# --- predict ------------------------------------------------------------------------------------


@pytest.fixture
def tiny_model(db, settings):
    """A small CNN saved as the active model version (untrained: only the plumbing is tested)."""
    from pathlib import Path

    import torch

    from ml.checkpoint import save_checkpoint
    from ml.models import create_model

    torch.manual_seed(0)
    model = create_model("small_cnn", 3, widths=[4, 8], input_size=16)
    root = Path(settings.ARTIFACT_ROOT) / "checkpoints" / "v1"
    saved = save_checkpoint(
        root,
        model,
        config={"test": True},
        concepts=["painting", "photograph", "map"],
        thresholds=[0.5, 0.5, 0.5],
    )
    return ModelVersion.objects.create(
        status="active",
        backbone="small_cnn",
        concepts=["painting", "photograph", "map"],
        thresholds=[0.0, 1.0, 0.5],
        checkpoint_path="checkpoints/v1/model.json",
        checkpoint_sha256=saved.sha256,
    )


def test_staff_get_scores_and_maps_for_an_uploaded_image(tiny_model, people):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.images import png_bytes

    upload = SimpleUploadedFile("../../evil.png", png_bytes(), content_type="image/png")
    response = as_user(people["staff"]).post(
        "/api/v1/predict/", {"image": upload, "maps": 2}, format="multipart"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body["scores"]) == {"painting", "photograph", "map"}
    assert all(0 <= p <= 1 for p in body["scores"].values())
    assert "painting" in body["labels"] and "photograph" not in body["labels"]
    assert body["model_version"]["id"] == tiny_model.pk
    assert [m["concept"] for m in body["maps"]] and len(body["maps"]) == 2
    import base64

    assert base64.b64decode(body["maps"][0]["png_base64"]).startswith(b"\x89PNG")


@pytest.mark.parametrize("role", ["nobody", "viewer", "curator"])
def test_predict_is_for_staff(tiny_model, people, role):
    response = as_user(people[role]).post(
        "/api/v1/predict/", {"url": "https://images.example.org/a.png"}, format="json"
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:6379/",
        "file:///etc/passwd",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_predict_refuses_urls_into_our_own_network(tiny_model, people, url):
    response = as_user(people["staff"]).post("/api/v1/predict/", {"url": url}, format="json")
    assert response.status_code == 400
    assert "url" in response.json()


def test_predict_refuses_what_is_not_an_image_and_asks_for_one_input(tiny_model, people):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client = as_user(people["staff"])
    html = SimpleUploadedFile("a.png", b"<html><script>alert(1)</script></html>")
    assert client.post("/api/v1/predict/", {"image": html}, format="multipart").status_code == 400
    assert client.post("/api/v1/predict/", {}, format="json").status_code == 400
    body = '{"url": "https://images.example.org/a.png", "maps": 1e309}'
    response = client.post("/api/v1/predict/", body, content_type="application/json")
    assert response.status_code == 400 and "maps" in response.json()


def test_predict_without_an_active_model_is_a_conflict(db, people):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.images import png_bytes

    upload = SimpleUploadedFile("a.png", png_bytes())
    response = as_user(people["staff"]).post(
        "/api/v1/predict/", {"image": upload}, format="multipart"
    )
    assert response.status_code == 409


def test_predictions_with_maps_read_and_verify_the_checkpoint_once_per_process(
    tiny_model, people, monkeypatch
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.images import png_bytes
    from training.services import model_cache

    model_cache.model_cache_clear()
    loads = []
    real_load = model_cache.load_checkpoint

    def counting_load(*args, **kwargs):
        loads.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(model_cache, "load_checkpoint", counting_load)
    for _ in range(3):
        upload = SimpleUploadedFile("a.png", png_bytes(), content_type="image/png")
        response = as_user(people["staff"]).post(
            "/api/v1/predict/", {"image": upload, "maps": 1}, format="multipart"
        )
        assert response.status_code == 200, response.content
        assert len(response.json()["maps"]) == 1
    model_cache.model_cache_clear()
    assert len(loads) == 1
