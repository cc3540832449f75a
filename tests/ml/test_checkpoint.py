"""Checkpoints round-trip, and anything tampered with or carrying pickled code is refused."""

from __future__ import annotations

import json
import pathlib
import zipfile

import numpy as np
import pytest
import torch

from ml.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_train_state,
    save_checkpoint,
    sha256_file,
)
from ml.models import Head, create_model
from ml.train import TrainConfig

CONCEPTS = [{"key": k, "label": k} for k in ("map", "painting", "sculpture")]


def saved(tmp_path, **kw):
    torch.manual_seed(0)
    model = create_model("small_cnn", 3, widths=(4, 8), head="mlp", hidden=8, dropout=0.1).eval()
    info = save_checkpoint(tmp_path / "v1", model, config=TrainConfig(mode="finetune"),
                           concepts=CONCEPTS, thresholds=np.array([0.3, 0.5, 0.7]),
                           metrics={"map": 0.81, "ap": [0.7, np.nan, 0.9]}, **kw)
    return model, info


def test_a_checkpoint_round_trips_weights_thresholds_concepts_and_config(tmp_path):
    model, info = saved(tmp_path)
    loaded = load_checkpoint(tmp_path / "v1", expected_sha256=info.sha256)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    assert loaded.thresholds.tolist() == [0.3, 0.5, 0.7]
    assert loaded.concepts == CONCEPTS and loaded.config["mode"] == "finetune"
    assert loaded.metrics == {"map": 0.81, "ap": [0.7, None, 0.9]}  # NaN stored as null
    assert loaded.meta["backbone"] == "small_cnn" and info.sha256 == sha256_file(info.weights_path)


def test_the_sidecar_or_the_weights_path_load_the_same_checkpoint(tmp_path):
    _, info = saved(tmp_path)
    assert load_checkpoint(info.meta_path).sha256 == load_checkpoint(info.weights_path).sha256


def test_a_bare_head_round_trips(tmp_path):
    head = Head(16, 3, kind="linear").eval()
    save_checkpoint(tmp_path / "head.safetensors", head, config={}, concepts=CONCEPTS,
                    thresholds=[0.5] * 3)
    loaded = load_checkpoint(tmp_path / "head.json")
    x = torch.randn(4, 16)
    assert torch.equal(loaded.model(x), head(x))


def test_saving_leaves_no_temporary_files_and_overwrites_in_place(tmp_path):
    saved(tmp_path)
    saved(tmp_path)
    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == ["model.json",
                                                                   "model.safetensors"]


def test_a_tampered_weights_file_is_refused(tmp_path):
    _, info = saved(tmp_path)
    data = bytearray(info.weights_path.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte inside a tensor
    info.weights_path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_checkpoint(tmp_path / "v1")


def test_a_checkpoint_other_than_the_expected_one_is_refused(tmp_path):
    saved(tmp_path)
    with pytest.raises(CheckpointError, match="expected"):
        load_checkpoint(tmp_path / "v1", expected_sha256="0" * 64)


def test_a_sidecar_pointing_outside_its_directory_is_refused(tmp_path):
    _, info = saved(tmp_path)
    meta = json.loads(info.meta_path.read_text())
    meta["weights_file"] = "../elsewhere.safetensors"
    info.meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="weights_file"):
        load_checkpoint(info.meta_path)


def test_thresholds_must_match_the_number_of_outputs(tmp_path):
    with pytest.raises(CheckpointError):
        save_checkpoint(tmp_path, Head(4, 3), config={}, concepts=CONCEPTS, thresholds=[0.5])


class Payload:
    """Unpickling this writes a marker file: proof that code ran."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.write_text, (self.marker, "code ran"))


@pytest.fixture
def pickle_bomb(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"conv.weight": torch.zeros(1), "payload": Payload(marker)}, path)
    with zipfile.ZipFile(path) as zf:  # the payload really is in the file
        pickled = b"".join(zf.read(n) for n in zf.namelist() if n.endswith("data.pkl"))
    assert b"write_text" in pickled
    return path, marker


def test_a_pickle_bearing_pt_checkpoint_is_refused_without_running_it(pickle_bomb):
    path, marker = pickle_bomb
    # A sidecar whose hash matches: only the safe loader stands between the file and exec.
    meta = {"format": "crowdloop-checkpoint", "version": 1, "weights_file": path.name,
            "weights_sha256": sha256_file(path), "architecture": {"kind": "head"}}
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_pickle_bearing_training_state_is_refused_without_running_it(pickle_bomb):
    path, marker = pickle_bomb
    with pytest.raises(CheckpointError, match="refused"):
        load_train_state(path)
    assert not marker.exists()


def test_pickle_bearing_backbone_weights_are_refused_without_running_them(pickle_bomb):
    path, marker = pickle_bomb
    with pytest.raises(ValueError, match="refused"):
        create_model("small_cnn", 3, weights=path)
    assert not marker.exists()


def test_no_module_ever_disables_the_safe_loader():
    root = pathlib.Path(__file__).resolve().parents[2] / "ml"
    for source in root.glob("*.py"):
        assert "weights_only=" + "False" not in source.read_text(), source
