"""The sandbox's volunteers answer as they always have: the classifications of the demo's easy
crowd and of the hard crowd on fixed subjects are pinned by a hash, so that a change to the
volunteer model that moves a single draw shows here (change the hash only on purpose)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from annotate.zooniverse.sandbox import CrowdConfig, Sandbox
from ml.mosaics import DIGIT_KEYS, digit_vocabulary, make_mosaics
from ml.scenarios import scenario_pool

#: The demo's crowd fields besides the scenario's profiles (``loop.services.demo``).
DEMO_FIELDS = {"anonymous_share": 0.2, "repeat_rate": 0.03, "gold_share": 0.02}


def answers_hash(crowd: CrowdConfig, truth: list[object], *, task_type: str = "multiple") -> str:
    """A short hash of who classified which subject how, on digit subjects with ``truth``."""
    vocabulary = digit_vocabulary()
    sandbox = Sandbox(
        [v["label"] for v in vocabulary],
        keys=[v["key"] for v in vocabulary],
        retirement_count=5,
        task_type=task_type,
    )
    set_id = sandbox.create_subject_set("pinned")
    for i, entry in enumerate(truth):
        sandbox.create_subject(
            {"image/png": f"https://x/{i}.png"},
            subject_set_id=set_id,
            metadata={"external_id": f"item-{i}", "#priority": i, "#truth": entry},
        )
    sandbox.link_subject_set(sandbox.workflow_id, set_id)
    run = sandbox.run_volunteers(crowd=crowd)
    made = [
        (c.user_name, c.profile, c.subject_ids, c.annotations[0]["value"], c.gold_standard)
        for c in run.classifications
    ]
    return hashlib.sha256(json.dumps(made).encode()).hexdigest()[:16]


def mosaic_truth(n: int) -> list[object]:
    labels = make_mosaics(n, seed=0).labels
    return [[DIGIT_KEYS[d] for d in np.flatnonzero(row)] for row in labels]


def hard_truth(n: int) -> list[object]:
    pool = scenario_pool("hard", n, seed=1, size=64)
    return [
        {DIGIT_KEYS[d]: float(pool.scale[i, d]) for d in np.flatnonzero(pool.labels[i])}
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("scenario", "truth", "task_type", "pinned"),
    [
        ("easy", "mosaics", "multiple", "3147f1f737624afb"),
        ("easy", "mosaics", "single", "a39172f3b0d32563"),
        ("easy", "sizes", "multiple", "b8633c79c35ec44b"),
        ("hard", "sizes", "multiple", "a195d3e44c8a5a3a"),
        ("hard", "sizes", "single", "ed63d94baa114c00"),
    ],
)
def test_the_crowds_classifications_are_the_pinned_ones(
    scenario: str, truth: str, task_type: str, pinned: str
) -> None:
    seed = 0 if scenario == "easy" else 7
    crowd = CrowdConfig.for_scenario(scenario, n_volunteers=40, seed=seed, **DEMO_FIELDS)
    entries = mosaic_truth(80) if truth == "mosaics" else hard_truth(80)
    assert answers_hash(crowd, entries, task_type=task_type) == pinned
