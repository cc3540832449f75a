"""All of an image's Grad-CAM maps from one trunk pass, its preprocessing, and the PNG layers."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ml.explain import display_size, grad_cam, grad_cams, image_cams, model_input, render_png
from ml.models import DataConfig, create_model


def hooked_grad_cam(model, x: torch.Tensor, concept: int) -> np.ndarray:
    """The textbook Grad-CAM: a hook on the last block, a backward through the whole net."""
    saved = {}
    handle = model.gradcam_layer.register_forward_hook(lambda m, i, o: saved.update(act=o))
    try:
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x)[0, concept], saved["act"])
    finally:
        handle.remove()
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * saved["act"].detach()).sum(dim=1))[0]
    return (cam / cam.max() if cam.max() > 0 else cam).numpy()


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_one_trunk_pass_gives_every_concept_the_textbook_map(head):
    torch.manual_seed(0)
    model = create_model("small_cnn", 6, head=head, widths=(8, 16), input_size=32).eval()
    x = torch.randn(1, 3, 32, 32)
    cams = grad_cams(model, x)
    assert cams.shape == (6, 16, 16) and cams.dtype == np.float32
    for concept in range(6):
        np.testing.assert_allclose(cams[concept], hooked_grad_cam(model, x, concept), atol=1e-5)
    np.testing.assert_allclose(grad_cams(model, x, [4, 1]), cams[[4, 1]])
    with pytest.raises(ValueError, match="out of range"):
        grad_cams(model, x, [6])


def test_the_model_input_is_the_evaluation_transform_pixel_for_pixel():
    from ml.data import build_transform

    rng = np.random.default_rng(0)
    for (h, w), side in [((64, 64), 32), ((300, 200), 64), ((17, 29), 224), ((64, 64), 64)]:
        picture = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        config = DataConfig(input_size=side, train_size=side)
        assert torch.equal(model_input(picture, config),
                           build_transform(config, train=False)(picture))


def test_image_cams_is_grad_cam_before_its_upsampling():
    from ml.data import preprocess

    torch.manual_seed(1)
    model = create_model("small_cnn", 3, widths=(8, 16), input_size=32).eval()
    picture = np.random.default_rng(1).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    small = image_cams(model, picture)  # (3, 16, 16)
    full = grad_cam(model, preprocess(picture, model.data_config), 2)  # (32, 32)
    up = F.interpolate(torch.from_numpy(small[2])[None, None], size=(32, 32), mode="bilinear",
                       align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(full, up / up.max(), atol=1e-5)


def test_display_size_keeps_the_aspect_with_the_longest_side_given():
    assert display_size(96, 48, 512) == (512, 256)
    assert display_size(48, 96, 512) == (256, 512)
    assert display_size(1000, 1, 64) == (64, 1)


def test_a_map_renders_blended_or_bare_at_the_size_asked():
    cam = np.zeros((4, 4), np.float32)
    cam[1, 2] = 1.0
    picture = Image.fromarray(np.full((30, 60, 3), 200, np.uint8))
    blended = Image.open(io.BytesIO(render_png(cam, image=picture, size=(120, 60))))
    bare = Image.open(io.BytesIO(render_png(cam, image=None, size=(120, 60))))
    assert blended.size == bare.size == (120, 60)
    assert blended.mode == "RGB" and bare.mode == "P" and "transparency" in bare.info
    rgba = np.asarray(bare.convert("RGBA"))
    assert (rgba[..., 3] == 115).all()
    # The hot cell is red in jet, the cold ones blue.
    hot, cold = rgba[22, 75, :3].astype(int), rgba[0, 0, :3].astype(int)
    assert hot[0] > 100 > hot[2] and cold[2] > 100 > cold[0]


def test_explaining_imports_no_torchvision():
    """torchvision's first import costs a web process about 1.5 s before its first map."""
    import subprocess

    code = ("import sys, numpy as np; from ml.explain import image_cams; "
            "from ml.models import create_model; "
            "m = create_model('small_cnn', 2, widths=(4,), input_size=16); "
            "image_cams(m, np.zeros((20, 20, 3), np.uint8)); "
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
