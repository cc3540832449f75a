"""The simulated crowd: volunteers recruited by a CrowdConfig take turns classifying subjects."""

from __future__ import annotations

import copy
import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ml.crowd import PROFILES, CrowdProfile

from .formats import iso
from .records import ClassificationRecord, SetMemberSubjectRecord, VolunteerRecord, WorkflowRecord
from .store import Store
from .tasks import AnswerIndex, api_value, task_type_of
from .truth import Truth, TruthFn, truth_function, truth_indices, truth_sizes
from .volunteers import CrowdConfig, eyesight


@dataclass
class CrowdRun:
    """What one ``run_volunteers`` call produced."""

    classifications: list[ClassificationRecord]
    volunteers: list[VolunteerRecord]
    retired_subject_ids: list[int]

    def count_by_profile(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for c in self.classifications:
            counts[c.profile] = counts.get(c.profile, 0) + 1
        return counts

    def subjects_by_votes(self) -> dict[int, int]:
        """Votes a subject got in this run -> number of such subjects; a vote is a volunteer's
        classification that counts towards retirement (no repeat, no gold standard)."""
        per_subject: dict[int, int] = {}
        for c in self.classifications:
            if not c.gold_standard and not c.metadata["subject_selection_state"]["already_seen"]:
                per_subject[c.subject_ids[0]] = per_subject.get(c.subject_ids[0], 0) + 1
        counts: dict[int, int] = {}
        for n in per_subject.values():
            counts[n] = counts.get(n, 0) + 1
        return dict(sorted(counts.items()))

    def summary(self) -> dict[str, Any]:
        return {
            "classifications": len(self.classifications),
            "classification_ids": [c.id for c in self.classifications],
            "by_profile": self.count_by_profile(),
            "volunteers": len(self.volunteers),
            "retired_subject_ids": self.retired_subject_ids,
            "subjects_by_votes": {str(n): k for n, k in self.subjects_by_votes().items()},
        }


@dataclass
class CrowdTurns:
    """What a crowd carries from one turn to the next on one workflow.

    ``run_volunteers`` builds one and loops over it; the live crowd keeps one per workflow and
    refreshes ``open_ids``, ``seen`` and ``active`` before each turn, since the store changes
    between its turns.
    """

    workflow: WorkflowRecord
    crowd: CrowdConfig
    rng: random.Random
    truth: TruthFn
    answer_index: AnswerIndex
    volunteers: list[VolunteerRecord]
    active: list[VolunteerRecord]  # volunteers who may still have something to see
    seen: dict[str, set[int]]  # volunteer name -> subject ids they classified on this workflow
    open_ids: list[int] = field(default_factory=list)  # unretired linked subjects, in order
    seen_upto: int = 0  # how far into the sorted classification ids ``seen`` has read


class Crowd:
    """Simulated volunteers classifying the store's subjects, one turn at a time."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._last_classified_at: datetime | None = None

    def run(
        self,
        workflow_id: int | None = None,
        *,
        crowd: CrowdConfig | None = None,
        classifications: int | None = None,
        truth: Truth | None = None,
    ) -> CrowdRun:
        """Let a simulated crowd classify the subjects linked to a workflow.

        Each turn a random volunteer (among those with something left to see) either repeats a
        subject they already classified (``repeat_rate``; a repeat does not count towards
        retirement, as in Panoptes) or takes the next unseen, unretired subject: lowest
        ``#priority`` first when the workflow is prioritized, otherwise at random. The run stops
        after ``classifications`` turns, or (None) when no volunteer has anything left to see.
        ``truth``: None reads ``metadata["#truth"]``; a function ``f(subject_id, metadata)``; or a
        mapping ``{external_id: [labels or keys]}`` read through ``metadata["external_id"]``.
        """
        crowd = crowd or CrowdConfig()
        truth_fn = truth_function(truth)
        with self.store.lock:
            workflow = self.store.workflow_record(workflow_id or self.store.workflow_id)
            rng = random.Random(crowd.seed)
            volunteers = self.recruit(crowd, rng)
            answer_index = self.store.answer_index(workflow)
            made: list[ClassificationRecord] = []
            retired: list[int] = []

            members = self.store.linked_members(workflow.id)
            if crowd.gold_share > 0:
                made.extend(
                    self._gold_classifications(
                        workflow, members, crowd, rng, truth_fn, answer_index
                    )
                )
            turns = self.turns(workflow, crowd, rng, truth_fn, volunteers)
            turns.open_ids = [
                m.subject_id
                for m in members
                if not self.store.is_retired(m.subject_id, workflow.id)
            ]
            budget = classifications
            crowd_made = 0
            # Repeats never exhaust anyone, so bound the turns whatever the budget.
            turns_left = 4 * (len(members) + 1) * (len(volunteers) + 1)
            while turns.active and turns_left > 0 and (budget is None or crowd_made < budget):
                turns_left -= 1
                record, retired_now = self.turn(turns)
                if record is None:
                    continue
                made.append(record)
                crowd_made += 1
                if retired_now:
                    retired.append(record.subject_ids[0])
            self.store.save()
            return CrowdRun(made, [copy.deepcopy(v) for v in volunteers], retired)

    def turns(
        self,
        workflow: WorkflowRecord,
        crowd: CrowdConfig,
        rng: random.Random,
        truth: TruthFn,
        volunteers: list[VolunteerRecord],
    ) -> CrowdTurns:
        """The state a crowd carries from turn to turn on one workflow (open ids left empty)."""
        turns = CrowdTurns(
            workflow=workflow,
            crowd=crowd,
            rng=rng,
            truth=truth,
            answer_index=self.store.answer_index(workflow),
            volunteers=volunteers,
            active=list(volunteers),
            seen={v.name: set() for v in volunteers},
        )
        self.catch_up(turns)
        return turns

    def catch_up(self, turns: CrowdTurns) -> None:
        """Add the classifications stored since the last call to what each volunteer has seen.

        Classification ids only grow, so this reads each classification once over a crowd's
        life, whoever made it (this crowd, another run with the same names, or a live crowd).
        """
        ids = self.store.classification_ids
        workflow_id = turns.workflow.id
        for cid in ids[turns.seen_upto :]:
            c = self.store.state.classifications[cid]
            if c.workflow_id == workflow_id and c.user_name in turns.seen:
                turns.seen[c.user_name].update(c.subject_ids)
        turns.seen_upto = len(ids)

    def turn(self, turns: CrowdTurns) -> tuple[ClassificationRecord | None, bool]:
        """One volunteer's turn: ``(classification, retired it)``, or ``(None, False)`` when the
        volunteer drawn has nothing left to see (they leave ``turns.active``)."""
        workflow, crowd, rng = turns.workflow, turns.crowd, turns.rng
        volunteer = rng.choice(turns.active)
        profile = crowd.profiles.get(volunteer.profile, PROFILES["careful"])
        seen = turns.seen[volunteer.name]
        repeatable: list[int] = []
        if crowd.repeat_rate > 0 and rng.random() < crowd.repeat_rate:
            repeatable = [
                sid for sid in sorted(seen) if not self.store.is_retired(sid, workflow.id)
            ]
        if repeatable:
            subject_id = rng.choice(repeatable)
            repeat = True
        else:
            next_id = _next_subject(turns.open_ids, seen, workflow.prioritized, rng)
            if next_id is None:
                turns.active.remove(volunteer)
                return None, False
            subject_id = next_id
            repeat = False
        subject = self.store.state.subjects[subject_id]
        sizes = truth_sizes(turns.truth(subject_id, subject.metadata), turns.answer_index)
        true_idx = set(sizes)
        sees: dict[int, float] | None = None
        if profile.half_seen_scale > 0 and not profile.ignores_subject:
            own = eyesight(volunteer.name)
            sees = {i: profile.seen_probability(s, own) for i, s in sizes.items()}
        n_answers = len(turns.answer_index.labels)
        if task_type_of(workflow.tasks) == "single":
            ticked = _answer_one(profile, true_idx, n_answers, rng, sees)
        else:
            ticked = _answer(profile, true_idx, n_answers, rng, sees)
        record = self._record_classification(
            workflow, volunteer, subject_id, ticked, repeat=repeat, gold=False
        )
        seen.add(subject_id)
        if not repeat and self._count_towards_retirement(
            workflow, subject_id, votes=crowd.votes_for(workflow.id, subject_id)
        ):
            turns.open_ids.remove(subject_id)
            return record, True
        return record, False

    def recruit(self, crowd: CrowdConfig, rng: random.Random) -> list[VolunteerRecord]:
        names = [n for n, w in crowd.mix.items() if w > 0]
        unknown = [n for n in names if n not in crowd.profiles]
        if unknown:
            raise ValueError(f"unknown volunteer profiles {unknown}; known: {list(crowd.profiles)}")
        total = sum(crowd.mix[n] for n in names)
        quotas = [crowd.n_volunteers * crowd.mix[n] / total for n in names]
        counts = [math.floor(q) for q in quotas]
        # Largest remainder, so 20 volunteers at 0.6/0.3/0.1 are exactly 12/6/2.
        by_remainder = sorted(range(len(names)), key=lambda i: quotas[i] - counts[i], reverse=True)
        for i in by_remainder[: crowd.n_volunteers - sum(counts)]:
            counts[i] += 1
        profiles = [name for name, count in zip(names, counts, strict=True) for _ in range(count)]
        rng.shuffle(profiles)
        n_anonymous = round(crowd.n_volunteers * crowd.anonymous_share)
        anonymous = set(rng.sample(range(crowd.n_volunteers), n_anonymous))
        volunteers: list[VolunteerRecord] = []
        for i, profile in enumerate(profiles):
            seed_text = f"{crowd.seed}:{crowd.name_prefix}{i}"
            ip_hash = hashlib.sha1(seed_text.encode(), usedforsecurity=False).hexdigest()[:20]
            session = hashlib.sha256(("session:" + seed_text).encode()).hexdigest()
            if i in anonymous:
                name = f"not-logged-in-{ip_hash}"
                user_id = None
            else:
                name = f"{crowd.name_prefix}{i:03d}"
                user_id = self.store.user_for_login(name).id
            existing = self.store.state.volunteers.get(name)
            if existing is None:
                existing = VolunteerRecord(name, profile, user_id, ip_hash, session)
                self.store.state.volunteers[name] = existing
            volunteers.append(existing)
        return volunteers

    def _count_towards_retirement(
        self, workflow: WorkflowRecord, subject_id: int, *, votes: int | None = None
    ) -> bool:
        """Count one classification; True when it retires the subject.

        ``votes``: the crowd's own number of votes for this subject (``votes_per_subject``); it
        retires at that count when it comes before the workflow's retirement count, as a
        per-subject retirement rule would. A workflow that never retires keeps every subject.
        """
        status = self.store.ensure_status(subject_id, workflow.id)
        status.classifications_count += 1
        status.updated_at = self.store.now()
        limit = workflow.retirement_count
        if limit is not None and votes is not None:
            limit = min(limit, votes)
        if (
            limit is not None
            and status.retired_at is None
            and status.classifications_count >= limit
        ):
            status.retired_at = status.updated_at
            status.retirement_reason = "classification_count"
            return True
        return False

    def _gold_classifications(
        self,
        workflow: WorkflowRecord,
        members: list[SetMemberSubjectRecord],
        crowd: CrowdConfig,
        rng: random.Random,
        truth: TruthFn,
        answer_index: AnswerIndex,
    ) -> list[ClassificationRecord]:
        has_gold = {
            sid
            for c in self.store.state.classifications.values()
            if c.gold_standard and c.workflow_id == workflow.id
            for sid in c.subject_ids
        }
        expert_login = f"{crowd.name_prefix}expert"
        expert = self.store.state.volunteers.get(expert_login)
        if expert is None:
            user = self.store.user_for_login(expert_login)
            ip_hash = hashlib.sha1(expert_login.encode(), usedforsecurity=False).hexdigest()[:20]
            expert = VolunteerRecord(
                expert_login,
                "expert",
                user.id,
                ip_hash,
                hashlib.sha256(expert_login.encode()).hexdigest(),
            )
            self.store.state.volunteers[expert_login] = expert
        made = []
        for member in members:
            if rng.random() >= crowd.gold_share or member.subject_id in has_gold:
                continue
            subject = self.store.state.subjects[member.subject_id]
            ticked = sorted(truth_indices(truth(subject.id, subject.metadata), answer_index))
            # Gold-standard classifications are reference answers; they do not count towards
            # retirement here, so the crowd still sees every subject the usual number of times.
            made.append(
                self._record_classification(
                    workflow, expert, subject.id, ticked, repeat=False, gold=True
                )
            )
        return made

    def _record_classification(
        self,
        workflow: WorkflowRecord,
        volunteer: VolunteerRecord,
        subject_id: int,
        ticked: list[int],
        *,
        repeat: bool,
        gold: bool,
    ) -> ClassificationRecord:
        moment = self.store.clock()
        # Strictly increasing timestamps keep "earliest created_at" meaningful within one run.
        if self._last_classified_at is not None and moment <= self._last_classified_at:
            moment = self._last_classified_at + timedelta(milliseconds=1)
        self._last_classified_at = moment
        started = moment - timedelta(seconds=5 + (subject_id % 40))
        metadata = {
            "source": "sandbox",
            "session": volunteer.session,
            "started_at": iso(started),
            "finished_at": iso(moment),
            "user_agent": "crowdloop-sandbox/1.0",
            "user_language": "en",
            "workflow_version": workflow.version_string,
            "subject_dimensions": [None],
            "subject_selection_state": {
                "retired": False,
                "already_seen": repeat,
                "selection_state": "normal",
                "finished_workflow": False,
                "user_has_finished_workflow": False,
            },
            "seen_before": True if repeat else None,
        }
        if metadata["seen_before"] is None:
            del metadata["seen_before"]
        record = ClassificationRecord(
            id=self.store.next_id("classifications"),
            project_id=workflow.project_id,
            workflow_id=workflow.id,
            workflow_version=workflow.version_string,
            user_id=volunteer.user_id,
            user_name=volunteer.name,
            user_ip=volunteer.ip_hash,
            created_at=iso(moment),
            annotations=[{"task": "T0", "value": api_value(workflow.tasks, ticked)}],
            subject_ids=[subject_id],
            metadata=metadata,
            gold_standard=gold,
            expert=gold,
            profile=volunteer.profile,
        )
        self.store.state.classifications[record.id] = record
        self.store.classification_ids.append(record.id)
        workflow.classifications_count += 1
        return record


def _next_subject(
    open_ids: list[int], seen: set[int], prioritized: bool, rng: random.Random
) -> int | None:
    """The subject a volunteer gets next: first unseen in priority order, else a random one."""
    if prioritized:
        return next((sid for sid in open_ids if sid not in seen), None)
    # Random selection: a few cheap draws usually hit an unseen subject; scan only when they miss.
    for _ in range(8):
        if not open_ids:
            return None
        sid = open_ids[rng.randrange(len(open_ids))]
        if sid not in seen:
            return sid
    unseen = [sid for sid in open_ids if sid not in seen]
    return rng.choice(unseen) if unseen else None


def _answer_one(
    profile: CrowdProfile,
    true_idx: set[int],
    n: int,
    rng: random.Random,
    sees: Mapping[int, float] | None = None,
) -> list[int]:
    """One answer of a single-answer question: a true one with the profile's sensitivity (times
    the chance to see the biggest true object, with ``sees``), else another at random (any
    answer for a volunteer who ignores the subject)."""
    p_true = profile.sensitivity * (max(sees.values(), default=1.0) if sees else 1.0)
    if true_idx and not profile.ignores_subject and rng.random() < p_true:
        return [rng.choice(sorted(true_idx))]
    others = [i for i in range(n) if i not in true_idx] or list(range(n))
    return [rng.choice(others if not profile.ignores_subject else list(range(n)))]


def _answer(
    profile: CrowdProfile,
    true_idx: set[int],
    n: int,
    rng: random.Random,
    sees: Mapping[int, float] | None = None,
) -> list[int]:
    """The answers ticked, each with the profile's ``tick_probability``: a true one with the
    sensitivity times the chance to see it (``sees``: answer index -> probability; 1 when left
    out), each other one with the false positive rate; one draw per answer either way, so sizes
    change no other draw."""
    ticked = []
    for i in range(n):
        p = profile.tick_probability(i in true_idx, sees.get(i, 1.0) if sees else 1.0)
        if rng.random() < p:
            ticked.append(i)
    return ticked
