"""Promoting a model that did worse on validation than the active one asks first, and records who
overrode; the publish gate promotes as before."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from tests.training.builders import saved_checkpoint, version
from training.models import ModelVersion
from training.services.versions import (
    PromotionError,
    PromotionNeedsConfirmation,
    model_version_promote,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(db, django_user_model):
    user = django_user_model.objects.create_user(
        "alice", password="a-long-test-password", is_staff=True
    )
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="training"))
    return user


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def statuses(*versions: ModelVersion) -> list[str]:
    return [ModelVersion.objects.get(pk=v.pk).status for v in versions]


def test_a_worse_version_needs_a_confirmation_and_nothing_changes_without_it(alice):
    active = version(0.654, status="active", name="v1")
    worse = version(0.398, name="v2")

    with pytest.raises(PromotionNeedsConfirmation) as raised:
        model_version_promote(version=worse, by=alice)

    assert raised.value.active == active and raised.value.version == worse
    assert "0.398" in str(raised.value) and "0.654" in str(raised.value)
    assert isinstance(raised.value, PromotionError)
    assert statuses(active, worse) == ["active", "candidate"]


def test_a_confirmed_override_is_promoted_and_says_over_what_and_by_whom(alice):
    active = version(0.654, status="active", name="v1")
    worse = version(0.398, name="v2")

    assert model_version_promote(version=worse, by=alice, confirm=True)

    worse.refresh_from_db()
    assert statuses(active, worse) == ["archived", "active"]
    assert worse.promotion_note == (
        f"promoted over v{active.pk} (val mAP 0.654) with val mAP 0.398, confirmed by alice"
    )
    assert worse.promoted_by == alice


def test_an_unknown_map_against_a_known_one_needs_a_confirmation(alice):
    active = version(0.5, status="active", name="v1")
    unknown = version(None, name="v2")

    with pytest.raises(PromotionNeedsConfirmation):
        model_version_promote(version=unknown, by=alice)
    model_version_promote(version=unknown, by=alice, confirm=True)

    unknown.refresh_from_db()
    assert unknown.promotion_note.endswith("with val mAP n/a, confirmed by alice")
    assert statuses(active) == ["archived"]


@pytest.mark.parametrize(("active_map", "candidate_map"), [(0.5, 0.5), (0.5, 0.7), (None, 0.2)])
def test_a_version_not_worse_is_promoted_without_asking_and_without_a_note(
    alice, active_map, candidate_map
):
    active = version(active_map, status="active", name="v1")
    better = version(candidate_map, name="v2")

    assert model_version_promote(version=better, by=alice)

    better.refresh_from_db()
    assert statuses(active, better) == ["archived", "active"] and better.promotion_note == ""


def test_the_publish_gate_still_keeps_a_worse_run_as_a_candidate_without_asking(monkeypatch):
    from training.models import TrainingRun
    from training.services.versions import model_version_publish

    monkeypatch.setattr("training.services.versions.training_run_followup_create", lambda run: None)
    active = version(0.654, status="active", name="v1")
    path, sha256 = saved_checkpoint("v2")
    run = TrainingRun.objects.create(trigger="auto", status="running", attempts=1)

    published = model_version_publish(
        run_id=run.pk, attempt=1, note="done",
        fields={"backbone": "small_cnn", "concepts": ["a", "b"], "val_map": 0.398,
                "checkpoint_path": path, "checkpoint_sha256": sha256},
    )

    assert not published.promoted
    assert statuses(active, published.version) == ["active", "candidate"]
    assert published.version.promotion_note == ""


# --- the admin ---------------------------------------------------------------------------------


def promote(client, target: ModelVersion, **extra):
    return client.post(
        reverse("admin:training_modelversion_changelist"),
        {"action": "promote", "_selected_action": [target.pk], **extra},
    )


def test_the_admin_shows_both_maps_and_asks_before_promoting_a_worse_version(alice_client):
    active = version(0.654, status="active", name="v1")
    worse = version(0.398, name="v2")

    page = promote(alice_client, worse)

    assert page.status_code == 200
    html = page.content.decode()
    assert f"Promote v{worse.pk} over a better model?" in html
    assert "0.398" in html and "0.654" in html
    assert 'value="Promote anyway"' in html
    assert f'name="_selected_action" value="{worse.pk}"' in html
    assert statuses(active, worse) == ["active", "candidate"]


def test_promote_anyway_promotes_and_shows_the_note_on_the_version(alice_client):
    active = version(0.654, status="active", name="v1")
    worse = version(0.398, name="v2")

    done = promote(alice_client, worse, confirm="Promote anyway")

    assert done.status_code == 302
    assert statuses(active, worse) == ["archived", "active"]
    listing = alice_client.get(done["Location"]).content.decode()
    # The admin capitalises messages: "V2 is now active ...".
    assert f"{worse.pk} is now active (promoted over v{active.pk} (val mAP 0.654)" in listing
    detail = alice_client.get(reverse("admin:training_modelversion_change", args=[worse.pk]))
    assert "confirmed by alice" in detail.content.decode()


def test_the_admin_promotes_a_better_version_in_one_click(alice_client):
    active = version(0.4, status="active", name="v1")
    better = version(0.6, name="v2")

    done = promote(alice_client, better)

    assert done.status_code == 302
    assert statuses(active, better) == ["archived", "active"]


def test_a_tampered_checkpoint_is_refused_before_any_question(alice_client):
    active = version(0.654, status="active", name="v1")
    tampered = version(0.398, name="v2")
    ModelVersion.objects.filter(pk=tampered.pk).update(checkpoint_sha256="f" * 64)

    done = promote(alice_client, tampered, confirm="Promote anyway")

    assert done.status_code == 302
    assert "cannot be promoted" in alice_client.get(done["Location"]).content.decode()
    assert statuses(active, tampered) == ["active", "candidate"]

