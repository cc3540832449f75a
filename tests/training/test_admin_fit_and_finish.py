"""The training admin's numbers are rounded for reading (mAP, progress), as in the crowd side's
admin (tests/annotate/test_admin_fit_and_finish.py)."""

from __future__ import annotations

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_model_versions_and_training_runs_round_their_numbers(admin_client):
    from training.models import ModelVersion, TrainingRun

    run = TrainingRun.objects.create(trigger="button", status="running", progress=0.123456789)
    version = ModelVersion.objects.create(
        backbone="small_cnn", concepts=["a"], val_map=0.398765432, checkpoint_path="x",
        checkpoint_sha256="0" * 64,
    )

    listing = admin_client.get(reverse("admin:training_modelversion_changelist")).content.decode()
    page = admin_client.get(
        reverse("admin:training_modelversion_change", args=[version.pk])
    ).content.decode()
    run_page = admin_client.get(
        reverse("admin:training_trainingrun_change", args=[run.pk])
    ).content.decode()

    assert "0.399" in listing and "0.399" in page and "0.398765432" not in listing + page
    assert "0.123456789" not in run_page and "12%" in run_page
