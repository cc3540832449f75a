"""ConvNeXt-Tiny, EfficientNetV2-S and the Vision Transformer: forward, embedding, embedding cache,
Grad-CAM, and torchvision's checkpoint layout loaded into the trunk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file

from ml.data import preprocess
from ml.embeddings import EmbeddingCache, compute_embeddings, model_key
from ml.explain import grad_cams
from ml.models import (
    DataConfig,
    ModelSpec,
    VisionTransformerNet,
    create_model,
    load_backbone_weights,
    vision_transformer_net,
)
from ml.mosaics import make_mosaics

C = 3
SIZE = 64  # both CNNs downsample by 32: a 2x2 map for Grad-CAM


def images(n: int, size: int) -> np.ndarray:
    return make_mosaics(n, seed=5, size=size).images


def small(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = create_model(name, C).eval()
    model.data_config = DataConfig(input_size=SIZE, train_size=SIZE)  # CPU-sized inputs
    return model


def tiny_vit(seed: int = 0) -> torchvision.models.VisionTransformer:
    """torchvision's ViT class at a reduced size: 32-px inputs, 16-px patches, two blocks."""
    torch.manual_seed(seed)
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
    )


def vit_model(seed: int = 0) -> VisionTransformerNet:
    return vision_transformer_net(tiny_vit(seed), ModelSpec("vit_b_16", C)).eval()


def check_cams(model, x: torch.Tensor, side: int) -> np.ndarray:
    cams = grad_cams(model, x)
    assert cams.shape == (C, side, side) and cams.dtype == np.float32
    assert np.all((cams >= 0) & (cams <= 1)) and cams.max() == pytest.approx(1.0)
    return cams


@pytest.mark.parametrize(("name", "width"), [("convnext_tiny", 768), ("efficientnet_v2_s", 1280)])
def test_the_new_cnns_give_logits_embeddings_cached_features_and_grad_cam_maps(
    tmp_path, name, width
):
    model = small(name)
    assert model.num_features == width
    x = torch.cat([preprocess(a, model.data_config) for a in images(2, SIZE)])
    with torch.no_grad():
        logits, emb = model(x), model.embed(x)
    assert logits.shape == (2, C) and emb.shape == (2, width)
    assert torch.allclose(model.head(emb), logits, atol=1e-5)
    cache = EmbeddingCache(tmp_path, model_key(model), model.num_features)
    result = compute_embeddings(model, images(2, SIZE), cache=cache)
    assert result.n_computed == 2 and np.allclose(result.features, emb.numpy(), atol=1e-4)
    check_cams(model, x[:1], SIZE // 32)


def test_convnext_weights_in_torchvisions_layout_give_torchvisions_pooled_features(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.convnext_tiny(weights=None).eval()
    with torch.no_grad():  # a LayerNorm that is not the identity, so that loading it shows
        reference.classifier[0].weight.uniform_(0.5, 1.5)
        reference.classifier[0].bias.uniform_(-0.5, 0.5)
    path = tmp_path / "convnext_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = create_model("convnext_tiny", C, weights=path).eval()
    assert torch.equal(model.pre_logits.weight, reference.classifier[0].weight)
    reference.classifier[2] = nn.Identity()  # pooled, normalised, flattened: the embedding
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(model.embed(x), reference(x), atol=1e-4)
    # the pre-logits norm is part of the trunk's key: other norm weights, other cached features
    other = create_model("convnext_tiny", C, weights=path)
    with torch.no_grad():
        other.pre_logits.bias.add_(1.0)
    assert model_key(other) != model_key(model)


def test_efficientnet_weights_in_torchvisions_layout_load_into_the_trunk(tmp_path):
    torch.manual_seed(2)
    reference = torchvision.models.efficientnet_v2_s(weights=None).eval()
    path = tmp_path / "efficientnet_v2_s.pth"
    torch.save(reference.state_dict(), path)
    model = create_model("efficientnet_v2_s", C, weights=path).eval()
    reference.classifier = nn.Identity()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(model.embed(x), reference(x), atol=1e-4)


def test_weights_of_one_new_backbone_are_refused_by_another(tmp_path):
    path = tmp_path / "convnext.pth"
    torch.save(torchvision.models.convnext_tiny(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="do not fit efficientnet_v2_s"):
        create_model("efficientnet_v2_s", C, weights=path)


def test_the_vision_transformer_embeds_with_the_class_token_as_torchvision_does(tmp_path):
    reference = tiny_vit(seed=3).eval()
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = vit_model(seed=4)
    load_backbone_weights(model, path)  # torchvision's keys, heads.* dropped
    reference.heads = nn.Identity()
    x = torch.cat([preprocess(a, model.data_config) for a in images(2, 32)])
    with torch.no_grad():
        tokens, emb, logits = model.forward_features(x), model.embed(x), model(x)
        assert tokens.shape == (2, 1 + 4, 16) and emb.shape == (2, 16)
        assert torch.allclose(emb, reference(x), atol=1e-5)
        assert torch.allclose(model.head(emb), logits, atol=1e-6)
    cache = EmbeddingCache(tmp_path / "cache", model_key(model), model.num_features)
    result = compute_embeddings(model, images(2, 32), cache=cache)
    assert np.allclose(result.features, emb.numpy(), atol=1e-5)
    with pytest.raises(Exception, match="Wrong image height"):
        model(torch.randn(1, 3, 48, 48))


def test_vision_transformer_grad_cam_weighs_the_tokens_entering_the_last_block():
    model = vit_model(seed=5)
    x = preprocess(images(1, 32)[0], model.data_config)
    cams = check_cams(model, x, 2)
    # the same map computed independently: hook the last block's input, differentiate the
    # whole forward pass, weigh the patch tokens by their mean gradient
    seen: dict[str, torch.Tensor] = {}

    def keep_input(module, args):
        seen["tokens"] = args[0]
        args[0].retain_grad()

    handle = model.gradcam_layer.register_forward_pre_hook(keep_input)
    try:
        for concept in range(C):
            model.zero_grad()
            seen.clear()
            model(x)[0, concept].backward()
            tokens = seen["tokens"][0, 1:]  # (4, D): the patches, without the class token
            grad = seen["tokens"].grad[0, 1:]
            cam = F.relu(tokens @ grad.mean(dim=0)).reshape(2, 2).detach()
            expected = cam / cam.max() if cam.max() > 0 else cam
            assert np.allclose(cams[concept], expected.numpy(), atol=1e-5)
    finally:
        handle.remove()


def test_vit_b_16_is_registered_with_torchvisions_trunk_at_224_pixels():
    model = create_model("vit_b_16", C)  # weights=None: nothing is downloaded
    assert isinstance(model, VisionTransformerNet)
    assert model.num_features == 768 and model.data_config.input_size == 224
    assert model.data_config.train_size == 224
    assert isinstance(model.features.heads, nn.Identity)
    assert model.features.patch_size == 16 and len(model.features.encoder.layers) == 12
    expected = {
        k
        for k in torchvision.models.vit_b_16(weights=None).state_dict()
        if not k.startswith("heads.")
    }
    assert set(model.features.state_dict()) == expected
    assert model.gradcam_layer is model.features.encoder.layers[-1]


def test_a_convnext_checkpoint_round_trips_with_its_pre_logits_norm(tmp_path):
    from ml.checkpoint import load_checkpoint, save_checkpoint

    model = small("convnext_tiny", seed=6)
    with torch.no_grad():
        model.pre_logits.bias.uniform_(-1.0, 1.0)
    saved = save_checkpoint(
        tmp_path / "v1", model, config={}, concepts=["a", "b", "c"], thresholds=[0.5] * C
    )
    loaded = load_checkpoint(saved.meta_path, expected_sha256=saved.sha256).model.eval()
    assert torch.equal(loaded.pre_logits.bias, model.pre_logits.bias)
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)
