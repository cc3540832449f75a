"""Who may retrain, and what the API, the admin pages and the progress endpoints answer."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from kombu.exceptions import OperationalError as KombuOperationalError

from training.models import ModelVersion, TrainingRun


@pytest.fixture
def trainer(db, django_user_model):
    user = django_user_model.objects.create_user(
        "tess", password="a-long-test-password", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="training"))
    return user


@pytest.fixture
def trainer_client(client, trainer):
    client.force_login(trainer)
    return client


@pytest.fixture
def sent(monkeypatch):
    ids: list[int] = []
    monkeypatch.setattr("training.tasks.training_run_task.apply_async",
                        lambda kwargs, **_: ids.append(kwargs["run_id"]))
    return ids


URL = "/api/v1/training-runs/"


def test_the_api_creates_a_run_then_returns_the_one_in_flight(trainer_client, sent):
    first = trainer_client.post(URL, {"epochs": 3}, content_type="application/json")
    assert first.status_code == 201, first.content
    assert first.json()["created"] is True and first.json()["run"]["params"]["epochs"] == 3
    second = trainer_client.post(URL, {}, content_type="application/json")
    assert second.status_code == 200 and second.json()["created"] is False
    assert second.json()["run"]["id"] == first.json()["run"]["id"]
    listing = trainer_client.get(URL).json()
    assert listing["count"] == 1
    detail = trainer_client.get(f"{URL}{first.json()['run']['id']}/")
    assert detail.status_code == 200 and detail.json()["status"] == "queued"


@pytest.mark.parametrize("body", [{"epochs": 0}, {"backbone": "nope"}, {"epochs": 1e309},
                                  {"mode": "<script>"}])
def test_the_api_answers_400_to_bad_parameters(trainer_client, sent, body):
    response = trainer_client.post(URL, body, content_type="application/json")
    assert response.status_code == 400
    assert not TrainingRun.objects.exists()


def test_the_api_answers_503_with_a_clear_body_when_the_queue_is_down(
    transactional_db, trainer_client, monkeypatch
):
    def down(**_):
        raise KombuOperationalError("Connection refused")

    monkeypatch.setattr("training.tasks.training_run_task.apply_async", down)
    response = trainer_client.post(URL, {}, content_type="application/json")
    assert response.status_code == 503
    body = response.json()
    assert "unreachable" in body["detail"] and body["run"]["status"] == "queued"
    assert response["Retry-After"] == "60"


def test_curators_and_anonymous_users_cannot_train(client, curator, sent):
    assert client.post(URL, {}, content_type="application/json").status_code in (401, 403)
    client.force_login(curator)
    assert client.post(URL, {}, content_type="application/json").status_code == 403
    assert client.get(URL).status_code == 403
    response = client.post(reverse("admin:training_trainingrun_retrain"))
    assert response.status_code in (302, 403)
    assert not TrainingRun.objects.exists()


def test_the_retrain_button_requests_a_run_and_shows_it(transactional_db, trainer_client, sent):
    page = trainer_client.get(reverse("admin:training_trainingrun_changelist"))
    assert page.status_code == 200 and b"Retrain now" in page.content
    response = trainer_client.post(reverse("admin:training_trainingrun_retrain"))
    run = TrainingRun.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:training_trainingrun_change", args=[run.pk])
    assert run.trigger == "button" and sent == [run.pk]
    assert trainer_client.get(reverse("admin:training_trainingrun_retrain")).status_code == 405


def test_the_run_page_polls_progress_json_and_shows_the_plot(trainer_client, sent):
    run = TrainingRun.objects.create(
        trigger="api", status="running", progress=0.5, attempts=1,
        metrics=[{"epoch": 1, "train_loss": 0.7, "val_loss": 0.69, "val_map": 0.4},
                 {"epoch": 2, "train_loss": 0.6, "val_loss": None, "val_map": 0.5}],
        log="line one\nline two\n",
    )
    page = trainer_client.get(reverse("admin:training_trainingrun_change", args=[run.pk]))
    assert page.status_code == 200
    assert b"run_progress.js" in page.content and b"run-progress-bar" in page.content
    data = trainer_client.get(reverse("training:run-progress", args=[run.pk])).json()
    assert data["progress"] == 0.5 and data["epochs"] == 2 and data["log_tail"][-1] == "line two"
    png = trainer_client.get(reverse("training:run-metrics-png", args=[run.pk]))
    assert png.status_code == 200 and png["Content-Type"] == "image/png"
    assert png.content.startswith(b"\x89PNG")


def test_progress_endpoints_are_for_staff_who_may_see_runs(client, curator):
    run = TrainingRun.objects.create(trigger="api")
    url = reverse("training:run-progress", args=[run.pk])
    assert client.get(url).status_code == 302  # to the login page
    client.force_login(curator)
    assert client.get(url).status_code == 403


def test_staff_can_promote_a_version_whose_checkpoint_verifies(trainer_client, tmp_path):
    import torch

    from ml.checkpoint import save_checkpoint
    from ml.models import create_model

    saved = []
    for _ in range(2):
        model = create_model("small_cnn", 2, widths=(4,), input_size=16)
        from django.conf import settings

        path = settings.ARTIFACT_ROOT / "models" / f"v{len(saved)}"
        saved.append(save_checkpoint(path, model, config={}, concepts=["a", "b"],
                                     thresholds=torch.tensor([0.5, 0.5]).numpy()))
    old = ModelVersion.objects.create(
        backbone="small_cnn", status="active", concepts=["a", "b"], val_map=0.9,
        checkpoint_path="models/v0/model.json", checkpoint_sha256=saved[0].sha256)
    new = ModelVersion.objects.create(
        backbone="small_cnn", concepts=["a", "b"], val_map=0.5, scored_at="2026-01-01T00:00Z",
        checkpoint_path="models/v1/model.json", checkpoint_sha256=saved[1].sha256)
    tampered = ModelVersion.objects.create(
        backbone="small_cnn", concepts=["a", "b"], checkpoint_path="models/v1/model.json",
        checkpoint_sha256="f" * 64)
    changelist = reverse("admin:training_modelversion_changelist")
    page = trainer_client.get(changelist)
    assert page.status_code == 200 and b"Promote to active" in page.content
    trainer_client.post(changelist, {"action": "promote", "_selected_action": [tampered.pk]})
    old.refresh_from_db()
    assert old.status == "active"
    # new did worse on validation than old: promoting it takes a confirmation
    # (tests/training/test_promote_warning.py).
    trainer_client.post(changelist, {"action": "promote", "_selected_action": [new.pk],
                                     "confirm": "Promote anyway"})
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.status, new.status) == ("archived", "active")
    detail = trainer_client.get(reverse("admin:training_modelversion_change", args=[new.pk]))
    assert detail.status_code == 200 and b"threshold" in detail.content
