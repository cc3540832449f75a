"""``ml.crowd``: the one volunteer model, its profiles, and the vectorised crowd drawn from it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml.crowd import (
    DEFAULT_CROWD,
    DEFAULT_MIX,
    EYESIGHT_SIGMA,
    PROFILES,
    CrowdProfile,
    SimulatedCrowd,
    seen_probability,
    tick_probability,
)

HARD_CARELESS = CrowdProfile(0.85, 0.06, half_seen_scale=0.18, size_steepness=3.0)


# ------------------------------------------------------------------------------ the profile


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"sensitivity": 1.5}, "sensitivity must be in [0, 1], got 1.5"),
        ({"false_positive": -0.1}, "false_positive must be in [0, 1], got -0.1"),
        ({"sensitivity": float("nan")}, "sensitivity must be in [0, 1]"),
        ({"sensitivity": "high"}, "sensitivity must be a number, got 'high'"),
        ({"false_positive": True}, "false_positive must be a number, got True"),
        ({"half_seen_scale": -0.2}, "half_seen_scale must be >= 0, got -0.2"),
        ({"half_seen_scale": math.inf}, "half_seen_scale must be >= 0"),
        ({"size_steepness": 0}, "size_steepness must be above 0, got 0.0"),
        ({"size_steepness": None}, "size_steepness must be a number, got None"),
    ],
)
def test_a_bad_profile_is_refused_with_the_field_named(
    fields: dict[str, object], problem: str
) -> None:
    values: dict[str, object] = {"sensitivity": 0.9, "false_positive": 0.05, **fields}
    with pytest.raises(ValueError) as raised:
        CrowdProfile(**values)  # type: ignore[arg-type]
    assert str(raised.value) == problem or str(raised.value).startswith(problem)


def test_a_profile_holds_floats_whatever_numbers_it_was_given() -> None:
    profile = CrowdProfile(1, 0, half_seen_scale=np.float32(0.25), size_steepness=3)
    assert profile == CrowdProfile(1.0, 0.0, half_seen_scale=0.25, size_steepness=3.0)
    assert all(type(v) is float for v in vars(profile).values())


def test_a_profile_whose_two_rates_are_equal_ignores_the_subject() -> None:
    assert PROFILES["spammer"].ignores_subject
    assert CrowdProfile(0.5, 0.5, half_seen_scale=0.3).ignores_subject
    assert not any(PROFILES[n].ignores_subject for n in ("careful", "careless", "expert"))
    spammer = CrowdProfile(0.5, 0.5, half_seen_scale=0.3)
    assert spammer.seen_probability(0.01) == 1.0  # size means nothing to it
    assert spammer.tick_probability(True, seen=0.1) == spammer.tick_probability(False) == 0.5


def test_the_named_profiles_and_the_default_crowd_are_said_once() -> None:
    assert DEFAULT_MIX == {"careful": 0.6, "careless": 0.3, "spammer": 0.1}
    assert math.isclose(sum(DEFAULT_MIX.values()), 1.0)
    for name, (share, profile) in DEFAULT_CROWD.items():
        assert share == DEFAULT_MIX[name] and profile is PROFILES[name]
    assert (PROFILES["careful"].sensitivity, PROFILES["careful"].false_positive) == (0.95, 0.01)
    assert (PROFILES["careless"].sensitivity, PROFILES["careless"].false_positive) == (0.7, 0.08)
    assert PROFILES["spammer"] == CrowdProfile(0.15, 0.15)
    assert PROFILES["expert"] == CrowdProfile(1.0, 0.0)
    assert EYESIGHT_SIGMA == 0.25


# ------------------------------------------------------------------------------ the rules


def test_half_the_objects_at_the_half_seen_scale_are_seen_fewer_smaller_more_bigger() -> None:
    assert seen_probability(0.18, 0.18, 3.0) == pytest.approx(0.5)
    sizes = [0.02, 0.08, 0.12, 0.18, 0.25, 0.45, 0.9]
    seen = [seen_probability(s, 0.18, 3.0) for s in sizes]
    assert seen == sorted(seen) and seen[0] < 0.01 and seen[-1] > 0.99
    assert seen_probability(0.1, 0.18, 3.0) == pytest.approx(0.1**3 / (0.1**3 + 0.18**3))


@pytest.mark.parametrize(("scale", "half_seen"), [(None, 0.18), (math.nan, 0.18), (0.01, 0.0)])
def test_an_object_of_unknown_size_or_a_volunteer_who_sees_all_sees_it(
    scale: float | None, half_seen: float
) -> None:
    assert seen_probability(scale, half_seen, 4.0) == 1.0


def test_the_rules_give_the_same_numbers_for_one_answer_and_for_arrays() -> None:
    scales = np.array([[0.05, np.nan], [0.18, 0.4]])
    half = np.array([[0.18], [0.0]])
    arrays = seen_probability(scales, half, 3.0)
    assert isinstance(arrays, np.ndarray) and arrays.shape == (2, 2)
    one_by_one = [
        [seen_probability(float(scales[i, j]), float(half[i, 0]), 3.0) for j in range(2)]
        for i in range(2)
    ]
    np.testing.assert_allclose(arrays, one_by_one, rtol=1e-12)
    assert list(arrays[1]) == [1.0, 1.0] and arrays[0, 1] == 1.0
    present = np.array([[True, False], [True, True]])
    ticks = tick_probability(present, 0.85, 0.06, seen=arrays)
    expected = [
        [
            tick_probability(bool(present[i, j]), 0.85, 0.06, seen=float(arrays[i, j]))
            for j in (0, 1)
        ]
        for i in (0, 1)
    ]
    np.testing.assert_allclose(ticks, expected, rtol=1e-12)
    assert tick_probability(False, 0.85, 0.06, seen=0.0) == 0.06


def test_a_profiles_tick_chances_are_the_vectorised_crowds_for_the_same_eyes_and_sizes() -> None:
    crowd = SimulatedCrowd(n_volunteers=1, mix={"careless": (1.0, HARD_CARELESS)}, seed=0)
    eyes = crowd.half_seen[0] / HARD_CARELESS.half_seen_scale  # the volunteer's eyesight factor
    scales = np.array([0.02, 0.08, 0.12, 0.18, 0.25, 0.45, np.nan])
    workers = np.zeros(len(scales), dtype=int)
    seen = crowd.seen_probability(scales[:, None], workers)
    present = np.ones((len(scales), 1), dtype=bool)
    sensitivity, false_positive = (
        crowd.sensitivity[workers, None],
        crowd.false_positive[workers, None],
    )
    theirs = np.asarray(tick_probability(present, sensitivity, false_positive, seen=seen))[:, 0]
    ours = [
        HARD_CARELESS.tick_probability(True, HARD_CARELESS.seen_probability(float(s), eyes))
        for s in scales
    ]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert ours[-1] == HARD_CARELESS.sensitivity  # unknown size: seen


# ------------------------------------------------------------------------------ the crowd


def test_the_vectorised_crowd_draws_profiles_by_share_and_eyesight_with_the_sigma() -> None:
    crowd = SimulatedCrowd(n_volunteers=4000, seed=3)
    for name, share in DEFAULT_MIX.items():
        assert abs(np.mean(crowd.kind == name) - share) < 0.03
        mine = crowd.kind == name
        assert set(crowd.sensitivity[mine]) == {PROFILES[name].sensitivity}
    assert not crowd.half_seen.any()  # the default crowd sees every object
    hard = SimulatedCrowd(n_volunteers=4000, mix={"c": (1.0, HARD_CARELESS)}, seed=3)
    factors = hard.half_seen / HARD_CARELESS.half_seen_scale
    assert abs(float(np.std(np.log(factors))) - EYESIGHT_SIGMA) < 0.02
    assert math.isclose(hard.activity.sum(), 1.0) and hard.activity.max() > 20 / 4000


def test_the_vectorised_crowd_ticks_at_the_profiles_rates_and_the_same_seed_repeats() -> None:
    truth = np.zeros((2000, 4), dtype=bool)
    truth[:, :2] = True
    crowd = SimulatedCrowd(n_volunteers=50, mix={"careless": (1.0, PROFILES["careless"])}, seed=1)
    items, workers, ticks = crowd.classify(truth, np.arange(2000), 3)
    assert len(items) == len(workers) == 6000 and ticks.dtype == np.uint8
    assert abs(ticks[:, :2].mean() - 0.7) < 0.02 and abs(ticks[:, 2:].mean() - 0.08) < 0.01
    again = SimulatedCrowd(n_volunteers=50, mix={"careless": (1.0, PROFILES["careless"])}, seed=1)
    repeated = again.classify(truth, np.arange(2000), 3)
    assert all(np.array_equal(a, b) for a, b in zip(repeated, (items, workers, ticks), strict=True))
