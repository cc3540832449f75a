"""Pretrained weights by spec in training: checked when a run is requested, fetched once from a
local stand-in for download.pytorch.org, verified again in the worker, and their sha256 recorded
on the run, the model version, the admin pages and a release's lineage."""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path

import pytest
import torch
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from ml import weights as w
from ml.checkpoint import load_checkpoint
from ml.models import create_model
from tests.training.builders import TINY_PARAMS
from tests.weights_server import closed_port, weights_server
from training.models import ModelVersion, TrainingRun
from training.services.params import SMALL_CNN_DEFAULTS, TrainingParamsError, training_params_parse
from training.services.runs import training_run_request


def trunk_bytes(widths: list[int], seed: int = 0) -> bytes:
    torch.manual_seed(seed)
    out = io.BytesIO()
    torch.save(create_model("small_cnn", 10, widths=tuple(widths)).state_dict(), out)
    return out.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server(settings):
    with weights_server() as running:
        settings.TRAINING_WEIGHTS_BASE_URL = running.base_url
        yield running


@pytest.fixture
def torchvision_name(server, monkeypatch):
    """Give small_cnn a torchvision-style weights entry (hash prefix in the file name), served
    by the local server: the code path of resnet50's IMAGENET1K_V2, with a file a CPU trains."""
    data = trunk_bytes(SMALL_CNN_DEFAULTS["widths"])
    name = f"small_cnn-{sha(data)[:8]}.pth"
    monkeypatch.setitem(w.TORCHVISION_WEIGHTS, "small_cnn", {"IMAGENET1K_V1": name})
    monkeypatch.setitem(w.TORCHVISION_DEFAULT, "small_cnn", "IMAGENET1K_V1")
    server.files[name] = data
    return name, data


def trunk_of(version: ModelVersion) -> dict[str, torch.Tensor]:
    loaded = load_checkpoint(
        Path(settings.ARTIFACT_ROOT) / version.checkpoint_path,
        expected_sha256=version.checkpoint_sha256,
    )
    return {k: v for k, v in loaded.model.state_dict().items() if k.startswith("features.")}


def test_a_url_spec_is_fetched_once_and_its_sha256_lands_on_the_run_and_the_version(
    mosaic_items, server, django_capture_on_commit_callbacks
):
    data = trunk_bytes(TINY_PARAMS["model_kwargs"]["widths"])
    server.files["trunk.pth"] = data
    spec = f"{server.url('trunk.pth')}#sha256={sha(data)}"
    params = {**TINY_PARAMS, "mode": "head", "weights": spec}
    runs = []
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            run, created = training_run_request(trigger="command", params=params)
        assert created
        run.refresh_from_db()
        runs.append(run)
    assert server.requests == ["/models/trunk.pth"]  # the second run read the cache
    for run in runs:
        assert run.status == "succeeded", run.error
        assert (run.weights, run.weights_sha256) == (spec, sha(data))
        version = run.model_version
        assert (version.weights, version.weights_sha256) == (spec, sha(data))
        assert "weights http://127.0.0.1" in run.log
    # head mode keeps the trunk: the published model's trunk is the served file's
    served = torch.load(io.BytesIO(data), weights_only=True)
    for key, value in trunk_of(runs[0].model_version).items():
        assert torch.equal(value, served[key]), key


def test_a_torchvision_name_from_the_command_is_fetched_at_request_then_cached(
    mosaic_items, torchvision_name, server, django_capture_on_commit_callbacks, settings
):
    settings.TRAINING_BACKBONE_WEIGHTS = {"small_cnn": "DEFAULT"}
    name, data = torchvision_name
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            call_command("train", "--epochs", "1", verbosity=0)
    assert server.requests == [f"/models/{name}"]
    cached = Path(settings.ARTIFACT_ROOT) / "weights" / name
    assert cached.read_bytes() == data
    runs = list(TrainingRun.objects.order_by("pk"))
    assert [r.status for r in runs] == ["succeeded", "succeeded"]
    assert {(r.weights, r.weights_sha256, r.params["mode"]) for r in runs} == {
        ("DEFAULT", sha(data), "head")
    }
    assert set(ModelVersion.objects.values_list("weights_sha256", flat=True)) == {sha(data)}


def test_offline_the_command_fails_at_once_naming_the_file_and_the_cache_path(db, settings):
    settings.TRAINING_WEIGHTS_BASE_URL = f"http://127.0.0.1:{closed_port()}/models"
    started = time.monotonic()
    with pytest.raises(CommandError) as caught:
        call_command("train", "--backbone", "resnet50", "--weights", "IMAGENET1K_V2")
    assert time.monotonic() - started < 10
    message = str(caught.value)
    cache_path = Path(settings.ARTIFACT_ROOT) / "weights" / "resnet50-11ad3fa6.pth"
    assert "could not download" in message and str(cache_path) in message
    assert not TrainingRun.objects.exists()


def test_a_web_request_leaves_the_download_to_the_worker_which_fails_clearly_offline(
    mosaic_items, torchvision_name, settings, django_capture_on_commit_callbacks
):
    name, _ = torchvision_name
    settings.TRAINING_WEIGHTS_BASE_URL = f"http://127.0.0.1:{closed_port()}/models"
    with django_capture_on_commit_callbacks(execute=True):
        run, created = training_run_request(
            trigger="api", params={**TINY_PARAMS, "mode": "head", "weights": "IMAGENET1K_V1"}
        )
    run.refresh_from_db()
    assert created and run.status == "failed"
    assert str(Path(settings.ARTIFACT_ROOT) / "weights" / name) in run.error
    assert run.error.startswith("WeightsMissing: small_cnn weights 'IMAGENET1K_V1'")
    assert not ModelVersion.objects.exists()


def test_a_tampered_or_missing_file_is_refused_when_the_run_is_requested(
    db, torchvision_name, tmp_path
):
    name, data = torchvision_name
    cached = Path(settings.ARTIFACT_ROOT) / "weights" / name
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    params = {**TINY_PARAMS, "mode": "head"}
    with pytest.raises(TrainingParamsError, match=f"hash mismatch.*{sha(data)[:8]}"):
        training_run_request(trigger="api", params={**params, "weights": "DEFAULT"})
    missing = tmp_path / "r18.pth"
    with pytest.raises(TrainingParamsError, match=f"place it at {missing}"):
        training_run_request(trigger="api", params={**params, "weights": str(missing)})
    assert not TrainingRun.objects.exists()


def test_a_requests_weights_override_the_settings_and_none_turns_them_off(settings, tmp_path):
    settings.TRAINING_BACKBONE_WEIGHTS = {"resnet18": "IMAGENET1K_V1"}
    assert training_params_parse({"backbone": "resnet18"}).weights == "IMAGENET1K_V1"
    params = training_params_parse({"backbone": "resnet18", "weights": "none"})
    assert (params.weights, params.mode) == ("", "finetune")
    with pytest.raises(TrainingParamsError, match="needs pretrained weights"):
        training_params_parse({"backbone": "resnet18", "weights": "none", "mode": "head"})
    with pytest.raises(TrainingParamsError, match="use one of DEFAULT, IMAGENET1K_V1"):
        training_params_parse({"backbone": "resnet18", "weights": "IMAGENET1K_V2"})
    with pytest.raises(TrainingParamsError, match="needs its sha256"):
        training_params_parse({"backbone": "vit_b_16", "weights": "https://example.org/v.pth"})
    with pytest.raises(TrainingParamsError, match="weights must be a text"):
        training_params_parse({"backbone": "resnet18", "weights": 3})


def test_the_weights_provenance_shows_in_the_admin_and_in_a_release_lineage(
    mosaic_items, server, django_capture_on_commit_callbacks, admin_client
):
    from annotate.services.datasets.export import lineage_describe

    data = trunk_bytes(TINY_PARAMS["model_kwargs"]["widths"])
    server.files["trunk.pth"] = data
    spec = f"{server.url('trunk.pth')}#sha256={sha(data)}"
    with django_capture_on_commit_callbacks(execute=True):
        run, _ = training_run_request(
            trigger="command", params={**TINY_PARAMS, "mode": "head", "weights": spec}
        )
    run.refresh_from_db()
    version = run.model_version
    for url in (
        reverse("admin:training_trainingrun_change", args=[run.pk]),
        reverse("admin:training_modelversion_change", args=[version.pk]),
    ):
        page = admin_client.get(url).content.decode()
        assert sha(data) in page and "trunk.pth" in page
    lineage = lineage_describe()
    assert lineage["model_version"]["id"] == version.pk
    assert lineage["model_version"]["weights_sha256"] == sha(data)
    assert lineage["model_version"]["weights"] == spec
