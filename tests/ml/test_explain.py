"""Grad-CAM points at the mosaic tile that holds the digit."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from ml.data import LabelledImages, preprocess
from ml.explain import explain_image, grad_cam, overlay_png
from ml.models import create_model
from ml.mosaics import make_mosaics
from ml.train import TrainConfig, fit

SIZE, TILE = 32, 16


@pytest.fixture(scope="module")
def trained():
    """A small CNN trained on 32-pixel mosaics for four epochs (a few seconds on a CPU)."""
    train, val = make_mosaics(1500, seed=11, size=SIZE), make_mosaics(300, seed=12, size=SIZE)
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, widths=(16, 32, 64), input_size=SIZE)
    cfg = TrainConfig(mode="finetune", epochs=4, hflip=False, lr=1e-2, batch_size=32,
                      device="cpu")
    result = fit(cfg, LabelledImages(train.images, train.labels),
                 LabelledImages(val.images, val.labels), model=model)
    assert result.val_metrics["map"] > 0.9
    return result.model


def tile_means(cam: np.ndarray) -> np.ndarray:
    return cam.reshape(2, TILE, 2, TILE).mean(axis=(1, 3)).ravel()  # row-major tiles


def test_the_map_has_the_input_shape_and_lies_in_zero_one(trained):
    m = make_mosaics(1, seed=13, size=SIZE)
    cam = grad_cam(trained, preprocess(m.images[0], trained.data_config),
                   int(np.flatnonzero(m.labels[0])[0]))
    assert cam.shape == (SIZE, SIZE) and cam.dtype == np.float32
    assert cam.min() >= 0 and cam.max() == pytest.approx(1.0)


def test_the_map_is_hottest_on_the_tile_holding_the_digit(trained):
    m = make_mosaics(40, seed=13, size=SIZE)
    hits = total = 0
    for i in range(len(m.images)):
        x = preprocess(m.images[i], trained.data_config)
        for digit in np.flatnonzero(m.labels[i]):
            tiles = np.flatnonzero(m.tiles[i] == digit)
            if len(tiles) != 1:  # the digit twice: either tile may win
                continue
            hits += int(tile_means(grad_cam(trained, x, int(digit))).argmax() == tiles[0])
            total += 1
    assert total > 30 and hits / total >= 0.9


def test_explaining_leaves_the_model_as_it_was(trained):
    trained.train()
    before = [p.clone() for p in trained.parameters()]
    grad_cam(trained, torch.randn(1, 3, SIZE, SIZE), 0)
    assert trained.training and all(p.grad is None for p in trained.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, trained.parameters(), strict=True))
    trained.eval()


def test_an_overlay_is_a_png_of_the_image_size(trained):
    m = make_mosaics(1, seed=14, size=SIZE)
    png = m.images[0]
    buffer = io.BytesIO()
    Image.fromarray(png).save(buffer, format="PNG")
    cam, image = explain_image(trained, buffer.getvalue(), int(np.flatnonzero(m.labels[0])[0]))
    data = overlay_png(image, cam)
    assert data.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(data)).size == (SIZE, SIZE)
    # A map of another size is resized to the image.
    assert Image.open(io.BytesIO(overlay_png(np.zeros((64, 48, 3), np.uint8), cam))).size == (
        48, 64)


def test_a_concept_out_of_range_is_refused(trained):
    with pytest.raises(ValueError, match="out of range"):
        grad_cam(trained, torch.randn(1, 3, SIZE, SIZE), 10)
