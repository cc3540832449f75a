"""Datasets over paths, bytes and arrays; broken images dropped and reported; a stable split."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ml.data import (
    AugConfig,
    LabelledImages,
    build_transform,
    collate_skip_broken,
    normalize,
    preprocess,
    source_sha256,
)
from ml.models import DataConfig
from ml.mosaics import make_mosaics
from ml.splits import stable_split

CFG = DataConfig(input_size=32, train_size=32)


def png_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def mosaics():
    return make_mosaics(6, seed=5, size=32)


def test_paths_bytes_and_arrays_of_the_same_image_give_the_same_tensor(tmp_path, mosaics):
    image = mosaics.images[0]
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(image))
    data = LabelledImages([image, png_bytes(image), str(path)], np.ones((3, 10)) * 0.5,
                          transform=build_transform(CFG, train=False))
    a, b, c = (data[i][0] for i in range(3))
    assert a.dtype == torch.uint8 and a.shape == (3, 32, 32)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_items_carry_soft_targets_weights_and_their_index(mosaics):
    targets = np.linspace(0, 1, 60).reshape(6, 10)
    data = LabelledImages(mosaics.images, targets, np.arange(6) / 2,
                          transform=build_transform(CFG, train=False))
    _, target, weight, index = data[4]
    assert torch.allclose(target, torch.tensor(targets[4], dtype=torch.float32))
    assert weight.item() == 2.0 and index == 4


def test_a_broken_image_is_dropped_from_its_batch_and_reported(mosaics):
    sources = [png_bytes(mosaics.images[0]), b"\x89PNG\r\n\x1a\n broken", png_bytes(
        mosaics.images[1])[:60], mosaics.images[2]]
    data = LabelledImages(sources, np.zeros((4, 10)), transform=build_transform(CFG, train=False))
    batches = list(DataLoader(data, batch_size=4, collate_fn=collate_skip_broken))
    images, targets, weights, idx = batches[0]
    assert idx.tolist() == [0, 3]
    assert images.shape == (2, 3, 32, 32) and targets.shape == (2, 10)
    assert set(data.errors) == {1, 2} and data.errors[2].startswith("corrupt")


def test_a_batch_of_only_broken_images_collates_to_none():
    data = LabelledImages([b"not an image"], np.zeros((1, 2)))
    assert collate_skip_broken([data[0]]) is None


def test_targets_outside_zero_one_and_negative_weights_are_refused(mosaics):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LabelledImages(mosaics.images, np.full((6, 10), 1.5))
    with pytest.raises(ValueError, match="weights"):
        LabelledImages(mosaics.images, np.zeros((6, 10)), -np.ones(6))


def test_without_flips_the_training_transform_equals_the_evaluation_transform(mosaics):
    x = torch.from_numpy(mosaics.images[0]).permute(2, 0, 1)
    train = build_transform(CFG, train=True, aug=AugConfig(hflip=False))
    assert torch.equal(train(x), build_transform(CFG, train=False)(x))


def test_with_flips_some_training_images_come_out_mirrored(mosaics):
    x = torch.from_numpy(mosaics.images[0]).permute(2, 0, 1)
    train = build_transform(CFG, train=True, aug=AugConfig(hflip=True))
    torch.manual_seed(0)
    outs = [train(x) for _ in range(20)]
    assert any(torch.equal(o, x.flip(-1)) for o in outs) and any(torch.equal(o, x) for o in outs)


def test_transforms_resize_to_the_backbones_train_and_input_sizes(mosaics):
    cfg = DataConfig(input_size=96, train_size=48)
    x = mosaics.images[0]
    assert build_transform(cfg, train=True)(torch.from_numpy(x).permute(2, 0, 1)).shape == (
        3, 48, 48)
    assert preprocess(png_bytes(x), cfg).shape == (1, 3, 96, 96)


def test_normalize_scales_uint8_and_applies_the_backbone_mean_and_std():
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = normalize(x, DataConfig())
    expected = (1 - torch.tensor(DataConfig().mean)) / torch.tensor(DataConfig().std)
    assert torch.allclose(out[0, :, 0, 0], expected)


def test_content_hashes_depend_on_content_only(mosaics, tmp_path):
    data = png_bytes(mosaics.images[0])
    (tmp_path / "x.png").write_bytes(data)
    assert source_sha256(data) == source_sha256(tmp_path / "x.png")
    assert source_sha256(mosaics.images[0]) == source_sha256(mosaics.images[0].copy())
    assert source_sha256(mosaics.images[0]) != source_sha256(mosaics.images[1])


def test_stable_split_is_deterministic_and_near_the_fractions():
    ids = [f"/2048128/item_{i}" for i in range(5000)]
    split = stable_split(ids)
    assert np.array_equal(split, stable_split(ids))
    counts = Counter(split.tolist())
    assert abs(counts["train"] / 5000 - 0.8) < 0.02 and abs(counts["test"] / 5000 - 0.1) < 0.02


def test_an_item_keeps_its_split_when_other_items_come_and_go():
    ids = [f"item-{i}" for i in range(1000)]
    full = dict(zip(ids, stable_split(ids), strict=True))
    subset = ids[::7]
    assert [full[i] for i in subset] == stable_split(subset).tolist()


def test_a_salt_draws_another_split_and_bad_fractions_are_refused():
    ids = [f"item-{i}" for i in range(200)]
    assert not np.array_equal(stable_split(ids), stable_split(ids, salt="fold-2"))
    with pytest.raises(ValueError):
        stable_split(ids, (0.5, 0.2, 0.2))
