"""`demo --scenario hard`: items from the hard scenario; the default demo is as before."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from loop.services.demo import DemoLoopConfig, demo_manifest_write
from ml.mosaics import DIGIT_KEYS, make_mosaics
from ml.scenarios import scenario_pool


def _rows(path):  # type: ignore[no-untyped-def]
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_the_hard_demo_writes_the_hard_scenarios_images_and_their_true_digits(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    manifest = demo_manifest_write(n=30, seed=3, scenario="hard")
    pool = scenario_pool("hard", 30, seed=3, size=64)
    rows = _rows(manifest.path)
    assert [r["external_id"] for r in rows] == [f"hard-3-{i:05d}" for i in range(30)]
    for i, row in enumerate(rows):
        image = np.asarray(Image.open(manifest.path.parent / row["image"]))
        assert np.array_equal(image, pool.images[i])
        expected = [DIGIT_KEYS[d] for d in np.flatnonzero(pool.labels[i])]
        assert manifest.truth[row["external_id"]] == expected
    # long-tailed: many images show no digit at all, unlike the mosaics
    assert sum(not keys for keys in manifest.truth.values()) >= 5


def test_the_default_demo_still_writes_the_digit_mosaics(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    assert DemoLoopConfig().scenario == "easy"
    manifest = demo_manifest_write(n=12, seed=3)
    mosaics = make_mosaics(12, seed=3)
    rows = _rows(manifest.path)
    assert [r["external_id"] for r in rows] == [f"mosaic-3-{i:05d}" for i in range(12)]
    first = np.asarray(Image.open(manifest.path.parent / rows[0]["image"]))
    assert np.array_equal(first, mosaics.images[0])
    assert all(manifest.truth[r["external_id"]] for r in rows)  # a mosaic always shows a digit
