"""`demo --scenario hard`: items and crowd from the hard scenario; the default demo is as before."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from annotate.zooniverse.sandbox import CrowdConfig, Sandbox
from loop.services.demo import (
    DemoLoopConfig,
    demo_crowd,
    demo_crowd_text,
    demo_manifest_write,
    demo_prepare,
)
from ml.mosaics import DIGIT_KEYS, digit_vocabulary, make_mosaics
from ml.scenarios import HARD_CROWD, HARD_VOTES, scenario_pool


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


# ------------------------------------------------------------------------------ the crowd

DEMO_CROWD_FIELDS = {
    "anonymous_share": 0.2,
    "repeat_rate": 0.03,
    "gold_share": 0.02,
}


def _sandbox_with(manifest):  # type: ignore[no-untyped-def]
    """A stand-in with the digits as answers and one linked subject per manifest item."""
    vocabulary = digit_vocabulary()
    sandbox = Sandbox(
        [v["label"] for v in vocabulary], keys=[v["key"] for v in vocabulary], retirement_count=5
    )
    set_id = sandbox.create_subject_set("round-1")
    for i, external_id in enumerate(manifest.truth):
        sandbox.create_subject(
            {"image/png": f"https://x/{external_id}.png"},
            subject_set_id=set_id,
            metadata={"external_id": external_id, "#priority": i},
        )
    sandbox.link_subject_set(sandbox.workflow_id, set_id)
    return sandbox


def test_the_hard_demo_asks_the_stand_in_for_the_hard_scenarios_crowd():
    config = DemoLoopConfig(scenario="hard", volunteers=40, seed=7)
    crowd = CrowdConfig.from_json(json.loads(json.dumps(demo_crowd(config))))
    assert crowd == CrowdConfig.for_scenario("hard", n_volunteers=40, seed=7, **DEMO_CROWD_FIELDS)
    assert crowd.votes_per_subject == HARD_VOTES
    careless = HARD_CROWD["careless"][1]
    assert crowd.profiles["careless"].half_seen_scale == careless.half_seen_scale
    assert crowd.profiles["spammer"].ignores_subject
    text = demo_crowd_text(config)
    assert text.startswith("the hard scenario's crowd (ml.scenarios.HARD_CROWD, HARD_VOTES)")
    assert "35% careless" in text and "15% spammers" in text and "1 to 3 votes" in text
    assert "miss half of those 18% of the image side" in text


def test_the_hard_demos_truth_gives_the_stand_ins_crowd_each_digits_size(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    manifest = demo_manifest_write(n=40, seed=3, scenario="hard")
    pool = scenario_pool("hard", 40, seed=3, size=64)
    crowd_truth = manifest.crowd_truth()
    for i, (external_id, keys) in enumerate(manifest.truth.items()):
        sizes = crowd_truth[external_id]
        if not keys:
            assert sizes == []
            continue
        assert list(sizes) == keys
        for key, size in sizes.items():
            assert size == pytest.approx(pool.scale[i, DIGIT_KEYS.index(key)], abs=1e-4)
            assert 0.15 < size < 0.46  # the hard scenario's min_scale and max_scale
    assert any(isinstance(v, dict) for v in crowd_truth.values())


@pytest.mark.django_db
def test_the_hard_demo_writes_the_truth_with_sizes_for_the_stand_in(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    config = DemoLoopConfig(items=20, seed=3, scenario="hard")
    manifest = demo_prepare(config=config, say=lambda text: None)
    written = json.loads((tmp_path / "demo" / "truth.json").read_text())
    assert written == manifest.crowd_truth()
    assert any(isinstance(entry, dict) and entry for entry in written.values())


def test_careless_volunteers_of_the_hard_demo_miss_small_digits_in_the_stand_in(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    config = DemoLoopConfig(scenario="hard", volunteers=40, seed=7)
    manifest = demo_manifest_write(n=80, seed=7, scenario="hard")
    crowd = CrowdConfig.from_json(demo_crowd(config))
    # Every volunteer on every item (a workflow that never retires), for enough votes to count.
    everyone = _sandbox_with(manifest)
    everyone.set_retirement(everyone.workflow_id, None)
    run = everyone.run_volunteers(crowd=crowd, truth=manifest.crowd_truth())
    by_subject = {s.id: s.metadata["external_id"] for s in everyone.subjects()}
    missed: dict[str, list[bool]] = {"small": [], "big": []}
    for c in run.classifications:
        if c.profile != "careless":
            continue
        ticked = set(c.annotations[0]["value"])
        for key, size in manifest.scales.get(by_subject[c.subject_ids[0]], {}).items():
            if size < 0.2 or size > 0.3:  # the hard scenario's sides run from 0.16 to 0.45
                missed["small" if size < 0.2 else "big"].append(DIGIT_KEYS.index(key) not in ticked)
    small = sum(missed["small"]) / len(missed["small"])
    big = sum(missed["big"]) / len(missed["big"])
    assert len(missed["small"]) >= 100 and len(missed["big"]) >= 200
    assert small > 0.4 and big < 0.3 and small > big + 0.2  # about 0.5 and 0.2

    # The demo's workflow retires at --votes (5): the crowd gives each subject one to three.
    demo = _sandbox_with(manifest)
    run = demo.run_volunteers(crowd=crowd, truth=manifest.crowd_truth())
    votes = Counter(c.subject_ids[0] for c in run.classifications if not c.gold_standard)
    assert set(votes.values()) == {1, 2, 3} and len(votes) == 80


#: The easy demo's crowd on 30 mosaics (seed 7, 12 volunteers): its classifications, hashed as
#: they were before the hard crowd came to the stand-in; any change to what the default crowd
#: answers or whom it asks shows here.
EASY_CROWD_DIGEST = "ef8a08dc579ee7260d044dbb9a2814a40eaf0887d0ac7f86219ff88fee79d00e"


def test_the_easy_demos_crowd_gives_the_same_classifications_as_before(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    config = DemoLoopConfig(volunteers=12)
    assert CrowdConfig.from_json(demo_crowd(config)) == CrowdConfig(
        n_volunteers=12, seed=7, **DEMO_CROWD_FIELDS
    )
    manifest = demo_manifest_write(n=30, seed=7)
    assert manifest.crowd_truth() == manifest.truth and manifest.scales == {}
    sandbox = _sandbox_with(manifest)
    run = sandbox.run_volunteers(
        crowd=CrowdConfig.from_json(demo_crowd(config)), truth=manifest.crowd_truth()
    )
    rows = [
        (c.user_name, c.subject_ids, c.annotations[0]["value"], c.gold_standard)
        for c in run.classifications
    ]
    assert len(rows) == 150
    assert hashlib.sha256(json.dumps(rows).encode()).hexdigest() == EASY_CROWD_DIGEST
    assert demo_crowd_text(config).startswith("the stand-in's default crowd: 12 volunteers")
    assert "5 votes per subject" in demo_crowd_text(config)
