"""The sandbox's crowd can be the hard scenario's: it misses small objects, spams, and gives each
subject one to three votes, as ``ml.scenarios.HARD_CROWD`` and ``HARD_VOTES`` do in the benches.

The truth carries each object's size (``{label: size}`` entries); the default crowd answers as
before whatever the truth says about sizes.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import requests
from django.core.management import CommandError, call_command

from annotate.zooniverse.sandbox import (
    ClassificationRecord,
    CrowdConfig,
    Sandbox,
    SandboxServer,
    eyesight,
    serve,
)
from ml.crowd import DEFAULT_MIX, PROFILES, CrowdProfile, SimulatedCrowd
from ml.scenarios import HARD_CROWD, HARD_VOTES, scenario_crowd

VOCABULARY = ["painting", "drawing", "map", "photograph"]
KEYS = ["painting", "drawing", "map", "photo"]
SMALL, BIG = 0.1, 0.4  # object sides, as shares of the image side


def subjects(sandbox: Sandbox, truth: list[object], *, name: str = "s") -> list[int]:
    """One subject per truth entry (put in ``#truth``), linked to the workflow, in that order."""
    set_id = sandbox.create_subject_set(name)
    ids = [
        sandbox.create_subject(
            {"image/png": f"https://x/{name}/{i}.png"},
            subject_set_id=set_id,
            metadata={"external_id": f"{name}-{i}", "#priority": i, "#truth": entry},
        )
        for i, entry in enumerate(truth)
    ]
    sandbox.link_subject_set(sandbox.workflow_id, set_id)
    return ids


def ticks(c: ClassificationRecord) -> set[int]:
    return set(c.annotations[0]["value"])


def votes_per_subject(classifications: list[ClassificationRecord]) -> Counter[int]:
    return Counter(c.subject_ids[0] for c in classifications if not c.gold_standard)


@pytest.fixture(scope="module")
def everyone_sees_everything() -> tuple[Sandbox, list[ClassificationRecord]]:
    """The hard crowd on a workflow that never retires: each of 30 volunteers classifies each of
    40 subjects, half showing a small map, half a big one (and a painting of unknown size)."""
    sandbox = Sandbox(VOCABULARY, keys=KEYS)
    sandbox.set_retirement(sandbox.workflow_id, None)
    truth = [{"map": SMALL if i % 2 else BIG, "painting": None} for i in range(40)]
    subjects(sandbox, truth)
    run = sandbox.run_volunteers(crowd=CrowdConfig.for_scenario("hard", n_volunteers=30, seed=4))
    return sandbox, run.classifications


# ------------------------------------------------------------------------------ the profiles


def test_the_hard_crowd_is_the_benches_hard_crowd() -> None:
    crowd = CrowdConfig.for_scenario("hard", n_volunteers=40, seed=7)
    assert crowd.votes_per_subject == HARD_VOTES == (1, 3)
    assert crowd.mix == {name: share for name, (share, _) in HARD_CROWD.items()}
    for name, (_, profile) in HARD_CROWD.items():
        assert crowd.profiles[name] is profile  # the same profiles, not copies
        assert profile.ignores_subject is (name == "spammer")
    assert crowd.profiles["expert"] == PROFILES["expert"]  # gold standard still works
    assert (crowd.n_volunteers, crowd.seed) == (40, 7)


def test_the_easy_scenarios_crowd_is_the_sandboxs_default_one() -> None:
    assert scenario_crowd("easy").mix is None and scenario_crowd("easy").votes is None
    assert CrowdConfig.for_scenario("easy", seed=3) == CrowdConfig(seed=3)
    assert CrowdConfig().mix == DEFAULT_MIX and CrowdConfig().profiles == PROFILES
    with pytest.raises(ValueError, match="unknown scenario"):
        CrowdConfig.for_scenario("medium")


def test_a_sandbox_volunteer_sees_an_object_as_the_benches_simulated_volunteer_does() -> None:
    profile = CrowdProfile(0.85, 0.06, half_seen_scale=0.18, size_steepness=3.0)
    simulated = SimulatedCrowd(n_volunteers=1, mix={"careless": (1.0, profile)}, seed=0)
    simulated.half_seen[:] = 0.18 * 1.3  # a volunteer with a 1.3 eyesight factor
    scales = np.array([0.02, 0.08, 0.12, 0.18, 0.25, 0.45, 0.9])
    theirs = simulated.seen_probability(scales[:, None], np.zeros(len(scales), dtype=int))[:, 0]
    ours = [profile.seen_probability(float(s), eyesight=1.3) for s in scales]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert ours[3] < 0.5 < ours[4]  # half of the objects at 1.3 x 0.18 are seen
    assert profile.seen_probability(None, eyesight=1.3) == 1.0  # a size not given: seen
    assert PROFILES["careless"].seen_probability(0.01) == 1.0  # the default crowd sees all


def test_the_sandboxs_volunteers_tick_as_often_as_the_benches_crowd_for_one_profile_and_size() -> (
    None
):
    """The same profile, the same sizes: the sandbox's per-answer draws (each volunteer's eyesight
    from their name) and the vectorised crowd's (eyesight drawn by seed) tick alike."""
    profile = HARD_CROWD["careless"][1]
    sizes = [SMALL, 0.18, BIG]
    sandbox = Sandbox(VOCABULARY, keys=KEYS)
    sandbox.set_retirement(sandbox.workflow_id, None)
    truth = [{"map": sizes[i % 3], "painting": None} for i in range(45)]
    subjects(sandbox, truth)
    crowd = CrowdConfig(n_volunteers=80, mix={"careless": 1}, profiles={"careless": profile})
    made = sandbox.run_volunteers(crowd=crowd).classifications
    simulated = SimulatedCrowd(n_volunteers=2000, mix={"careless": (1.0, profile)}, seed=2)
    present = np.zeros((45, 4), dtype=bool)
    present[:, [0, 2]] = True  # painting (size unknown) and map
    scale = np.full((45, 4), np.nan)
    scale[:, 2] = [sizes[i % 3] for i in range(45)]
    item, _, theirs = simulated.classify(present, np.arange(45), 200, scale=scale)
    for k, size in enumerate(sizes):
        ours = [2 in ticks(c) for c in made if (c.subject_ids[0] - 100001) % 3 == k]
        rate = float(theirs[item % 3 == k, 2].mean())
        assert len(ours) == 80 * 15 and abs(sum(ours) / len(ours) - rate) < 0.06, (size, rate)
    for answer, expected in ((0, profile.sensitivity), (1, profile.false_positive)):
        ours_rate = sum(answer in ticks(c) for c in made) / len(made)
        theirs_rate = float(theirs[:, answer].mean())
        assert abs(ours_rate - expected) < 0.03 and abs(theirs_rate - expected) < 0.01


def test_each_volunteer_keeps_their_own_eyesight_around_one() -> None:
    factors = [eyesight(f"volunteer-{i:03d}") for i in range(400)]
    assert factors[:5] == [eyesight(f"volunteer-{i:03d}") for i in range(5)]
    assert abs(float(np.median(factors)) - 1.0) < 0.05
    assert 0.2 < float(np.std(np.log(factors))) < 0.3  # sigma 0.25, as ml.simulation draws


# ------------------------------------------------------------------------------ the answers


def test_careless_volunteers_of_the_hard_crowd_miss_small_objects_far_more_often_than_big_ones(
    everyone_sees_everything: tuple[Sandbox, list[ClassificationRecord]],
) -> None:
    _, classifications = everyone_sees_everything
    map_index = VOCABULARY.index("map")
    missed: dict[tuple[str, float], list[bool]] = {}
    for c in classifications:
        size = SMALL if (c.subject_ids[0] - 100001) % 2 else BIG
        missed.setdefault((c.profile, size), []).append(map_index not in ticks(c))
    rate = {key: sum(flags) / len(flags) for key, flags in missed.items()}
    assert len(missed[("careless", SMALL)]) >= 200
    # seen with 0.1**4 / (0.1**4 + 0.18**4) = 0.09, then ticked with 0.85: about 0.93 missed
    assert rate[("careless", SMALL)] > 0.8
    assert rate[("careless", BIG)] < 0.3  # 0.4 is seen 96% of the time: about 0.18 missed
    assert rate[("careless", SMALL)] > 3 * rate[("careless", BIG)]
    # careful volunteers lose only the smallest objects: half at 0.08, fewer at 0.1
    assert rate[("careful", SMALL)] < rate[("careless", SMALL)] - 0.3
    assert rate[("careful", BIG)] < 0.15


def test_an_object_of_unknown_size_is_seen_by_the_hard_crowd(
    everyone_sees_everything: tuple[Sandbox, list[ClassificationRecord]],
) -> None:
    _, classifications = everyone_sees_everything
    careless = [c for c in classifications if c.profile == "careless"]
    painted = sum(VOCABULARY.index("painting") in ticks(c) for c in careless) / len(careless)
    assert 0.78 < painted < 0.92  # the profile's sensitivity, 0.85


def test_spammers_of_the_hard_crowd_tick_each_answer_at_random_whatever_the_subject_shows(
    everyone_sees_everything: tuple[Sandbox, list[ClassificationRecord]],
) -> None:
    _, classifications = everyone_sees_everything
    spam = [c for c in classifications if c.profile == "spammer"]
    assert len(spam) >= 100
    for answer in range(len(VOCABULARY)):  # two answers always true, two never, small or big
        share = sum(answer in ticks(c) for c in spam) / len(spam)
        assert 0.4 < share < 0.6, (answer, share)
    small = [c for c in spam if (c.subject_ids[0] - 100001) % 2]
    big = [c for c in spam if not (c.subject_ids[0] - 100001) % 2]
    map_index = VOCABULARY.index("map")
    small_share = sum(map_index in ticks(c) for c in small) / len(small)
    big_share = sum(map_index in ticks(c) for c in big) / len(big)
    assert abs(small_share - big_share) < 0.15  # size means nothing to a spammer


def test_the_default_crowd_answers_the_same_whether_or_not_the_truth_gives_sizes() -> None:
    def answers(truth: list[object]) -> list[tuple[str, list[int], object]]:
        sandbox = Sandbox(VOCABULARY, keys=KEYS, retirement_count=4)
        subjects(sandbox, truth)
        run = sandbox.run_volunteers(
            crowd=CrowdConfig(n_volunteers=9, repeat_rate=0.1, gold_share=0.2, seed=8)
        )
        return [
            (c.user_name, c.subject_ids, c.annotations[0]["value"]) for c in run.classifications
        ]

    plain = answers([["map", "painting"], ["drawing"], []] * 5)
    sized = answers([{"map": 0.05, "painting": 0.5}, {"drawing": 0.01}, {}] * 5)
    assert plain == sized and len(plain) > 60  # 15 subjects x 4, repeats and gold


def test_a_single_answer_volunteer_of_the_hard_crowd_misses_a_small_object_too() -> None:
    def hits(size: float) -> float:
        sandbox = Sandbox(VOCABULARY, keys=KEYS, task_type="single")
        sandbox.set_retirement(sandbox.workflow_id, None)
        subjects(sandbox, [{"map": size}] * 20)
        crowd = replace(
            CrowdConfig.for_scenario("hard", n_volunteers=20, seed=2), mix={"careless": 1}
        )
        run = sandbox.run_volunteers(crowd=crowd)
        return sum(c.annotations[0]["value"] == 2 for c in run.classifications) / 400

    assert hits(SMALL) < 0.2 < 0.7 < hits(BIG)


# ------------------------------------------------------------------------------ votes


def test_subjects_get_one_to_three_classifications_from_the_hard_crowd_then_retire() -> None:
    sandbox = Sandbox(VOCABULARY, keys=KEYS, retirement_count=5)  # the demo's --votes
    ids = subjects(sandbox, [{"map": BIG}] * 60)
    crowd = CrowdConfig.for_scenario("hard", n_volunteers=40, repeat_rate=0.05, seed=7)
    run = sandbox.run_volunteers(crowd=crowd)
    counted = {sid: sandbox.status(sid).classifications_count for sid in ids}
    assert set(counted.values()) == {1, 2, 3}
    assert min(Counter(counted.values()).values()) >= 10  # uniform: about 20 each
    for sid, n in counted.items():
        assert n == crowd.votes_for(sandbox.workflow_id, sid)
        status = sandbox.status(sid)
        assert status.retired_at is not None
        assert status.retirement_reason == "classification_count"
    assert sorted(run.retired_subject_ids) == ids
    summary = run.summary()["subjects_by_votes"]
    assert summary == {str(n): k for n, k in sorted(Counter(counted.values()).items())}
    # Retired: the crowd has moved on, as it would on Zooniverse.
    assert sandbox.run_volunteers(crowd=crowd).classifications == []


def test_the_workflows_retirement_count_still_caps_the_hard_crowds_votes() -> None:
    sandbox = Sandbox(VOCABULARY, keys=KEYS, retirement_count=2)
    subjects(sandbox, [["map"]] * 30)
    run = sandbox.run_volunteers(crowd=CrowdConfig.for_scenario("hard", seed=1))
    assert set(votes_per_subject(run.classifications).values()) == {1, 2}


def test_a_subject_the_app_unretires_gets_one_more_vote_as_after_a_count_retirement() -> None:
    sandbox = Sandbox(VOCABULARY, keys=KEYS, retirement_count=5)
    ids = subjects(sandbox, [["map"]] * 12)
    crowd = CrowdConfig.for_scenario("hard", n_volunteers=20, seed=3)
    first = votes_per_subject(sandbox.run_volunteers(crowd=crowd).classifications)
    sandbox.unretire(sandbox.workflow_id, ids[:4])
    again = sandbox.run_volunteers(crowd=crowd)
    assert votes_per_subject(again.classifications) == {sid: 1 for sid in ids[:4]}
    assert all(sandbox.status(sid).classifications_count == first[sid] + 1 for sid in ids[:4])
    assert sorted(again.retired_subject_ids) == ids[:4]


def test_a_subject_gets_the_same_number_of_votes_from_any_crowd_with_the_same_range() -> None:
    one = CrowdConfig(seed=1, votes_per_subject=(1, 3))
    other = CrowdConfig(seed=99, n_volunteers=3, votes_per_subject=[1, 3])  # type: ignore[arg-type]
    drawn = [one.votes_for(1, sid) for sid in range(100001, 100301)]
    assert drawn == [other.votes_for(1, sid) for sid in range(100001, 100301)]
    assert set(drawn) == {1, 2, 3}
    assert CrowdConfig(seed=1).votes_for(1, 100001) is None
    for bad in ([0, 2], [3, 1], [1, 2, 3], "1-3", [1.5, 2]):
        with pytest.raises(ValueError, match="votes_per_subject"):
            CrowdConfig(votes_per_subject=bad)  # type: ignore[arg-type]


class _FakeTime:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.moment = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        with self._lock:
            return self.moment

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.moment += timedelta(seconds=seconds)
        time.sleep(0.001)


def test_the_live_hard_crowd_gives_each_subject_its_drawn_votes_and_goes_idle() -> None:
    clock = _FakeTime()
    sandbox = Sandbox(VOCABULARY, keys=KEYS, retirement_count=5, clock=clock.now, sleep=clock.sleep)
    ids = subjects(sandbox, [{"map": SMALL}] * 15)
    crowd = CrowdConfig.for_scenario("hard", n_volunteers=10, seed=11)
    try:
        sandbox.live_crowd_start(per_minute=60, crowd=crowd)
        deadline = time.monotonic() + 15
        while sandbox.live_crowd_status()["retired"] < len(ids):
            assert time.monotonic() < deadline, sandbox.live_crowd_status()
            time.sleep(0.01)
    finally:
        sandbox.live_crowd_stop()
    made = votes_per_subject(sandbox.classifications())
    assert made == {sid: crowd.votes_for(sandbox.workflow_id, sid) for sid in ids}
    assert set(made.values()) <= {1, 2, 3} and len(set(made.values())) > 1


# ------------------------------------------------------------------------------ JSON and HTTP


def test_the_hard_crowd_goes_over_json_and_comes_back_the_same() -> None:
    crowd = CrowdConfig.for_scenario("hard", n_volunteers=40, seed=7, gold_share=0.02)
    data = json.loads(json.dumps(crowd.to_json()))
    assert data["votes_per_subject"] == [1, 3]
    assert set(data["profiles"]) == {"careful", "careless", "spammer"}
    assert CrowdConfig.from_json(data) == crowd
    assert "profiles" not in CrowdConfig(seed=2).to_json()
    assert CrowdConfig.from_json(CrowdConfig(seed=2).to_json()) == CrowdConfig(seed=2)


def test_a_profile_sent_in_part_keeps_the_rest_of_the_sandboxs_profile_of_that_name() -> None:
    crowd = CrowdConfig.from_json(
        {
            "mix": {"careless": 1, "sloppy": 1},
            "profiles": {
                "careless": {"half_seen_scale": 0.18},
                "sloppy": {"sensitivity": 0.6, "false_positive": 0.1},
            },
        }
    )
    assert crowd.profiles["careless"] == replace(PROFILES["careless"], half_seen_scale=0.18)
    assert crowd.profiles["sloppy"] == CrowdProfile(0.6, 0.1)
    assert crowd.profiles["careful"] == PROFILES["careful"]


def test_a_profile_given_with_the_older_field_names_reads_as_the_same_profile() -> None:
    crowd = CrowdConfig.from_json(
        {
            "profiles": {
                "sloppy": {"sensitivity": 0.6, "false_positive_rate": 0.1},
                "noisy": {"sensitivity": 0.0, "false_positive_rate": 0.3, "ignores_truth": True},
                "spammer": {"false_positive_rate": 0.2},  # a spammer stays one
                "careless": {"ignores_truth": False, "half_seen_scale": 0.1},
            }
        }
    )
    assert crowd.profiles["sloppy"] == CrowdProfile(0.6, 0.1)
    assert crowd.profiles["noisy"] == CrowdProfile(0.3, 0.3)
    assert crowd.profiles["spammer"] == CrowdProfile(0.2, 0.2)
    assert crowd.profiles["careless"] == replace(PROFILES["careless"], half_seen_scale=0.1)
    assert crowd.to_json()["profiles"]["sloppy"] == {
        "sensitivity": 0.6,
        "false_positive": 0.1,
        "half_seen_scale": 0.0,
        "size_steepness": 4.0,
    }
    assert CrowdConfig.from_json(crowd.to_json()) == crowd


@pytest.mark.parametrize(
    ("profile", "problem"),
    [
        ({"false_positive": 0.1, "false_positive_rate": 0.1}, "not both"),
        ({"ignores_truth": "yes"}, "ignores_truth must be true or false"),
        ({"false_positive": 0.1, "sensitivity": 0.1, "ignores_truth": False}, "is false"),
        ({"size_steepness": 0}, "size_steepness must be above 0"),
        ({"half_seen_scale": -1}, "half_seen_scale must be >= 0"),
        ({"sensitivity": True}, "sensitivity must be a number"),
    ],
)
def test_a_bad_profile_is_refused_with_its_name_and_field(
    profile: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValueError, match=f"profile 'careless'.*{problem}"):
        CrowdConfig.from_json({"profiles": {"careless": profile}})


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    sandbox = Sandbox(VOCABULARY, keys=KEYS, retirement_count=5)
    server, thread = serve("127.0.0.1", 0, sandbox=sandbox)
    yield server
    sandbox.live_crowd_stop()
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_the_admin_routes_take_the_hard_crowd_and_truth_with_sizes(server: SandboxServer) -> None:
    sandbox = server.sandbox
    ids = subjects(sandbox, [[]] * 20)
    truth = {f"s-{i}": {"map": SMALL, "drawing": BIG} for i in range(20)}
    crowd = CrowdConfig.for_scenario("hard", n_volunteers=12, seed=5).to_json()
    response = requests.post(
        server.endpoint + "/_sandbox/volunteers",
        json={"workflow_id": 1, "crowd": crowd, "truth": truth},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["subjects_by_votes"]) == {"1", "2", "3"}
    assert sum(int(n) * k for n, k in body["subjects_by_votes"].items()) == len(
        body["classification_ids"]
    )
    assert sorted(body["retired_subject_ids"]) == ids
    careless = [c for c in sandbox.classifications() if c.profile == "careless"]
    drew, mapped = (sum(i in ticks(c) for c in careless) for i in (1, 2))  # big, small
    assert len(careless) >= 5 and drew > 3 * mapped

    later = subjects(sandbox, [[]] * 10, name="t")
    truth.update({f"t-{i}": {"map": SMALL} for i in range(10)})
    live = requests.post(
        server.endpoint + "/_sandbox/live",
        json={"per_minute": 6000, "crowd": crowd, "truth": truth, "workflow_id": 1},
        timeout=10,
    )
    assert live.status_code == 200, live.text
    deadline = time.monotonic() + 20
    while sandbox.live_crowd_status()["retired"] < len(later):
        assert time.monotonic() < deadline, sandbox.live_crowd_status()
        time.sleep(0.02)
    sandbox.live_crowd_stop()
    votes = votes_per_subject([c for c in sandbox.classifications() if c.subject_ids[0] in later])
    assert votes == {sid: CrowdConfig.from_json(crowd).votes_for(1, sid) for sid in later}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"crowd": {"profiles": {"careless": {"sensitivity": 1.5}}}}, "sensitivity"),
        ({"crowd": {"profiles": {"careless": {"eyes": 2}}}}, "unknown fields"),
        ({"crowd": {"profiles": ["careless"]}}, "profiles must be an object"),
        ({"crowd": {"profiles": {"sloppy": {"sensitivity": 0.5}}}}, "needs false_positive"),
        ({"crowd": {"votes_per_subject": [0, 3]}}, "votes_per_subject"),
        ({"truth": {"s-0": {"map": -0.1}}}, "size of 'map'"),
        ({"truth": {"s-0": {"map": "small"}}}, "size of 'map'"),
    ],
)
def test_the_admin_routes_refuse_a_bad_crowd_or_size(
    server: SandboxServer, body: dict[str, object], problem: str
) -> None:
    for route, extra in (("volunteers", {}), ("live", {"per_minute": 6})):
        response = requests.post(
            f"{server.endpoint}/_sandbox/{route}", json={**body, **extra}, timeout=10
        )
        assert response.status_code == 422, (route, response.text)
        assert problem in response.text, (route, response.text)


# ------------------------------------------------------------------------------ the command


@pytest.mark.django_db
def test_the_command_starts_the_hard_live_crowd_with_a_truth_file_with_sizes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from annotate.management.commands import zooniverse_sandbox as command
    from annotate.models import Concept

    Concept.objects.create(key="painting", label="Painting", position=1)
    Concept.objects.create(key="map", label="Map", position=2)
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"item-1": {"map": 0.12, "painting": None}, "item-2": ["map"]}))
    started: list[dict[str, object]] = []
    monkeypatch.setattr(Sandbox, "live_crowd_start", lambda self, **kw: started.append(kw))
    monkeypatch.setattr(command, "wait_until_interrupted", lambda server, thread: None)
    out = io.StringIO()
    call_command(
        "zooniverse_sandbox", "--port=0", "--volunteers-per-minute=6", f"--truth={truth}",
        "--crowd=hard", "--crowd-seed=5", "--crowd-size=8", stdout=out,
    )  # fmt: skip
    (kwargs,) = started
    assert kwargs["crowd"] == CrowdConfig.for_scenario("hard", n_volunteers=8, seed=5)
    assert kwargs["truth"] == {"item-1": {"map": 0.12, "painting": None}, "item-2": ["map"]}
    assert "8 volunteers of the hard scenario's crowd (seed 5" in out.getvalue()


@pytest.mark.parametrize("entry", [{"map": -1}, {"map": "big"}, {"map": True}, {"map": [0.1]}])
def test_the_command_refuses_a_truth_file_with_a_bad_size(tmp_path: Path, entry: object) -> None:
    path = tmp_path / "truth.json"
    path.write_text(json.dumps({"item-1": entry}))
    with pytest.raises(CommandError, match="sizes >= 0 or null"):
        call_command(
            "zooniverse_sandbox", "--port=0", "--volunteers-per-minute=5", f"--truth={path}"
        )
