"""Grad-CAM maps for the review screens: display size, the per-version cache, errors, access."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.urls import reverse
from PIL import Image

from ml.mosaics import DIGIT_KEYS
from tests.factories import model_version_checkpoint
from tests.training.builders import write_mosaic_items
from training.models import ModelVersion


def publish_version(*, seed: int = 0, concepts: list[str] | None = None,
                    active: bool = True) -> ModelVersion:
    """A tiny untrained small CNN saved as a verified checkpoint, registered as a version.

    The maps' content is tested in tests/ml; here only the plumbing around them is."""
    return model_version_checkpoint(concepts=list(concepts or DIGIT_KEYS), seed=seed,
                                    active=active)


def wide_item(name: str = "wide", size: tuple[int, int] = (96, 48)):
    """An item whose image is twice as wide as it is high."""
    from annotate.models import Item

    root = Path(settings.MEDIA_ROOT) / "items"
    root.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / f"{name}.png")
    return Item.objects.create(external_id=name, image_file=f"items/{name}.png",
                               image_state=Item.ImageState.OK)


@pytest.fixture(autouse=True)
def _no_loaded_models():
    """Every test loads its versions afresh: the per-process model cache outlives a test."""
    from training.services.model_cache import model_cache_clear

    model_cache_clear()
    yield
    model_cache_clear()


@pytest.fixture
def items(db):
    return write_mosaic_items(4, curated=4).item_ids


@pytest.fixture
def model_runs(monkeypatch):
    """Counts the model runs behind the maps (the cache's one compute function)."""
    from training.services import explain

    calls: list[int] = []
    compute = explain.explain_cams_compute

    def counted(**kwargs):
        calls.append(kwargs["version"].pk)
        return compute(**kwargs)

    monkeypatch.setattr(explain, "explain_cams_compute", counted)
    return calls


def url(item_id: int, concept: str = "seven", *, layer: str = "overlay", **query) -> str:
    name = "training:item-explain-map-png" if layer == "map" else "training:item-explain-png"
    path = reverse(name, args=[item_id, concept])
    return path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def png_of(response) -> Image.Image:
    assert response.status_code == 200, response.content[:200]
    assert response["Content-Type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def test_the_overlay_has_the_asked_size_and_keeps_the_image_aspect(curator_client):
    publish_version()
    item = wide_item()
    assert png_of(curator_client.get(url(item.pk))).size == (512, 256)  # the default
    assert png_of(curator_client.get(url(item.pk, size=256))).size == (256, 128)
    image = png_of(curator_client.get(url(item.pk, size=200)))
    assert image.size == (224, 112) and image.mode == "RGB"  # rounded up to a multiple of 32


def test_sizes_are_clamped_to_64_to_1024_and_a_size_that_is_no_number_is_refused(
    curator_client, items
):
    publish_version()
    assert png_of(curator_client.get(url(items[0], size=10))).size == (64, 64)
    assert png_of(curator_client.get(url(items[0], size=5000))).size == (1024, 1024)
    for bad in ("abc", "1.5", "-"):
        response = curator_client.get(url(items[0], size=bad))
        assert response.status_code == 400 and b"whole number" in response.content


def test_the_bare_map_is_transparent_and_over_the_image_looks_like_the_overlay(curator_client):
    publish_version()
    item = wide_item()
    bare = png_of(curator_client.get(url(item.pk, layer="map", size=128)))
    assert bare.size == (128, 64) and "transparency" in bare.info
    bare = bare.convert("RGBA")
    assert set(np.asarray(bare)[..., 3].ravel()) == {115}  # 0.45 everywhere
    overlay = np.asarray(png_of(curator_client.get(url(item.pk, size=128))), dtype=np.float32)
    picture = Image.open(Path(settings.MEDIA_ROOT) / item.image_file).convert("RGB")
    under = np.asarray(picture.resize((128, 64), Image.Resampling.LANCZOS), dtype=np.float32)
    rgba = np.asarray(bare, dtype=np.float32)
    composed = rgba[..., :3] * (115 / 255) + under * (1 - 115 / 255)
    assert np.abs(composed - overlay).max() <= 1  # rounding


def test_the_first_view_writes_the_cache_and_later_views_do_not_run_the_model(
    curator_client, items, model_runs
):
    version = publish_version()
    first = curator_client.get(url(items[0], size=128))
    assert png_of(first).size == (128, 128) and model_runs == [version.pk]
    folder = Path(settings.ARTIFACT_ROOT) / "explain" / f"v{version.pk}"
    cached = list(folder.glob(f"{items[0]}-*/seven-128.png"))
    assert len(cached) == 1 and cached[0].read_bytes() == first.content
    assert not list(folder.glob("*/.*.tmp"))  # written under a temporary name, then renamed

    again = curator_client.get(url(items[0], size=128))
    assert again.content == first.content and model_runs == [version.pk]
    # Another concept, size or layer of the same item is drawn from the maps already computed.
    png_of(curator_client.get(url(items[0], "three", size=256)))
    png_of(curator_client.get(url(items[0], "three", layer="map")))
    assert model_runs == [version.pk]
    # Another item runs the model once more.
    png_of(curator_client.get(url(items[1])))
    assert model_runs == [version.pk, version.pk]


def test_the_selector_reads_the_same_cache(items, model_runs):
    from annotate.models import Item
    from training.services.explain import prediction_explain_png

    publish_version()
    item = Item.objects.get(pk=items[0])
    png = prediction_explain_png(item=item, concept_key="one", size=96)
    assert Image.open(io.BytesIO(png)).size == (96, 96)
    assert prediction_explain_png(item=item, concept_key="one", size=96) == png
    assert len(model_runs) == 1


def test_a_newly_active_version_draws_its_maps_in_its_own_folder(
    curator_client, items, model_runs
):
    old = publish_version(seed=0)
    png_of(curator_client.get(url(items[0], size=64)))
    new = publish_version(seed=1)
    response = curator_client.get(url(items[0], size=64))
    assert png_of(response) and response["X-Model-Version"] == str(new.pk)
    assert model_runs == [old.pk, new.pk]
    root = Path(settings.ARTIFACT_ROOT) / "explain"
    assert list(root.glob(f"v{old.pk}/*/seven-64.png")) and list(
        root.glob(f"v{new.pk}/*/seven-64.png"))


def test_the_etag_revalidates_and_a_stale_version_in_the_url_is_sent_to_the_active_one(
    curator_client, items, model_runs
):
    old = publish_version(seed=0)
    first = curator_client.get(url(items[0], v=old.pk, size=64))
    assert first["Cache-Control"] == "private, max-age=86400" and first["ETag"]
    unpinned = curator_client.get(url(items[0], size=64))
    assert unpinned["Cache-Control"] == "private, max-age=60"
    assert unpinned["ETag"] == first["ETag"]
    not_modified = curator_client.get(url(items[0], size=64), HTTP_IF_NONE_MATCH=first["ETag"])
    assert not_modified.status_code == 304 and not_modified.content == b""

    new = publish_version(seed=1)
    stale = curator_client.get(url(items[0], v=old.pk, size=64))
    assert stale.status_code == 302
    assert stale["Location"] == url(items[0], v=new.pk, size=64)
    # The old ETag names the old version: the browser's copy is not reused.
    fresh = curator_client.get(url(items[0], size=64), HTTP_IF_NONE_MATCH=first["ETag"])
    assert fresh.status_code == 200 and fresh["ETag"] != first["ETag"]


def test_pruning_removes_only_the_folders_of_versions_neither_active_nor_recent(db):
    from training.services.explain import explain_cache_prune, explain_root

    versions = [publish_version(seed=i, active=False) for i in range(5)]
    ModelVersion.objects.filter(pk=versions[0].pk).update(status=ModelVersion.Status.ACTIVE)
    gone = max(v.pk for v in versions) + 10  # a version deleted since
    root = explain_root()
    for pk in [v.pk for v in versions] + [gone]:
        (root / f"v{pk}" / "1-abc").mkdir(parents=True)
        (root / f"v{pk}" / "1-abc" / "seven-64.png").write_bytes(b"png")
    (root / "notes.txt").write_text("not a version folder")

    removed = explain_cache_prune(keep=3)
    assert removed == [versions[1].pk, gone]
    left = sorted(p.name for p in root.iterdir())
    assert left == sorted([f"v{versions[0].pk}", *(f"v{v.pk}" for v in versions[2:]),
                           "notes.txt"])


def test_the_first_map_of_a_new_version_prunes_the_old_folders(curator_client, items):
    from training.services import explain

    old = [publish_version(seed=i) for i in range(5)]
    stale = explain.explain_root() / f"v{old[0].pk}" / "1-abc"
    stale.mkdir(parents=True)
    png_of(curator_client.get(url(items[0], size=64)))
    assert not stale.parent.exists()


def test_missing_image_model_or_concept_answers_404_with_the_reason(curator_client, items):
    from annotate.models import Item

    response = curator_client.get(url(items[0]))
    assert response.status_code == 404 and b"no active model" in response.content
    assert response["Content-Type"].startswith("text/plain")

    publish_version(concepts=["zero", "one"])
    response = curator_client.get(url(items[0], "seven"))
    assert response.status_code == 404 and b"does not predict 'seven'" in response.content
    assert curator_client.get(url(items[0], "eleven", layer="map")).status_code == 404

    Item.objects.filter(pk=items[1]).update(image_state=Item.ImageState.CORRUPT)
    response = curator_client.get(url(items[1], "one"))
    assert response.status_code == 404 and b"no usable image" in response.content
    response = curator_client.get(url(10**9, "one"))
    assert response.status_code == 404 and b"no item" in response.content

    (Path(settings.MEDIA_ROOT) / Item.objects.get(pk=items[2]).image_file).unlink()
    response = curator_client.get(url(items[2], "one"))
    assert response.status_code == 404 and b"cannot be read" in response.content
    assert str(settings.MEDIA_ROOT).encode() not in response.content


def test_a_checkpoint_that_does_not_verify_answers_503_without_a_traceback(
    curator_client, items
):
    version = publish_version()
    weights = (Path(settings.ARTIFACT_ROOT) / version.checkpoint_path).with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:-8] + b"tampered")
    response = curator_client.get(url(items[0]))
    assert response.status_code == 503
    assert response.content.decode().startswith(f"the active model v{version.pk} cannot be")
    assert b"Traceback" not in response.content


def test_curators_get_the_maps_and_others_do_not(client, curator_client, items, people):
    publish_version()
    assert curator_client.get(url(items[0], size=64)).status_code == 200

    client.force_login(people["nobody"])  # not staff: sent to the admin login
    response = client.get(url(items[0], size=64))
    assert response.status_code == 302 and "/login/" in response["Location"]

    nobody = people["nobody"]
    nobody.is_staff = True
    nobody.save(update_fields=["is_staff"])
    client.force_login(nobody)  # staff, but may not view items
    assert client.get(url(items[0], size=64)).status_code == 403


def test_one_model_is_loaded_per_version_and_process(items, monkeypatch):
    from training.services import model_cache

    version = publish_version()
    loads = []
    load = model_cache.model_version_load

    def counted(v):
        loads.append(v.pk)
        return load(v)

    monkeypatch.setattr(model_cache, "model_version_load", counted)
    first = model_cache.model_version_loaded(version)
    assert model_cache.model_version_loaded(version) is first and loads == [version.pk]


def test_the_warm_up_loads_the_active_model_and_says_so_without_one(db):
    from training.services.explain import explain_warm
    from training.services.model_cache import _MODELS

    assert explain_warm() is False
    version = publish_version()
    assert explain_warm() is True
    assert any(key[0] == version.pk for key in _MODELS)


def test_gunicorn_reads_the_warm_up_hook_from_the_repository_root():
    import runpy

    config = runpy.run_path(str(Path(settings.BASE_DIR) / "gunicorn.conf.py"))
    assert callable(config["post_worker_init"])


def test_the_warm_up_of_a_version_whose_checkpoint_is_gone_says_so_in_one_line(db, caplog):
    from training.services.explain import explain_warm

    version = publish_version()
    (Path(settings.ARTIFACT_ROOT) / version.checkpoint_path).unlink()
    with caplog.at_level("WARNING"):
        assert explain_warm() is False
    [record] = [r for r in caplog.records if "evidence maps" in r.getMessage()]
    assert f"v{version.pk} is not loaded" in record.getMessage() and record.exc_info is None
