"""Who classifies in the simulated crowd: the crowd's configuration, and its profiles as JSON.

The volunteers are ``ml.crowd``'s: ``CrowdProfile`` (a kind of volunteer), ``PROFILES`` (careful,
careless, spammer, expert), the default mix and the eyesight sigma, so that the sandbox's crowd
answers as the benches' simulated one does. Over JSON a profile is an object of its fields,
``sensitivity``, ``false_positive``, ``half_seen_scale`` and ``size_steepness``; the older names
are still read: ``false_positive_rate`` for ``false_positive``, and ``ignores_truth: true`` for a
volunteer who ticks every answer at the false-positive rate (``sensitivity`` set to
``false_positive``, whatever ``sensitivity`` says).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ml.crowd import DEFAULT_MIX, EYESIGHT_SIGMA, PROFILES, CrowdProfile

#: JSON field names read for ``CrowdProfile`` fields besides their own.
_OLD_NAMES = {"false_positive_rate": "false_positive"}


def profile_from_json(name: str, data: Any) -> CrowdProfile:
    """A profile from its JSON fields; for a name ``PROFILES`` knows, the fields left out keep
    that profile's (``{"careless": {"half_seen_scale": 0.18}}``; a spammer given only another
    ``false_positive`` still ignores the subject). Errors name the profile and the field."""
    if not isinstance(data, dict):
        raise ValueError(f"profile {name!r} must be an object of CrowdProfile fields")
    own = {f.name for f in fields(CrowdProfile)}
    allowed = own | set(_OLD_NAMES) | {"ignores_truth"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed))
        raise ValueError(f"profile {name!r}: unknown fields {unknown}; known: {known}")
    values = {k: v for k, v in data.items() if k in own}
    for old, new in _OLD_NAMES.items():
        if old in data:
            if new in data:
                raise ValueError(f"profile {name!r}: give {new} or {old}, not both")
            values[new] = data[old]
    ignores = data.get("ignores_truth")
    if ignores is not None and not isinstance(ignores, bool):
        raise ValueError(f"profile {name!r}: ignores_truth must be true or false")
    base = PROFILES.get(name)
    if base is None:
        needed = ("false_positive",) if ignores else ("sensitivity", "false_positive")
        missing = [f for f in needed if f not in values]
        if missing:
            raise ValueError(f"profile {name!r} is new: it needs {' and '.join(missing)}")
    elif ignores is None and "sensitivity" not in values:
        ignores = base.ignores_subject or None  # a spammer given another rate stays a spammer
    if ignores:  # every answer at false_positive: a sensitivity given is not used, as before
        values["sensitivity"] = values.get("false_positive", base.false_positive if base else 0)
    try:
        profile = replace(base, **values) if base is not None else CrowdProfile(**values)
    except ValueError as error:
        raise ValueError(f"profile {name!r}: {error}") from None
    if ignores is False and profile.ignores_subject:
        raise ValueError(
            f"profile {name!r}: ignores_truth is false, but sensitivity equals false_positive"
        )
    return profile


def profile_to_json(profile: CrowdProfile) -> dict[str, Any]:
    """The profile's fields, as ``profile_from_json`` reads them."""
    return asdict(profile)


def eyesight(volunteer_name: str) -> float:
    """A volunteer's own factor on their profile's half-seen scale: log-normal, median 1, sigma
    ``ml.crowd.EYESIGHT_SIGMA``, drawn from their name, so the same volunteer keeps it across
    runs, restarts and live crowds."""
    return random.Random(f"eyesight:{volunteer_name}").lognormvariate(0.0, EYESIGHT_SIGMA)


@dataclass
class CrowdConfig:
    """Who classifies. Same config and seed on the same store give the same classifications.

    Volunteers are named ``<name_prefix><index>`` (or ``not-logged-in-<hash>``) and remembered
    by the store: a later run with the same prefix meets the same people, keeps their profiles
    and does not show them subjects they have already classified. Use another prefix for a new
    crowd.

    ``mix`` weighs profile names (default ``ml.crowd.DEFAULT_MIX``); ``profiles`` maps them to
    ``ml.crowd.CrowdProfile`` (default ``ml.crowd.PROFILES``); over JSON, ``{"careless":
    {"sensitivity": 0.85, "false_positive": 0.06, "half_seen_scale": 0.18}}`` replaces or adds
    profiles, the others keep ``PROFILES``. ``votes_per_subject`` ``(low, high)``: each
    subject gets a number of votes drawn uniformly from low..high, then retires (see
    ``Sandbox.run_volunteers``); None: the workflow's retirement count alone decides.
    ``for_scenario("hard")`` is the crowd of ``ml.scenarios``' hard scenario.
    """

    n_volunteers: int = 20
    # Profile name -> weight; counts are split by largest remainder, then shuffled by the seed.
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    anonymous_share: float = 0.2  # share of volunteers who are not logged in
    repeat_rate: float = 0.0  # chance a turn re-classifies a subject the volunteer already saw
    gold_share: float = (
        0.0  # share of linked subjects that get one expert gold-standard classification
    )
    seed: int = 0
    name_prefix: str = "volunteer-"
    profiles: dict[str, CrowdProfile] = field(default_factory=lambda: dict(PROFILES))
    votes_per_subject: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        votes = self.votes_per_subject
        if votes is None:
            return
        if isinstance(votes, int) and not isinstance(votes, bool):
            votes = (votes, votes)
        if (
            not isinstance(votes, list | tuple)
            or len(votes) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in votes)
            or not 1 <= votes[0] <= votes[1]
        ):
            raise ValueError(
                f"votes_per_subject must be [low, high] with 1 <= low <= high, got {votes!r}"
            )
        self.votes_per_subject = (votes[0], votes[1])

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CrowdConfig:
        allowed = {f.name for f in fields(cls)} - {"profiles"}
        config = {k: v for k, v in data.items() if k in allowed}
        profiles = data.get("profiles")
        if profiles is not None:
            if not isinstance(profiles, dict):
                raise ValueError("profiles must be an object {name: {CrowdProfile fields}}")
            config["profiles"] = {
                **PROFILES,
                **{str(n): profile_from_json(str(n), p) for n, p in profiles.items()},
            }
        return cls(**config)

    def to_json(self) -> dict[str, Any]:
        """The fields as ``from_json`` reads them; only profiles other than ``PROFILES``."""
        data: dict[str, Any] = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("profiles", "votes_per_subject")
        }
        data["mix"] = dict(self.mix)
        profiles = {n: profile_to_json(p) for n, p in self.profiles.items() if PROFILES.get(n) != p}
        if profiles:
            data["profiles"] = profiles
        if self.votes_per_subject is not None:
            data["votes_per_subject"] = list(self.votes_per_subject)
        return data

    @classmethod
    def for_scenario(cls, name: str, **config: Any) -> CrowdConfig:
        """The crowd of ``ml.scenarios``' scenario ``name``: "easy" is the default crowd
        (``ml.crowd.DEFAULT_CROWD``), "hard" is ``ml.scenarios.HARD_CROWD`` with ``HARD_VOTES``
        (careful and careless volunteers who miss small objects, 15% spammers, one to three votes
        per subject). ``config``: the other fields (n_volunteers, seed, ...)."""
        if name == "easy":
            # ml.scenarios' easy crowd is the default one (no mix, no votes range), with no
            # need to import ml.scenarios (PIL, and scikit-learn's digits for its pools).
            return cls(**config)
        from ml.scenarios import scenario_crowd

        scenario = scenario_crowd(name)
        if scenario.mix is None:
            return cls(votes_per_subject=scenario.votes, **config)
        return cls(
            mix={n: share for n, (share, _) in scenario.mix.items()},
            profiles={**PROFILES, **{n: profile for n, (_, profile) in scenario.mix.items()}},
            votes_per_subject=scenario.votes,
            **config,
        )

    def votes_for(self, workflow_id: int, subject_id: int) -> int | None:
        """The votes the crowd gives a subject before it retires (None: no limit of its own).

        Drawn from the workflow and subject ids alone, so every crowd with the same range (the
        scripted rounds' and the live one) agrees on a subject's number."""
        if self.votes_per_subject is None:
            return None
        low, high = self.votes_per_subject
        return random.Random(f"votes:{workflow_id}:{subject_id}").randint(low, high)
