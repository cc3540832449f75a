"""Every registered model, with every loss: logits of the right shape, finite, reproducible."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file

from ml.models import (
    MultiLabelNet,
    create_model,
    list_models,
    predict_proba,
    register_model,
)
from ml.train import LOSSES, TrainConfig, create_loss

NUM_CONCEPTS = 5
#: ViT-B/16 takes 224-px inputs only: tests/ml/test_backbones.py covers it on a reduced config.
SMALL_INPUT_MODELS = [name for name in list_models() if name != "vit_b_16"]


def tiny_input(seed: int = 0) -> torch.Tensor:
    # ResNets at 64 px and batch 2 keep the smoke test cheap on a CPU.
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def build(name: str, seed: int = 0, **kw) -> MultiLabelNet:
    torch.manual_seed(seed)
    return create_model(name, NUM_CONCEPTS, **kw)


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("name", SMALL_INPUT_MODELS)
def test_every_model_gives_finite_logits_and_gradients_with_every_loss(name, loss):
    model = build(name)
    logits = model(tiny_input())
    assert logits.shape == (2, NUM_CONCEPTS)
    targets = torch.tensor([[1.0, 0.0, 0.5, 0.9, 0.1], [0.0, 1.0, 0.2, 0.0, 1.0]])
    value = create_loss(TrainConfig(loss=loss))(logits, targets, torch.ones(2))
    value.backward()
    assert torch.isfinite(value)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", SMALL_INPUT_MODELS)
def test_every_model_is_deterministic_under_a_seed(name):
    x = tiny_input()
    a, b = build(name, seed=3).eval(), build(name, seed=3).eval()
    assert torch.equal(a(x), b(x))
    assert not torch.equal(build(name, seed=4).eval()(x), a(x))


@pytest.mark.parametrize("name", SMALL_INPUT_MODELS)
def test_every_model_exposes_features_embeddings_and_a_head(name):
    model = build(name).eval()
    x = tiny_input()
    fmap = model.forward_features(x)
    assert fmap.ndim == 4 and fmap.shape[:2] == (2, model.num_features)
    emb = model.embed(x)
    assert emb.shape == (2, model.num_features)
    assert torch.allclose(model.head(emb), model(x), atol=1e-6)
    assert torch.equal(model.forward_head(fmap, pre_logits=True), emb)


def test_models_return_raw_logits_and_only_predict_proba_applies_the_sigmoid():
    model = build("small_cnn").eval()
    assert not any(isinstance(m, (nn.Sigmoid, nn.Softmax)) for m in model.modules())
    x = tiny_input()
    with torch.no_grad():
        logits = model(x)
    probs = predict_proba(model, x)
    assert torch.allclose(probs, torch.sigmoid(logits))
    assert ((probs >= 0) & (probs <= 1)).all()


def test_an_mlp_head_with_dropout_samples_different_outputs_in_train_mode():
    model = build("small_cnn", head="mlp", hidden=32, dropout=0.5)
    emb = torch.randn(4, model.num_features)
    model.head.train()
    assert not torch.equal(model.head(emb), model.head(emb))  # MC dropout
    model.head.eval()
    assert torch.equal(model.head(emb), model.head(emb))


def test_an_unknown_model_name_is_refused_with_the_registered_names():
    with pytest.raises(ValueError, match="small_cnn"):
        create_model("vit_huge", 3)


def test_registering_a_name_twice_is_refused():
    def small_cnn(**kw):  # same name as the built-in
        raise AssertionError

    with pytest.raises(ValueError, match="already registered"):
        register_model(small_cnn)


def test_resnet_weights_load_from_a_local_torchvision_state_dict(tmp_path):
    torch.manual_seed(7)
    reference = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = create_model("resnet18", NUM_CONCEPTS, weights=path).eval()
    x = tiny_input()
    with torch.no_grad():
        # The trunk now computes exactly torchvision's pooled features (the fc is replaced).
        reference.fc = nn.Identity()
        assert torch.allclose(model.embed(x), reference(x), atol=1e-5)


def test_a_tensor_only_pt_state_dict_also_loads(tmp_path):
    source = build("small_cnn", seed=1)
    path = tmp_path / "trunk.pt"
    torch.save(source.state_dict(), path)
    model = create_model("small_cnn", NUM_CONCEPTS, weights=path)
    assert torch.equal(model.features.block1[0].weight, source.features.block1[0].weight)


def test_weights_of_another_backbone_are_refused(tmp_path):
    path = tmp_path / "small.safetensors"
    save_file({k: v.contiguous() for k, v in build("small_cnn").state_dict().items()}, str(path))
    with pytest.raises(ValueError, match="do not fit"):
        create_model("resnet18", NUM_CONCEPTS, weights=path)


def test_a_missing_weights_file_is_refused_rather_than_downloaded(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        create_model("resnet50", NUM_CONCEPTS, weights=tmp_path / "imagenet.safetensors")


def test_the_torch_free_list_of_model_names_matches_the_registry():
    from ml.model_names import MODEL_NAMES

    assert tuple(sorted(MODEL_NAMES)) == tuple(list_models())
