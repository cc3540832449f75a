"""The simulated volunteers: one model of how a volunteer ticks, for every simulated crowd.

A volunteer has a :class:`CrowdProfile`. On an object whose side is ``s`` (a share of the image
side) they tick a present concept with ``sensitivity * seen_probability(s)`` and an absent one with
``false_positive``; a profile whose ``sensitivity`` equals its ``false_positive`` ignores the
subject (a spammer: every answer ticked at that rate, whatever the image shows, small or big).
Each volunteer's own half-seen scale is their profile's times a log-normal eyesight factor
(sigma :data:`EYESIGHT_SIGMA`). :data:`PROFILES` names the kinds, :data:`DEFAULT_MIX` is the
default crowd's shares and :data:`DEFAULT_CROWD` both together.

The benches' vectorised crowd (:class:`SimulatedCrowd`, used by ``ml.simulation``, the product's
``simulate_active_learning`` and ``bench/load_data.py``) and the Zooniverse sandbox's volunteers
(one answer at a time) draw with these rules. Pure numpy: importing this module imports no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from numbers import Real
from typing import TypeVar

import numpy as np

#: How much volunteers' eyes differ within a profile: each volunteer's half-seen scale is the
#: profile's times a log-normal factor (median 1) with this sigma.
EYESIGHT_SIGMA = 0.25

#: Shape of the Pareto law of the vectorised crowd's activity: a few volunteers do most work.
ACTIVITY_SHAPE = 1.2


@dataclass(frozen=True)
class CrowdProfile:
    """A kind of volunteer: chance of ticking a present concept, and an absent one.

    With ``half_seen_scale`` > 0 the volunteer also misses small objects: an object whose side
    is ``s`` (a share of the image side) is seen with probability
    ``s**k / (s**k + half_seen_scale**k)``, ``k`` = ``size_steepness``, so half of the objects
    of side ``half_seen_scale`` are missed, fewer of the bigger ones and more of the smaller
    ones; a seen object is ticked with ``sensitivity``, an unseen one never. An object of unknown
    size is seen. A profile whose ``sensitivity`` equals its ``false_positive`` ignores the
    subject: it ticks every answer with that rate and size means nothing to it.
    """

    sensitivity: float
    false_positive: float
    half_seen_scale: float = 0.0
    size_steepness: float = 4.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, Real):
                raise ValueError(f"{f.name} must be a number, got {value!r}")
            object.__setattr__(self, f.name, float(value))
        for name in ("sensitivity", "false_positive"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if not (math.isfinite(self.half_seen_scale) and self.half_seen_scale >= 0):
            raise ValueError(f"half_seen_scale must be >= 0, got {self.half_seen_scale!r}")
        if not (math.isfinite(self.size_steepness) and self.size_steepness > 0):
            raise ValueError(f"size_steepness must be above 0, got {self.size_steepness!r}")

    @property
    def ignores_subject(self) -> bool:
        """Ticks a present concept as often as an absent one: answers whatever the image shows."""
        return self.sensitivity == self.false_positive

    def seen_probability(self, scale: float | None, eyesight: float = 1.0) -> float:
        """Chance to see an object of side ``scale`` (None or NaN: unknown size, seen), for a
        volunteer whose half-seen scale is the profile's times ``eyesight``."""
        if self.ignores_subject:
            return 1.0
        return float(seen_probability(scale, self.half_seen_scale * eyesight, self.size_steepness))

    def tick_probability(self, present: bool, seen: float = 1.0) -> float:
        """Chance to tick one answer, ``present`` in the subject or not and seen with ``seen``;
        ``false_positive`` whatever the subject shows when the profile ignores it."""
        present = present and not self.ignores_subject
        return float(tick_probability(present, self.sensitivity, self.false_positive, seen=seen))


#: The kinds of volunteer, by name; the sandbox's gold standard is the expert.
PROFILES: dict[str, CrowdProfile] = {
    "careful": CrowdProfile(0.95, 0.01),
    "careless": CrowdProfile(0.7, 0.08),
    "spammer": CrowdProfile(0.15, 0.15),  # ignores the subject: ticks each answer at 0.15
    "expert": CrowdProfile(1.0, 0.0),
}

#: The default crowd: profile name -> share of the volunteers.
DEFAULT_MIX: dict[str, float] = {"careful": 0.6, "careless": 0.3, "spammer": 0.1}

#: The default crowd as the vectorised crowd takes it: profile name -> (share, profile).
DEFAULT_CROWD: dict[str, tuple[float, CrowdProfile]] = {
    name: (share, PROFILES[name]) for name, share in DEFAULT_MIX.items()
}


_X = TypeVar("_X", float, np.ndarray)


def _seen(s: _X, h: _X, k: _X) -> _X:
    return s**k / (s**k + h**k)  # the rule, written once for one answer and for arrays


def seen_probability(
    scale: float | np.ndarray | None,
    half_seen: float | np.ndarray,
    steepness: float | np.ndarray = 4.0,
) -> float | np.ndarray:
    """Chance that a volunteer with half-seen scale ``half_seen`` sees an object of side ``scale``.

    ``s**k / (s**k + h**k)`` with ``k`` = ``steepness``; 1 where the size is unknown (None or
    NaN) or ``half_seen`` is 0 (a volunteer who sees every object). Numbers give a float (one
    answer: the sandbox's draw), arrays broadcast (the vectorised crowd).
    """
    if not any(isinstance(x, np.ndarray) for x in (scale, half_seen, steepness)):
        if scale is None or math.isnan(scale) or half_seen <= 0:
            return 1.0
        return _seen(float(scale), float(half_seen), float(steepness))
    sizes = np.asarray(scale, dtype=np.float64)
    h = np.asarray(half_seen, dtype=np.float64)
    k = np.asarray(steepness, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        seen = _seen(np.nan_to_num(sizes, nan=1.0), h, k)
    return np.where(np.isnan(sizes) | (h <= 0), 1.0, seen)


def tick_probability(
    present: bool | np.ndarray,
    sensitivity: float | np.ndarray,
    false_positive: float | np.ndarray,
    *,
    seen: float | np.ndarray = 1.0,
) -> float | np.ndarray:
    """Chance of a tick: ``sensitivity * seen`` on a present concept, ``false_positive`` on an
    absent one. Numbers give a float, arrays broadcast."""
    if not any(isinstance(x, np.ndarray) for x in (present, sensitivity, false_positive, seen)):
        return float(sensitivity * seen if present else false_positive)
    return np.where(present, np.multiply(sensitivity, seen), false_positive)


@dataclass
class SimulatedCrowd:
    """Volunteers with hidden skills and heavy-tailed activity, drawn vectorised.

    ``mix``: profile name -> (share, :class:`CrowdProfile`); each volunteer's profile is drawn by
    the shares, their activity from a Pareto law (:data:`ACTIVITY_SHAPE`), and, when a profile
    misses small objects, their eyesight factor. The same seed gives the same volunteers and
    votes.
    """

    n_volunteers: int = 200
    mix: dict[str, tuple[float, CrowdProfile]] = field(default_factory=lambda: dict(DEFAULT_CROWD))
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        names = list(self.mix)
        shares = np.array([self.mix[n][0] for n in names])
        kinds = rng.choice(len(names), size=self.n_volunteers, p=shares / shares.sum())
        profiles = [self.mix[names[k]][1] for k in kinds]
        self.kind = np.array(names)[kinds]  # each volunteer's profile name
        self.sensitivity = np.array([p.sensitivity for p in profiles])
        self.false_positive = np.array([p.false_positive for p in profiles])
        activity = rng.pareto(ACTIVITY_SHAPE, size=self.n_volunteers) + 1
        self.activity = activity / activity.sum()
        self.half_seen = np.array(
            [0.0 if p.ignores_subject else p.half_seen_scale for p in profiles]
        )
        self.steepness = np.array([p.size_steepness for p in profiles])
        if self.half_seen.any():  # drawn only then, so that a crowd without it keeps its votes
            self.half_seen = self.half_seen * rng.lognormal(
                0.0, EYESIGHT_SIGMA, size=self.n_volunteers
            )
        self.rng = rng

    def classify(
        self,
        truth: np.ndarray,
        items: np.ndarray,
        votes_each: int | tuple[int, int],
        *,
        scale: np.ndarray | None = None,
    ) -> tuple[np.ndarray, ...]:
        """Votes on ``items`` (indices into ``truth``): item, volunteer and tick arrays.

        Args:
            truth: (n, C) bool, the concepts present.
            items: indices into ``truth`` to vote on.
            votes_each: votes per item, or (low, high): each item gets low..high votes,
                uniformly.
            scale: (n, C) size of each present object (a share of the image side, NaN where
                absent or unknown), for the volunteers who miss small objects.
        """
        items = np.asarray(items)
        if isinstance(votes_each, tuple):
            low, high = votes_each
            item_idx = np.repeat(items, self.rng.integers(low, high + 1, size=len(items)))
        else:
            item_idx = np.repeat(items, votes_each)
        workers = self.rng.choice(self.n_volunteers, size=len(item_idx), p=self.activity)
        sizes = None if scale is None else scale[item_idx]
        ticks = self.ticks(truth[item_idx], workers, scale=sizes)
        return item_idx, workers, ticks.astype(np.uint8)

    def ticks(
        self, present: np.ndarray, workers: np.ndarray, *, scale: np.ndarray | None = None
    ) -> np.ndarray:
        """(V, C) bool: what each vote's volunteer ticks, given the concepts ``present`` (V, C)
        and, optionally, their sizes (V, C); one uniform draw per cell, so callers can draw
        a large crowd's votes chunk by chunk."""
        seen: float | np.ndarray = 1.0
        if scale is not None:
            seen = self.seen_probability(scale, workers)
        p_tick = tick_probability(
            present,
            self.sensitivity[workers, None],
            self.false_positive[workers, None],
            seen=seen,
        )
        return self.rng.random(present.shape) < p_tick

    def seen_probability(self, scale: np.ndarray, workers: np.ndarray) -> np.ndarray:
        """(V, C) chance that each vote's volunteer sees each object of size ``scale`` (V, C);
        1 where the size is unknown (NaN) or the volunteer's profile ignores size."""
        seen = seen_probability(scale, self.half_seen[workers, None], self.steepness[workers, None])
        return np.asarray(seen)
