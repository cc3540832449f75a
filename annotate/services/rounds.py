"""Publishing a chosen round: its picks pushed to Zooniverse, best first.

A round chosen by ``select_round`` (the training app) records its choice as ``RoundPick`` rows;
publishing them is the crowd side's job: new items become subjects with ``#priority`` by rank,
and contested items go back in the queue (un-retired) for another vote.
"""

from __future__ import annotations

from annotate.models import Item, Round, RoundPick, Subject


class RoundPublishError(ValueError):
    """A round that cannot be published (no workflow to push to)."""


def round_items_ordered(round_: Round) -> tuple[list[Item], list[Subject]]:
    """The round's new items best first, and the subjects of its relabel picks."""
    picks = list(round_.picks.select_related("item").order_by("rank"))
    new = [p.item for p in picks if p.reason != RoundPick.Reason.RELABEL]
    relabel_ids = [p.item_id for p in picks if p.reason == RoundPick.Reason.RELABEL]
    subjects = list(Subject.objects.filter(item_id__in=relabel_ids))
    return new, subjects


def round_publish(*, round: Round, client=None) -> str:
    """Push a chosen round to Zooniverse: new items as subjects with ``#priority`` by rank, and
    contested items put back in the queue (un-retired). Safe to call again.

    Raises:
        RoundPublishError: the round has no workflow.
    """
    from annotate.services.zooniverse.push import round_push
    from annotate.services.zooniverse.retirement import subjects_unretire

    if round.workflow is None:
        raise RoundPublishError(f"{round.name} has no workflow to push to")
    new, relabel_subjects = round_items_ordered(round)
    ranks = dict(round.picks.values_list("item_id", "rank"))
    result = round_push(
        round=round,
        items=new,
        priorities={item.pk: float(ranks[item.pk]) for item in new},
        client=client,
    )
    if relabel_subjects:
        subjects_unretire(workflow=round.workflow, subjects=relabel_subjects, client=client)
    return f"{result.summary()}; {len(relabel_subjects)} contested subjects back in the queue"
