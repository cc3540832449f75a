"""From raw votes to clean labels: the Django side of ``ml.aggregation``.

A pass reads every counted classification (each volunteer's earliest of a subject, mapped to an
item), anchors curator decisions and gold-standard classifications, runs the chosen method and
writes back in bulk: a label per item x concept, a skill per volunteer x concept, and each item's
consensus, uncertainty and disagreement with its prior labels. The same votes always write the
same numbers. A full pass also stores the crowd-level parameters (``AggregationState``); an
incremental pass (``item_ids``) re-scores only those items with the two-coin E-step under the
stored skills and parameters (majority vote needs none), and skills wait for the next full pass.
The steps, one module each: ``votes``, ``labels``, ``stored_parameters``, ``id_filters``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings

from annotate.models import AggregatedLabel, AggregationState, Concept, Subject, Workflow
from annotate.services.aggregation.id_filters import queries_scoped
from annotate.services.aggregation.labels import labels_write, skills_write
from annotate.services.aggregation.stored_parameters import (
    aggregation_state_for,
    aggregation_state_record,
    parameters_load,
)
from annotate.services.aggregation.votes import anchors_build, votes_load
from annotate.signals import labels_aggregated
from ml import aggregation

logger = logging.getLogger(__name__)


@dataclass
class AggregationSummary:
    method: str
    n_classifications: int
    n_items: int
    n_volunteers: int
    n_concepts: int
    iterations: int
    converged: bool
    confident_items: int
    uncertain_items: int
    contradicting_prior: int
    retire_subject_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0
    # True for an incremental pass (only the items asked for; skills unchanged); False for a
    # full pass, also when an incremental one was asked for but fell back to a full one.
    incremental: bool = False
    # Item x concept labels written on the other side of 0.5 than before, plus labels new to the
    # table (labels deleted with an item's last vote are not counted).
    labels_changed: int = 0
    # Share of the item x concept labels written on the same side of 0.5 as the majority vote of
    # the same votes (1.0 when there are none): how often the method overrules the crowd.
    majority_agreement: float = 1.0

    def summary(self) -> str:
        kind = "incremental, " if self.incremental else ""
        return (
            f"{self.method}: {self.n_classifications} classifications of {self.n_items} items by "
            f"{self.n_volunteers} volunteers; {self.confident_items} confident, "
            f"{self.uncertain_items} uncertain, {self.contradicting_prior} contradict their prior; "
            f"{self.labels_changed} labels changed; "
            f"{self.majority_agreement:.1%} of labels agree with majority vote; "
            f"{len(self.retire_subject_ids)} subjects to retire "
            f"({kind}{self.iterations} iterations, {self.seconds:.1f} s)"
        )


def _majority_agreement(votes: aggregation.VoteMatrix, posteriors: np.ndarray) -> float:
    """Share of item x concept posteriors on the same side of 0.5 as the majority vote of
    ``votes`` (as stored: rounded to six decimals); 1.0 when there are none."""
    if not posteriors.size:
        return 1.0
    majority = aggregation.majority_vote(votes).labels
    return float((majority == (np.round(posteriors, 6) > 0.5)).mean())


def labels_aggregate(
    *,
    item_ids: Collection[int] | None = None,
    method: str | None = None,
    confidence: float | None = None,
    min_votes: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> AggregationSummary:
    """Aggregate counted votes and store labels, item states and (full pass) skills.

    Args:
        item_ids: None for a full pass over every counted vote. Otherwise an incremental pass
            over these items only: their votes are scored under the stored volunteer skills
            and the crowd-level parameters of the last full pass (Dawid-Skene's E-step; majority
            vote is recomputed exactly), and only their labels and states are written; skills
            are not updated. Items without counted votes lose their labels, as in a full pass.
            Without stored parameters for ``method`` and the current vocabulary (no full pass
            yet, another method since, concepts added or retired), a full pass runs instead
            and the summary says so (``incremental=False``).
        method: "dawid_skene" or "majority" (default: settings.AGGREGATION_METHOD).
        confidence: posterior confidence at which a concept is settled (RETIRE_CONFIDENCE).
        min_votes: classifications an item needs before it may retire (RETIRE_MIN_CLASSIFICATIONS).
        progress: called with a short description of each step.
    """
    started = time.monotonic()
    method = method or settings.AGGREGATION_METHOD
    confidence = confidence if confidence is not None else settings.RETIRE_CONFIDENCE
    min_votes = min_votes if min_votes is not None else settings.RETIRE_MIN_CLASSIFICATIONS
    say = progress or (lambda text: None)

    concepts = list(Concept.objects.filter(active=True).order_by("position", "key"))
    scope: np.ndarray | None = None
    state: AggregationState | None = None
    if item_ids is not None:
        state = aggregation_state_for(method=method, concepts=concepts)
        if state is None:
            say("no stored parameters for this method and vocabulary: a full pass instead")
        else:
            scope = np.unique(np.fromiter((int(pk) for pk in item_ids), dtype=np.int64))

    say("reading votes" if scope is None else f"reading the votes of {len(scope)} items")
    data = votes_load(concepts=concepts, item_ids=scope)
    anchors = anchors_build(data, concepts=concepts, item_ids=scope)
    say(f"aggregating {data.votes.n_votes} classifications ({method})")
    if scope is not None and method == "dawid_skene":
        assert state is not None
        parameters = parameters_load(data, state)
        result = aggregation.dawid_skene_binary_posteriors(
            data.votes, parameters, anchors, pool_workers=data.anonymous
        )
    else:
        options = {"pool_workers": data.anonymous} if method == "dawid_skene" else {}
        result = aggregation.aggregate(method, data.votes, anchors, **options)

    decision = aggregation.retirement_decide(
        result.posteriors,
        confidence=confidence,
        vote_counts=result.item_votes,
        min_votes=min_votes,
    )
    say("writing labels")
    contradicts, changed = labels_write(
        data, result, concepts=concepts, method=method, settled=decision.settled, scope=scope
    )
    if scope is None:
        skills_write(data, result)
    aggregation_state_record(
        method=method,
        concepts=concepts,
        result=result if scope is None else None,
        used=state,
        n_votes=data.votes.n_votes,
        n_items=data.votes.n_items,
        labels_changed=changed,
    )

    retire_items = data.item_ids[decision.retire]
    open_subjects = Subject.objects.filter(
        item__isnull=False, retired_at__isnull=True, upstream_state=Subject.Upstream.ACTIVE
    ).values_list("zooniverse_id", "item_id")
    queries = queries_scoped(
        open_subjects, Subject, "item_id", None if scope is None else retire_items
    )
    subject_items = np.array([row for query in queries for row in query], dtype=np.int64)
    subject_items = subject_items.reshape(-1, 2)
    retire_subjects = subject_items[np.isin(subject_items[:, 1], retire_items), 0].tolist()
    agreement = _majority_agreement(data.votes, result.posteriors)
    summary = AggregationSummary(
        method=method,
        n_classifications=data.votes.n_votes,
        n_items=data.votes.n_items,
        n_volunteers=data.votes.n_workers,
        n_concepts=len(concepts),
        iterations=result.iterations,
        converged=result.converged,
        confident_items=int(decision.settled.sum()),
        uncertain_items=int((~decision.settled).sum()),
        contradicting_prior=contradicts,
        retire_subject_ids=retire_subjects,
        seconds=time.monotonic() - started,
        incremental=scope is not None,
        labels_changed=changed,
        majority_agreement=agreement,
    )
    logger.info("aggregate %s", summary.summary())
    # Whoever keeps flags derived from the crowd's labels (the model-vs-crowd conflict) refreshes
    # them: the items of an incremental pass, or every item after a full one.
    labels_aggregated.send(
        sender=AggregatedLabel, item_ids=None if scope is None else scope.tolist()
    )
    return summary


def labels_aggregate_and_retire(
    *,
    item_ids: Collection[int] | None = None,
    method: str | None = None,
    client=None,
    progress: Callable[[str], None] | None = None,
) -> tuple[AggregationSummary, int]:
    """Aggregate (all items, or incrementally ``item_ids``), then retire on Zooniverse every
    subject whose item is now settled.

    Returns the summary and the number of subjects retired. Uncertain items keep collecting
    votes; retiring twice is harmless (Panoptes and the local mirror both ignore it).
    """
    from annotate.services.zooniverse.retirement import subjects_retire

    summary = labels_aggregate(item_ids=item_ids, method=method, progress=progress)
    retired = 0
    if summary.retire_subject_ids:
        subjects = Subject.objects.filter(
            zooniverse_id__in=summary.retire_subject_ids
        ).select_related("round__workflow")
        by_workflow: dict[int, tuple[Workflow, list[Subject]]] = {}
        for subject in subjects:
            workflow = subject.round.workflow if subject.round else None
            if workflow is not None:
                by_workflow.setdefault(workflow.pk, (workflow, []))[1].append(subject)
        for workflow, chosen in by_workflow.values():
            retired += subjects_retire(
                workflow=workflow,
                subjects=chosen,
                reason="consensus",
                client=client,
            )
    return summary, retired
