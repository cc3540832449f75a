"""Who classifies in the simulated crowd: volunteer profiles and the crowd's configuration."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class VolunteerProfile:
    """How one kind of volunteer answers a multiple-answer task.

    ``sensitivity``: chance to tick an answer that is true for the subject (and that they see).
    ``false_positive_rate``: chance to tick an answer that is not.
    ``ignores_truth``: ticks every answer with ``false_positive_rate`` whatever the subject shows.
    ``half_seen_scale``: above 0, the volunteer misses small objects, as
    ``ml.simulation.CrowdProfile`` does: an object whose side is ``s`` (a share of the image
    side, given by the truth: see "Object sizes" above) is seen with probability
    ``s**k / (s**k + h**k)``, ``k`` = ``size_steepness``, ``h`` the profile's
    ``half_seen_scale`` times the volunteer's own eyesight factor; an object they do not see is
    never ticked. An answer whose truth gives no size is seen.
    """

    name: str
    sensitivity: float
    false_positive_rate: float
    ignores_truth: bool = False
    half_seen_scale: float = 0.0
    size_steepness: float = 4.0

    def __post_init__(self) -> None:
        for attr in ("sensitivity", "false_positive_rate"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"profile {self.name!r}: {attr} must be in [0, 1], got {value!r}")
        if not isinstance(self.ignores_truth, bool):
            raise ValueError(f"profile {self.name!r}: ignores_truth must be true or false")
        for attr in ("half_seen_scale", "size_steepness"):
            value = getattr(self, attr)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (math.isfinite(value) and value >= 0)
            ):
                raise ValueError(f"profile {self.name!r}: {attr} must be a number >= 0")
        if self.size_steepness <= 0:
            raise ValueError(f"profile {self.name!r}: size_steepness must be above 0")

    def seen_probability(self, scale: float | None, eyesight: float = 1.0) -> float:
        """Chance to see an object of side ``scale`` (None: unknown size, always seen), for a
        volunteer whose half-seen scale is the profile's times ``eyesight``."""
        half = self.half_seen_scale * eyesight
        if half <= 0 or scale is None:
            return 1.0
        k = self.size_steepness
        return scale**k / (scale**k + half**k)

    @classmethod
    def from_simulation(cls, name: str, profile: Any) -> VolunteerProfile:
        """The sandbox's form of an ``ml.simulation.CrowdProfile`` (``sensitivity``,
        ``false_positive``, ``half_seen_scale``, ``size_steepness``). A profile that ticks a
        present concept as often as an absent one ignores the subject: a spammer."""
        sensitivity = float(profile.sensitivity)
        false_positive = float(profile.false_positive)
        return cls(
            name,
            sensitivity=sensitivity,
            false_positive_rate=false_positive,
            ignores_truth=math.isclose(sensitivity, false_positive),
            half_seen_scale=float(profile.half_seen_scale),
            size_steepness=float(profile.size_steepness),
        )

    @classmethod
    def from_json(cls, name: str, data: Any) -> VolunteerProfile:
        """A profile from its JSON fields; for a name ``PROFILES`` knows, the fields left out
        keep that profile's (``{"careless": {"half_seen_scale": 0.18}}``)."""
        if not isinstance(data, dict):
            raise ValueError(f"profile {name!r} must be an object of VolunteerProfile fields")
        allowed = {f.name for f in fields(cls)} - {"name"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            known = ", ".join(sorted(allowed))
            raise ValueError(f"profile {name!r}: unknown fields {unknown}; known: {known}")
        base = PROFILES.get(name)
        if base is not None:
            return replace(base, **data)
        missing = [f for f in ("sensitivity", "false_positive_rate") if f not in data]
        if missing:
            raise ValueError(f"profile {name!r} is new: it needs {' and '.join(missing)}")
        return cls(name, **data)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "name"}


PROFILES: dict[str, VolunteerProfile] = {
    "careful": VolunteerProfile("careful", sensitivity=0.95, false_positive_rate=0.01),
    "careless": VolunteerProfile("careless", sensitivity=0.7, false_positive_rate=0.08),
    "spammer": VolunteerProfile(
        "spammer", sensitivity=0.0, false_positive_rate=0.15, ignores_truth=True
    ),
    "expert": VolunteerProfile("expert", sensitivity=1.0, false_positive_rate=0.0),
}

#: How much volunteers' eyes differ within a profile: each volunteer's half-seen scale is the
#: profile's times a log-normal factor with this sigma, as ``ml.simulation.SimulatedCrowd`` draws.
EYESIGHT_SIGMA = 0.25


def eyesight(volunteer_name: str) -> float:
    """A volunteer's own factor on their profile's half-seen scale: log-normal, median 1, drawn
    from their name, so the same volunteer keeps it across runs, restarts and live crowds."""
    return random.Random(f"eyesight:{volunteer_name}").lognormvariate(0.0, EYESIGHT_SIGMA)


@dataclass
class CrowdConfig:
    """Who classifies. Same config and seed on the same store give the same classifications.

    Volunteers are named ``<name_prefix><index>`` (or ``not-logged-in-<hash>``) and remembered
    by the store: a later run with the same prefix meets the same people, keeps their profiles
    and does not show them subjects they have already classified. Use another prefix for a new
    crowd.

    ``profiles`` maps the names ``mix`` uses to ``VolunteerProfile``; over JSON, ``{"careless":
    {"sensitivity": 0.85, "false_positive_rate": 0.06, "half_seen_scale": 0.18}}`` replaces or
    adds profiles, the others keep ``PROFILES``. ``votes_per_subject`` ``(low, high)``: each
    subject gets a number of votes drawn uniformly from low..high, then retires (see
    ``Sandbox.run_volunteers``); None: the workflow's retirement count alone decides.
    ``for_scenario("hard")`` is the crowd of ``ml.scenarios``' hard scenario.
    """

    n_volunteers: int = 20
    # Profile name -> weight; counts are split by largest remainder, then shuffled by the seed.
    mix: dict[str, float] = field(
        default_factory=lambda: {"careful": 0.6, "careless": 0.3, "spammer": 0.1}
    )
    anonymous_share: float = 0.2  # share of volunteers who are not logged in
    repeat_rate: float = 0.0  # chance a turn re-classifies a subject the volunteer already saw
    gold_share: float = (
        0.0  # share of linked subjects that get one expert gold-standard classification
    )
    seed: int = 0
    name_prefix: str = "volunteer-"
    profiles: dict[str, VolunteerProfile] = field(default_factory=lambda: dict(PROFILES))
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
                raise ValueError("profiles must be an object {name: {VolunteerProfile fields}}")
            config["profiles"] = {
                **PROFILES,
                **{str(n): VolunteerProfile.from_json(str(n), p) for n, p in profiles.items()},
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
        profiles = {n: p.to_json() for n, p in self.profiles.items() if PROFILES.get(n) != p}
        if profiles:
            data["profiles"] = profiles
        if self.votes_per_subject is not None:
            data["votes_per_subject"] = list(self.votes_per_subject)
        return data

    @classmethod
    def from_simulation(
        cls,
        mix: Mapping[str, tuple[float, Any]],
        *,
        votes: tuple[int, int] | None = None,
        **config: Any,
    ) -> CrowdConfig:
        """A crowd of ``ml.simulation``'s kind: ``{name: (share, CrowdProfile)}`` and its votes
        per item, so that the sandbox's volunteers behave as the benches' simulated ones."""
        profiles = {name: VolunteerProfile.from_simulation(name, p) for name, (_, p) in mix.items()}
        return cls(
            mix={name: float(share) for name, (share, _) in mix.items()},
            profiles={**PROFILES, **profiles},
            votes_per_subject=votes,
            **config,
        )

    @classmethod
    def for_scenario(cls, name: str, **config: Any) -> CrowdConfig:
        """The crowd of ``ml.scenarios``' scenario ``name``: "easy" is the sandbox's default
        crowd (``PROFILES``), "hard" is ``ml.scenarios.HARD_CROWD`` with ``HARD_VOTES`` (careful
        and careless volunteers who miss small objects, 15% spammers, one to three votes per
        subject). ``config``: the other fields (n_volunteers, seed, ...)."""
        if name == "easy":
            # ml.scenarios' easy crowd is the default one (no mix, no votes range): the
            # sandbox's own, with no need to import ml (seconds: numpy, torch, scikit-learn).
            return cls(**config)
        from ml.scenarios import scenario_crowd

        scenario = scenario_crowd(name)
        if scenario.mix is None:
            return cls(votes_per_subject=scenario.votes, **config)
        return cls.from_simulation(scenario.mix, votes=scenario.votes, **config)

    def votes_for(self, workflow_id: int, subject_id: int) -> int | None:
        """The votes the crowd gives a subject before it retires (None: no limit of its own).

        Drawn from the workflow and subject ids alone, so every crowd with the same range (the
        scripted rounds' and the live one) agrees on a subject's number."""
        if self.votes_per_subject is None:
            return None
        low, high = self.votes_per_subject
        return random.Random(f"votes:{workflow_id}:{subject_id}").randint(low, high)
