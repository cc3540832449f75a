"""The embedding cache: computed once per image and weights, memory-mapped, shared safely."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ml.embeddings import EmbeddingCache, compute_embeddings, model_key
from ml.models import create_model
from ml.mosaics import make_mosaics
from ml.train import FeatureSet, TrainConfig, fit


@pytest.fixture(scope="module")
def mosaics():
    return make_mosaics(40, seed=9, size=32)


def backbone(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("small_cnn", 10, widths=(4, 8), input_size=32)


def cache_for(root, model):
    return EmbeddingCache(root, model_key(model), model.num_features)


def test_features_are_computed_once_then_read_from_the_cache(tmp_path, mosaics):
    model = backbone()
    first = compute_embeddings(model, mosaics.images, cache=cache_for(tmp_path, model),
                               batch_size=16)
    again = compute_embeddings(model, mosaics.images, cache=cache_for(tmp_path, model))
    assert (first.n_computed, first.n_cached) == (40, 0)
    assert (again.n_computed, again.n_cached) == (0, 40)
    assert np.array_equal(first.features, again.features) and again.ok.all()


def test_cached_features_are_the_models_embeddings(tmp_path, mosaics):
    from ml.data import preprocess

    model = backbone().eval()
    result = compute_embeddings(model, mosaics.images[:3], cache=cache_for(tmp_path, model))
    with torch.no_grad():
        direct = model.embed(torch.cat([preprocess(a, model.data_config)
                                        for a in mosaics.images[:3]]))
    assert np.allclose(result.features, direct.numpy(), atol=1e-5)


def test_only_new_images_are_computed(tmp_path, mosaics):
    model = backbone()
    compute_embeddings(model, mosaics.images[:25], cache=cache_for(tmp_path, model))
    result = compute_embeddings(model, mosaics.images, cache=cache_for(tmp_path, model))
    assert (result.n_computed, result.n_cached) == (15, 25)


def test_other_weights_do_not_read_these_features_but_another_head_does(tmp_path, mosaics):
    model = backbone(0)
    compute_embeddings(model, mosaics.images, cache=cache_for(tmp_path, model))
    other = backbone(1)
    assert model_key(other) != model_key(model)
    assert compute_embeddings(other, mosaics.images[:5],
                              cache=cache_for(tmp_path, other)).n_cached == 0
    retrained_head = backbone(0)
    torch.nn.init.zeros_(retrained_head.head.layers[-1].weight)
    assert model_key(retrained_head) == model_key(model)


def test_the_cache_is_memory_mapped_numpy_with_a_json_index(tmp_path, mosaics):
    model = backbone()
    compute_embeddings(model, mosaics.images, cache=cache_for(tmp_path, model), batch_size=16)
    folder = tmp_path / model_key(model)
    index = json.loads((folder / "index.json").read_text())
    assert index["dim"] == model.num_features and len(index["rows"]) == 40
    chunk = np.load(folder / index["chunks"][0], mmap_mode="r")
    assert isinstance(chunk, np.memmap) and chunk.shape == (16, model.num_features)


def test_broken_images_are_reported_and_the_rest_embedded(tmp_path, mosaics):
    model = backbone()
    sources = [mosaics.images[0], b"GIF89a broken", tmp_path / "missing.png", mosaics.images[1]]
    result = compute_embeddings(model, sources, cache=cache_for(tmp_path, model))
    assert result.ok.tolist() == [True, False, False, True]
    assert set(result.failures) == {1, 2} and not result.features[1].any()


def test_progress_is_reported_up_to_the_total(tmp_path, mosaics):
    calls = []
    compute_embeddings(backbone(), mosaics.images, batch_size=16,
                       progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, 40) and calls[-1] == (40, 40) and len(calls) == 4


def test_a_head_trains_on_cached_features(tmp_path):
    train, val = make_mosaics(300, seed=1, size=32), make_mosaics(100, seed=2, size=32)
    model = backbone()
    cache = cache_for(tmp_path, model)
    ft = compute_embeddings(model, train.images, cache=cache).features
    fv = compute_embeddings(model, val.images, cache=cache).features
    result = fit(TrainConfig(mode="head", epochs=5, lr=1e-2), FeatureSet(ft, train.labels),
                 FeatureSet(fv, val.labels), model=model)
    assert result.model is model and np.isfinite(result.val_metrics["map"])
