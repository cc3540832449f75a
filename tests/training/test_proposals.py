"""Enrichment proposals: the active model's labels for items with no final label, exported and
released as their own kind through the crowd side's exports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotate.models import Item
from annotate.services.datasets.export import dataset_export
from annotate.services.datasets.writers import W3C_CONTEXT
from annotate.services.releases import release_request
from tests.annotate.export_pool import read_jsonl
from training.models import ModelVersion, Prediction

pytestmark = pytest.mark.django_db


@pytest.fixture
def active_model(pool, concepts):
    """An active model version that scored the unvoted item and item a."""
    version = ModelVersion.objects.create(
        status="active",
        backbone="small_cnn",
        concepts=["painting", "photograph", "map"],
        thresholds=[0.6, 0.5, 0.9],
        checkpoint_path="x.json",
        checkpoint_sha256="0" * 64,
    )
    unvoted = Item.objects.get(external_id="local-unvoted")
    for item, scores in ((unvoted, [0.7, 0.55, 0.8]), (pool["a"], [0.9, 0.9, 0.9])):
        Prediction.objects.create(
            model_version=version,
            item=item,
            scores=Prediction.pack(np.array(scores)),
            uncertainty=0.5,
        )
    return version


def test_proposals_cover_only_items_without_a_final_label_above_each_threshold(
    active_model, tmp_path
):
    dataset_export(fmt="jsonl", out=tmp_path / "p.jsonl", kind="proposals")
    [line] = read_jsonl(tmp_path / "p.jsonl")
    assert line["external_id"] == "local-unvoted"  # a has crowd labels: not a proposal
    assert line["labels"] == ["painting", "photograph"]  # map 0.8 is below its 0.9 threshold
    assert (line["source"], line["machine_generated"]) == ("model", True)
    assert line["model_version"] == active_model.pk
    assert line["scores"] == {"map": 0.8, "painting": 0.7, "photograph": 0.55}


def test_proposals_as_web_annotations_name_the_model_as_creator(active_model, tmp_path):
    dataset_export(fmt="webannotation", out=tmp_path / "p.jsonld", kind="proposals")
    annotations = json.loads((tmp_path / "p.jsonld").read_text())
    assert len(annotations) == 2
    assert {a["creator"]["name"] for a in annotations} == {f"crowdloop model v{active_model.pk}"}
    assert all(a["@context"] == W3C_CONTEXT and a["motivation"] == "tagging" for a in annotations)


def test_a_proposals_release_is_its_own_kind(active_model, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        release = release_request(user=None, kind="proposals", min_confidence=0.65)
    release.refresh_from_db()
    assert (release.status, release.kind, release.n_items) == ("succeeded", "proposals", 1)
    assert release.counts == {"painting": 1}  # photograph 0.55 is below 0.65
    assert release.lineage["model_version"]["id"] == active_model.pk


def test_proposals_need_an_active_model(pool, tmp_path):
    with pytest.raises(ValueError, match="no active model"):
        release_request(user=None, kind="proposals")
    with pytest.raises(CommandError, match="no active model"):
        call_command(
            "export_dataset", "--format", "jsonl", "--out", str(tmp_path / "x"), "--proposals"
        )
    assert not (tmp_path / "x").exists()
