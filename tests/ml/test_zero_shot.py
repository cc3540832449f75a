"""Zero-shot concept scores from a tiny, randomly initialised CLIP built offline."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from ml.zero_shot import (
    TEMPLATES,
    ZeroShotError,
    ZeroShotModel,
    clip_config,
    concept_prompts,
    concept_scores,
    create_zero_shot_model,
    neutral_prompts,
    weights_fetch,
)
from tests.ml.builders import TINY_CLIP, tiny_weights


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("clip") / "tiny-clip.pt"
    return path, tiny_weights(path)


@pytest.fixture(scope="module")
def model(weights_file) -> ZeroShotModel:
    path, _ = weights_file
    m = create_zero_shot_model("tiny", weights=path, config=TINY_CLIP)
    m.set_concepts([concept_prompts("painting"), concept_prompts("map"), concept_prompts("toy")])
    return m


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_scores_are_one_probability_per_image_and_concept(model):
    with torch.inference_mode():
        features = model.embed(_images(5)).numpy()
    scores = model.scores(features)
    assert scores.shape == (5, 3) and scores.dtype == np.float32
    assert np.all((scores >= 0) & (scores <= 1)) and not np.isnan(scores).any()
    # Not one softmax over the vocabulary: the rows do not sum to one.
    assert not np.allclose(scores.sum(axis=1), 1.0)


def test_scores_are_the_sigmoid_of_the_forward_logits(model):
    x = _images(4, seed=1)
    with torch.inference_mode():
        by_forward = torch.sigmoid(model(x)).numpy()
        by_features = model.scores(model.embed(x).numpy())
    np.testing.assert_allclose(by_forward, by_features, rtol=1e-5, atol=1e-6)


def test_the_same_weights_give_the_same_scores(model, weights_file):
    path, _ = weights_file
    again = create_zero_shot_model("tiny", weights=path, config=TINY_CLIP)
    again.set_concepts(
        [concept_prompts("painting"), concept_prompts("map"), concept_prompts("toy")]
    )
    x = _images(3, seed=2)
    with torch.inference_mode():
        np.testing.assert_array_equal(
            model.scores(model.embed(x).numpy()), again.scores(again.embed(x).numpy())
        )
        other = create_zero_shot_model("tiny", weights=None, config=TINY_CLIP)
        other.set_concepts([concept_prompts("painting")])
        assert not np.allclose(
            model.scores(model.embed(x).numpy())[:, :1], other.scores(other.embed(x).numpy())
        )


def test_each_concepts_score_is_independent_of_the_other_concepts():
    image = np.array([[1.0, 0.0, 0.0]])
    near, far = [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]
    neutral = np.array([1.0, 1.0, 1.0])
    two = concept_scores(image, np.array([near, far]), neutral, scale=10.0)
    one = concept_scores(image, np.array([near]), neutral, scale=10.0)
    assert two[0, 0] == pytest.approx(one[0, 0])
    assert two[0, 0] > 0.5 > two[0, 1]
    # As close to the concept as to the neutral prompt: exactly undecided.
    assert concept_scores(image, np.array([neutral]), neutral, scale=50.0)[0, 0] == pytest.approx(
        0.5
    )


def test_the_prompts_use_the_concepts_label_and_its_description():
    prompts = concept_prompts("map", "A drawing of a region. Often coloured.")
    assert [t.format("map") for t in TEMPLATES] == prompts[: len(TEMPLATES)]
    assert "a photo of A drawing of a region." in prompts
    assert not any("Often" in p for p in prompts)
    assert concept_prompts("map", "map") == concept_prompts("map")
    assert all("an object" in p for p in neutral_prompts())


def test_the_text_embedding_of_a_concept_comes_from_its_own_prompts(model):
    expected = model.encode_text(concept_prompts("map")).mean(0)
    expected = expected / expected.norm()
    torch.testing.assert_close(model.concept_text[1], expected)
    assert not torch.allclose(model.concept_text[0], model.concept_text[1])


def test_a_weights_file_with_another_sha256_is_refused(weights_file, tmp_path):
    path, sha = weights_file
    wrong = ("0" if sha[0] != "0" else "1") + sha[1:]
    with pytest.raises(ZeroShotError, match="hash mismatch"):
        weights_fetch(f"{path}#sha256={wrong}", cache_dir=tmp_path)
    assert weights_fetch(f"{path}#sha256={sha}", cache_dir=tmp_path) == (path, sha)
    assert weights_fetch(str(path), cache_dir=tmp_path) == (path, sha)


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"visual.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ZeroShotError, match="do not fit"):
        create_zero_shot_model("tiny", weights=path, config=TINY_CLIP)


def test_a_model_needing_a_hub_tokenizer_or_an_unknown_name_is_refused():
    with pytest.raises(ZeroShotError, match="unknown open_clip model"):
        clip_config("no-such-clip")
    hf = {**TINY_CLIP, "text_cfg": {"hf_model_name": "some/model", "hf_tokenizer_name": "x"}}
    with pytest.raises(ZeroShotError, match="Hugging Face"):
        clip_config("hf-text", hf)
    assert clip_config("ViT-B-32")["vision_cfg"]["patch_size"] == 32


@pytest.fixture
def served(weights_file) -> Iterator[str]:
    path, _ = weights_file

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(path.parent), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_url_is_downloaded_once_into_the_cache_when_its_sha256_matches(
    served, weights_file, tmp_path
):
    _, sha = weights_file
    cache = tmp_path / "weights"
    path, got = weights_fetch(f"{served}#sha256={sha}", cache_dir=cache)
    assert got == sha and path.parent == cache and path.is_file()
    again, _ = weights_fetch(f"{served}#sha256={sha}", cache_dir=cache)
    assert again == path and [p.name for p in cache.iterdir()] == [path.name]
    model = create_zero_shot_model("tiny", weights=path, config=TINY_CLIP)
    assert isinstance(model, ZeroShotModel)


def test_a_download_with_another_sha256_is_refused_and_not_kept(served, weights_file, tmp_path):
    _, sha = weights_file
    wrong = ("0" if sha[0] != "0" else "1") + sha[1:]
    cache = tmp_path / "weights"
    with pytest.raises(ZeroShotError, match="hash mismatch"):
        weights_fetch(f"{served}#sha256={wrong}", cache_dir=cache)
    assert not [p for p in cache.iterdir() if p.is_file()]


def test_a_url_without_its_sha256_is_refused(served, tmp_path):
    with pytest.raises(ZeroShotError, match="needs its sha256"):
        weights_fetch(served, cache_dir=tmp_path)
