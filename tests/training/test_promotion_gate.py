"""The promotion gate compares a new version and the active one on the same validation items,
with the same scoring code and metric; splits by hash keep validation items in validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from django.conf import settings
from django.contrib.auth.models import Permission
from django.urls import reverse

from ml.checkpoint import save_checkpoint
from ml.models import Head, create_model
from ml.mosaics import DIGIT_KEYS
from ml.splits import stable_split
from tests.clients import as_user
from tests.training.builders import TINY_PARAMS, write_mosaic_items
from training.models import ModelVersion, TrainingRun
from training.selectors import model_version_active
from training.services.dataset import snapshot_load, snapshot_write, training_set_build
from training.services.gate import SAME_ITEMS, VALIDATION_MAP, gate_compare
from training.services.model_cache import model_cache_clear
from training.services.runs import training_run_request
from training.services.versions import (
    PromotionNeedsConfirmation,
    model_version_promote,
    model_version_publish,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_models():
    # Versions are numbered from 1 in every test: a model loaded by an earlier test must not
    # stand in for this test's version of the same number.
    model_cache_clear()
    yield
    model_cache_clear()


def checkpoint(name: str, model: torch.nn.Module, concepts: list[str]) -> tuple[str, str]:
    saved = save_checkpoint(
        Path(settings.ARTIFACT_ROOT) / "models" / name, model, config={}, concepts=concepts,
        thresholds=np.full(len(concepts), 0.5, dtype=np.float32),
    )
    return f"models/{name}/model.json", saved.sha256


def constant_version(
    *, concepts: list[str], val_map: float | None, status: str = "active", n_val: int = 3
) -> ModelVersion:
    """A small CNN whose head is all zeros: every image scores 0.5 on every concept, so on any
    items its mAP is the share of positives, the floor of any ranking."""
    torch.manual_seed(0)
    model = create_model("small_cnn", len(concepts), widths=[4, 8], input_size=16)
    with torch.no_grad():
        for p in model.head.parameters():
            p.zero_()
    path, sha = checkpoint(f"constant-{ModelVersion.objects.count()}", model, concepts)
    return ModelVersion.objects.create(
        backbone="small_cnn", concepts=list(concepts), checkpoint_path=path,
        checkpoint_sha256=sha, val_map=val_map, status=status, n_val=n_val,
        thresholds=[0.5] * len(concepts),
    )


def retrain(capture, **params) -> ModelVersion:
    with capture(execute=True):
        run, created = training_run_request(trigger="command", params={**TINY_PARAMS, **params})
    assert created
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    return ModelVersion.objects.get(training_run=run)


def validation_items() -> int:
    return int((training_set_build().split == "val").sum())


# --- the freeze, and its mirror ------------------------------------------------------------------


def test_a_candidate_better_on_the_same_items_replaces_an_active_model_with_a_lucky_tiny_split(
    django_capture_on_commit_callbacks,
):
    write_mosaic_items(80)
    # The first model: a high validation mAP measured on 3 items, but no better than a constant
    # on today's validation items. It knows 8 of the 10 concepts (the vocabulary grew since).
    lucky = constant_version(concepts=DIGIT_KEYS[:8], val_map=0.99)

    candidate = retrain(django_capture_on_commit_callbacks, epochs=8)

    assert candidate.val_map < 0.99  # the old rule would have kept the lucky model active
    gate = candidate.gate
    assert gate["rule"] == SAME_ITEMS and gate["active_version"] == lucky.pk
    assert gate["items"] == validation_items() and gate["items"] > 3
    assert gate["concepts"] == list(DIGIT_KEYS[:8])
    assert gate["concepts_left_out"] == list(DIGIT_KEYS[8:])
    assert gate["candidate_map"] > gate["active_map"] and gate["passed"] is True
    assert model_version_active() == candidate
    lucky.refresh_from_db()
    assert lucky.status == "archived"
    note = candidate.promotion_note
    assert f"vs {gate['active_map']:.3f} of v{lucky.pk}" in note
    assert f"on the same {gate['items']} validation items" in note
    assert "on the 8 concepts both know" in note and "nine" in note
    log = TrainingRun.objects.get(pk=candidate.training_run_id).log
    assert "promotion gate: scoring the candidate and active" in log
    assert f"model v{candidate.pk} active (mAP {gate['candidate_map']:.3f} vs" in log


def test_a_candidate_worse_on_the_same_items_stays_a_candidate_whatever_the_active_once_measured(
    django_capture_on_commit_callbacks,
):
    write_mosaic_items(80)
    trained = retrain(django_capture_on_commit_callbacks, epochs=15)
    assert model_version_active() == trained
    # Its own split once gave it a poor figure: the old rule would promote anything above it.
    ModelVersion.objects.filter(pk=trained.pk).update(val_map=0.0)

    untrained = retrain(django_capture_on_commit_callbacks, epochs=1, lr=1e-7)

    gate = untrained.gate
    assert gate["rule"] == SAME_ITEMS and gate["active_version"] == trained.pk
    assert gate["concepts"] == list(DIGIT_KEYS) and gate["concepts_left_out"] == []
    assert gate["candidate_map"] < gate["active_map"] and gate["passed"] is False
    assert untrained.val_map > 0.0
    assert untrained.status == "candidate" and untrained.promotion_note == ""
    assert model_version_active() == trained
    log = TrainingRun.objects.get(pk=untrained.training_run_id).log
    assert f"kept as candidate, worse than active v{trained.pk}" in log


# --- falling back ------------------------------------------------------------------------------


def candidate_for(concepts: list[str]) -> ModelVersion:
    torch.manual_seed(1)
    model = create_model("small_cnn", len(concepts), widths=[4, 8], input_size=16)
    path, sha = checkpoint("candidate", model, concepts)
    return ModelVersion(backbone="small_cnn", concepts=concepts, checkpoint_path=path,
                        checkpoint_sha256=sha)


def bare_head(active: ModelVersion) -> None:
    path, sha = checkpoint("bare", Head(8, len(active.concepts)), list(active.concepts))
    ModelVersion.objects.filter(pk=active.pk).update(checkpoint_path=path, checkpoint_sha256=sha)


def missing_file(active: ModelVersion) -> None:
    (Path(settings.ARTIFACT_ROOT) / active.checkpoint_path).with_suffix(".safetensors").unlink()


@pytest.mark.parametrize(("damage", "why"), [(bare_head, "TypeError"),
                                              (missing_file, "CheckpointError")])
def test_an_active_version_that_cannot_be_scored_falls_back_to_the_recorded_maps_and_says_why(
    damage, why
):
    write_mosaic_items(30)
    active = constant_version(concepts=DIGIT_KEYS, val_map=0.7)
    damage(active)
    active.refresh_from_db()

    gate = gate_compare(candidate=candidate_for(DIGIT_KEYS), active=active,
                        data=training_set_build(), candidate_map=0.6)

    assert gate["rule"] == VALIDATION_MAP and gate["items"] is None
    assert (gate["candidate_map"], gate["active_map"], gate["passed"]) == (0.6, 0.7, False)
    assert gate["reason"].startswith(f"v{active.pk} could not be scored: {why}")


def test_no_concept_in_common_falls_back_to_the_recorded_maps():
    write_mosaic_items(30)
    active = constant_version(concepts=["cat", "dog"], val_map=0.4)

    gate = gate_compare(candidate=candidate_for(DIGIT_KEYS), active=active,
                        data=training_set_build(), candidate_map=0.6)

    assert gate["rule"] == VALIDATION_MAP and gate["passed"] is True
    assert gate["reason"] == f"v{active.pk} knows none of the candidate's concepts"


def publish(*, val_map: float, gate: dict | None) -> ModelVersion:
    run = TrainingRun.objects.create(trigger="auto", status="running", attempts=1)
    return model_version_publish(
        run_id=run.pk, attempt=1, note="done", gate=gate,
        fields={"backbone": "small_cnn", "concepts": ["a"], "val_map": val_map,
                "checkpoint_path": "x.json", "checkpoint_sha256": "0" * 64},
    ).version


def test_a_gate_scored_against_a_version_no_longer_active_is_not_trusted(monkeypatch):
    monkeypatch.setattr("training.services.versions.training_run_followup_create", lambda run: None)
    now_active = constant_version(concepts=["a"], val_map=0.8)
    stale = {"rule": SAME_ITEMS, "items": 12, "candidate_map": 0.9, "active_map": 0.1,
             "active_version": now_active.pk + 100, "passed": True}

    version = publish(val_map=0.5, gate=stale)

    assert version.status == "candidate"
    assert version.gate["rule"] == VALIDATION_MAP and version.gate["passed"] is False
    assert version.gate["reason"] == (
        f"v{now_active.pk} became active while the gate scored v{now_active.pk + 100}"
    )


def test_the_first_version_is_promoted_and_its_gate_says_so(monkeypatch):
    monkeypatch.setattr("training.services.versions.training_run_followup_create", lambda run: None)

    version = publish(val_map=0.1, gate=None)

    assert version.status == "active" and version.promotion_note == ""
    assert version.gate["rule"] == "first" and version.gate["active_version"] is None


# --- staff promotion and the admin --------------------------------------------------------------


def gated(*, active: ModelVersion, candidate_map: float, active_map: float, val_map: float,
          items: int = 38) -> ModelVersion:
    version = constant_version(concepts=DIGIT_KEYS, val_map=val_map, status="candidate")
    version.gate = {
        "rule": SAME_ITEMS, "items": items, "candidate_map": candidate_map,
        "active_map": active_map, "active_version": active.pk, "concepts": DIGIT_KEYS[:8],
        "concepts_left_out": DIGIT_KEYS[8:], "passed": candidate_map >= active_map,
    }
    version.save(update_fields=["gate"])
    return version


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_user("sam", password="a-long-test-password",
                                                 is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="training"))
    client.force_login(user)
    return client


def test_staff_promotion_judges_on_the_same_items_not_on_the_recorded_maps(django_user_model):
    sam = django_user_model.objects.create_user("sam", password="a-long-test-password")
    active = constant_version(concepts=DIGIT_KEYS, val_map=0.3)
    # Its own split says 0.9 > 0.3, the same items say 0.41 < 0.52: it is worse.
    version = gated(active=active, candidate_map=0.41, active_map=0.52, val_map=0.9)

    with pytest.raises(PromotionNeedsConfirmation) as raised:
        model_version_promote(version=version, by=sam)
    assert "on the same 38 validation items" in str(raised.value)
    assert "0.410" in str(raised.value) and "0.520" in str(raised.value)

    assert model_version_promote(version=version, by=sam, confirm=True)
    version.refresh_from_db()
    assert version.promotion_note.startswith(
        f"promoted over v{active.pk} (mAP 0.410 vs 0.520 of v{active.pk} on the same 38 "
        "validation items"
    )
    assert version.promotion_note.endswith("confirmed by sam")


def test_the_admin_shows_both_figures_on_the_same_items_in_the_list_and_on_the_version(
    staff_client,
):
    active = constant_version(concepts=DIGIT_KEYS, val_map=0.3)
    version = gated(active=active, candidate_map=0.712, active_map=0.65, val_map=0.6)

    listing = staff_client.get(reverse("admin:training_modelversion_changelist")).content.decode()
    assert f"0.712 vs 0.650 (v{active.pk}) on the same 38 items" in listing

    detail = staff_client.get(
        reverse("admin:training_modelversion_change", args=[version.pk])
    ).content.decode()
    assert f"mAP 0.712 vs 0.650 of v{active.pk} on the same 38 validation items" in detail
    assert "concepts compared (8): zero, one" in detail
    assert "not known to the active version: eight, nine" in detail


def test_the_promote_page_asks_with_the_figures_on_the_same_items(staff_client):
    active = constant_version(concepts=DIGIT_KEYS, val_map=0.3)
    version = gated(active=active, candidate_map=0.41, active_map=0.52, val_map=0.9)

    page = staff_client.post(
        reverse("admin:training_modelversion_changelist"),
        {"action": "promote", "_selected_action": [version.pk]},
    )

    assert page.status_code == 200
    html = page.content.decode()
    assert (f"On the same 38 validation items, v{version.pk} has an mAP of 0.410; the active "
            f"v{active.pk} has 0.520.") in html
    assert ModelVersion.objects.get(pk=active.pk).status == "active"


# --- splits ---------------------------------------------------------------------------------------


def test_adding_items_never_moves_an_item_between_train_and_validation():
    write_mosaic_items(40, seed=3, prefix="first")
    before = training_set_build()
    path, sha = snapshot_write(run_id=1, data=before)
    write_mosaic_items(60, seed=4, prefix="later")

    after = training_set_build()

    split_after = dict(zip(after.item_ids, after.split, strict=True))
    assert len(after) == 100
    assert {pk: split_after[pk] for pk in before.item_ids} == dict(
        zip(before.item_ids, before.split, strict=True))
    assert set(before.split) == {"train", "val"}  # both splits are exercised
    # A retry reads the same membership back from its snapshot.
    assert list(snapshot_load(path=path, sha256=sha).split) == list(before.split)


def test_an_items_split_depends_only_on_its_id():
    ids = [f"/2021672/record_{i}" for i in range(500)]
    alone = [stable_split([i], (0.8, 0.2), names=("train", "val"))[0] for i in ids[:50]]
    together = stable_split(ids[::-1], (0.8, 0.2), names=("train", "val"))[::-1]

    assert alone == list(together[:50])
    assert 0.7 < float(np.mean(together == "train")) < 0.9


def test_the_model_versions_api_shows_the_gate(people):
    active = constant_version(concepts=DIGIT_KEYS, val_map=0.3)
    version = gated(active=active, candidate_map=0.712, active_map=0.65, val_map=0.6)

    body = as_user(people["viewer"]).get(f"/api/v1/model-versions/{version.pk}/").json()

    assert body["gate"]["rule"] == SAME_ITEMS and body["gate"]["items"] == 38
    assert (body["gate"]["candidate_map"], body["gate"]["active_map"]) == (0.712, 0.65)
    assert body["gate"]["active_version"] == active.pk
