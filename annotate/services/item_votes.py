"""Who voted what on an item, with each volunteer's skill: the item screen's vote lists.

A service, not a selector: which classifications count as votes and which concepts a workflow
version asked are the ingest's and the aggregation's rules, and they live in the services.
"""

from __future__ import annotations

from dataclasses import dataclass

from annotate.models import Classification, Concept, Item, VolunteerSkill
from annotate.services.classifications.counters import VOTES
from annotate.services.zooniverse.workflows import workflow_versions_asked


@dataclass(frozen=True)
class VoterVote:
    """One volunteer's vote on one concept of the item, with their skill on that concept."""

    volunteer_id: int
    name: str
    ticked: bool
    sensitivity: float | None  # None: no skill estimated yet (no full aggregation since)
    specificity: float | None
    excluded: bool


def item_votes(item: Item) -> tuple[dict[str, list[VoterVote]], int]:
    """Who voted what on ``item``: per concept key, each counted vote with the volunteer's skill
    on that concept; and how many volunteers voted.

    A classification votes on the concepts its workflow version asked (ticked: for, not ticked:
    against), as the aggregation reads it. Three queries (votes, vocabulary, skills) plus one
    for the workflow versions.
    """
    rows = list(
        Classification.objects.filter(item_id=item.pk, **VOTES)
        .order_by("created_at", "pk")
        .values_list(
            "volunteer_id",
            "volunteer__user_name",
            "volunteer__key",
            "volunteer__excluded",
            "workflow_id",
            "workflow_version",
            "concept_ids",
        )
    )
    if not rows:
        return {}, 0
    concepts = list(Concept.objects.filter(active=True).order_by("position", "key"))
    pairs = sorted({(workflow_id, version) for _v, _n, _k, _e, workflow_id, version, _c in rows})
    asked = workflow_versions_asked(pairs, concepts)
    row_of = {pair: n for n, pair in enumerate(pairs)}
    skills = {
        (volunteer_id, concept_id): (se, sp)
        for volunteer_id, concept_id, se, sp in VolunteerSkill.objects.filter(
            volunteer_id__in={row[0] for row in rows}
        ).values_list("volunteer_id", "concept_id", "sensitivity", "specificity")
    }
    votes: dict[str, list[VoterVote]] = {}
    for volunteer_id, user_name, key, excluded, workflow_id, version, ticked in rows:
        offered = asked[row_of[(workflow_id, version)]]
        ticked_ids = set(ticked or [])
        for j, concept in enumerate(concepts):
            if not offered[j]:
                continue
            se, sp = skills.get((volunteer_id, concept.pk), (None, None))
            votes.setdefault(concept.key, []).append(
                VoterVote(
                    volunteer_id=volunteer_id,
                    name=user_name or key,
                    ticked=concept.pk in ticked_ids,
                    sensitivity=se,
                    specificity=sp,
                    excluded=excluded,
                )
            )
    return votes, len({row[0] for row in rows})
