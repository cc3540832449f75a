"""Curator decisions: accept, edit, reject or skip an item's label, each written to the audit.

Every decision is one ``Review`` row (append-only: who, when, action, the final label before and
after, a comment) written in the same transaction as the item's new review state, so the audit
and the label can never disagree. See ``annotate.selectors`` for what "final label" means.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Exists, Max, OuterRef, Q, QuerySet
from django.utils import timezone

from annotate.models import AggregatedLabel, Concept, Item, PriorLabel, Review
from annotate.selectors import item_final_label, item_final_labels
from annotate.signals import reviews_recorded

COMMENT_MAX_LENGTH = 2000
_BULK_CHUNK = 1000

#: The actions a curator takes on an item; an undo is taken on a decision instead.
DECISIONS = tuple(action for action in Review.Action.values if action != Review.Action.UNDO)


class UndoError(ValueError):
    """A decision that cannot be undone (already undone, a later decision on top, a skip...)."""


def item_prior_keys(item: Item) -> list[str]:
    """The item's prior enrichment labels among the active concepts, sorted keys."""
    return sorted(
        PriorLabel.objects.filter(item_id=item.pk, concept__active=True).values_list(
            "concept__key", flat=True
        )
    )


def review_record(
    *,
    item: Item,
    curator: User,
    action: str,
    concepts: Iterable[str] | None = None,
    comment: str = "",
) -> Review:
    """Record one curator decision on ``item`` and apply it; return the audit row.

    - accept: the current final label becomes the curated one (state ``accepted``);
    - edit: ``concepts`` (active concept keys, possibly none) become the curated label
      (state ``edited``);
    - reject: the item leaves the dataset (state ``rejected``, no curated concepts);
    - skip: nothing changes, but the audit still records who looked and passed;
    - accept_prior: the item's prior enrichment labels (active concepts) become the curated label
      (state ``accepted``), recorded as such: for an item nobody has voted on, where "accept"
      would otherwise save an empty label.

    Accept is refused on an item without counted votes (there is no crowd label to accept), and
    accept_prior on an item without prior labels.

    Raises ValueError for an unknown action, concepts given with anything but edit, an unknown or
    inactive concept key (named in the message), or a comment that is too long or holds NUL.
    The item row is locked while the decision is made, so two curators deciding at once are
    serialised and each audit row's ``before`` is what that curator actually replaced. The
    ``item`` passed in is updated in place.
    """
    if action not in DECISIONS:
        raise ValueError(f"unknown review action {action!r}")
    if concepts is not None and action != Review.Action.EDIT:
        raise ValueError("concepts are only given with the edit action")
    if action == Review.Action.EDIT and concepts is None:
        raise ValueError("an edit needs the list of concepts (an empty list means none apply)")
    comment_clean(comment)
    after_edit = concept_keys_validate(concepts) if concepts is not None else None

    with transaction.atomic():
        locked = Item.objects.select_for_update().get(pk=item.pk)
        before = item_final_label(locked) or []
        state_before = locked.review_state
        if action == Review.Action.ACCEPT:
            if locked.n_classifications == 0:
                raise ValueError(
                    f"{locked.external_id} has no votes yet: there is no crowd label to accept "
                    "(take the prior labels, edit the label, or wait for votes)"
                )
            after = before
            locked.review_state = Item.ReviewState.ACCEPTED
            locked.curated_concepts = after
        elif action == Review.Action.ACCEPT_PRIOR:
            after = item_prior_keys(locked)
            if not after:
                raise ValueError(f"{locked.external_id} has no prior labels to take")
            locked.review_state = Item.ReviewState.ACCEPTED
            locked.curated_concepts = after
        elif action == Review.Action.EDIT:
            after = after_edit or []
            locked.review_state = Item.ReviewState.EDITED
            locked.curated_concepts = after
        elif action == Review.Action.REJECT:
            after = []
            locked.review_state = Item.ReviewState.REJECTED
            locked.curated_concepts = []
        else:
            after = before
        if action != Review.Action.SKIP:
            locked.save(update_fields=["review_state", "curated_concepts", "updated_at"])
        review = Review.objects.create(
            item=locked,
            curator=curator,
            action=action,
            before=before,
            after=after,
            state_before=state_before,
            state_after=locked.review_state,
            comment=comment,
        )
        if action != Review.Action.SKIP:
            transaction.on_commit(
                partial(reviews_recorded.send, sender=Review, item_ids=[locked.pk], n=1)
            )
    item.review_state = locked.review_state
    item.curated_concepts = locked.curated_concepts
    item.updated_at = locked.updated_at
    return review


def comment_clean(comment: str) -> str:
    if len(comment) > COMMENT_MAX_LENGTH:
        raise ValueError(f"the comment is longer than {COMMENT_MAX_LENGTH} characters")
    # PostgreSQL refuses NUL in text and it has no business in a note: refuse it on every backend.
    if "\x00" in comment:
        raise ValueError("the comment contains a NUL character")
    return comment


def concept_keys_validate(keys: Iterable[str]) -> list[str]:
    """Sorted, de-duplicated keys; ValueError naming the first key that is no active concept."""
    wanted = sorted({str(key) for key in keys})
    known = set(Concept.objects.filter(active=True, key__in=wanted).values_list("key", flat=True))
    unknown = [key for key in wanted if key not in known]
    if unknown:
        raise ValueError(f"unknown concept {unknown[0]!r}")
    return wanted


def settled_items(*, items_qs: QuerySet[Item], min_confidence: float) -> QuerySet[Item]:
    """The unreviewed items of ``items_qs`` whose crowd has made up its mind on every concept.

    Settled: at least one aggregated label backed by votes, and no concept's posterior strictly
    between ``1 - min_confidence`` and ``min_confidence``.
    """
    if not 0.5 < min_confidence <= 1.0:
        raise ValueError("min_confidence must be above 0.5 and at most 1")
    labels = AggregatedLabel.objects.filter(item_id=OuterRef("pk"))
    voted = labels.filter(Q(votes_for__gt=0) | Q(votes_against__gt=0))
    undecided = labels.filter(posterior__gt=1.0 - min_confidence, posterior__lt=min_confidence)
    return items_qs.filter(review_state=Item.ReviewState.UNREVIEWED).filter(
        Exists(voted), ~Exists(undecided)
    )


def reviews_bulk_accept(
    *,
    items_qs: QuerySet[Item],
    curator: User,
    min_confidence: float = 0.95,
    batch: uuid.UUID | None = None,
) -> int:
    """Accept the crowd's label on every settled item of ``items_qs``; return how many.

    Only unreviewed items whose every concept posterior is ``>= min_confidence`` or
    ``<= 1 - min_confidence`` (and that have votes) are accepted, each with its own audit row whose
    comment says it was a bulk decision. Works in chunks of 1,000 items, each chunk one
    transaction with its rows locked and their state re-checked, so an item a curator decided on
    meanwhile (or whose crowd changed its mind) is left alone. Safe to call twice: the second
    call finds nothing left to accept. Every row of one call shares ``batch`` (a new UUID unless
    given), so the whole bulk decision can be undone at once (:func:`reviews_undo_batch`).
    """
    batch = batch or uuid.uuid4()
    candidate_ids = list(
        settled_items(items_qs=items_qs, min_confidence=min_confidence)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    comment = (
        f"bulk accept: every concept posterior >= {min_confidence:g} or <= {1 - min_confidence:g}"
    )
    accepted = 0
    for start in range(0, len(candidate_ids), _BULK_CHUNK):
        chunk = candidate_ids[start : start + _BULK_CHUNK]
        with transaction.atomic():
            # Re-checked under the lock: a curator or a new aggregation may have come in between.
            ids = list(
                settled_items(
                    items_qs=Item.objects.select_for_update().filter(pk__in=chunk),
                    min_confidence=min_confidence,
                ).values_list("pk", flat=True)
            )
            labels = item_final_labels(ids)
            now = timezone.now()
            Item.objects.bulk_update(
                [
                    Item(
                        pk=pk,
                        review_state=Item.ReviewState.ACCEPTED,
                        curated_concepts=labels.get(pk, []),
                        updated_at=now,
                    )
                    for pk in ids
                ],
                ["review_state", "curated_concepts", "updated_at"],
                batch_size=500,
            )
            Review.objects.bulk_create(
                [
                    Review(
                        item_id=pk,
                        curator=curator,
                        action=Review.Action.ACCEPT,
                        before=labels.get(pk, []),
                        after=labels.get(pk, []),
                        state_before=Item.ReviewState.UNREVIEWED,
                        state_after=Item.ReviewState.ACCEPTED,
                        batch=batch,
                        comment=comment,
                    )
                    for pk in ids
                ],
                batch_size=500,
            )
            if ids:
                transaction.on_commit(
                    partial(reviews_recorded.send, sender=Review, item_ids=ids, n=len(ids))
                )
        accepted += len(ids)
    return accepted


@dataclass(frozen=True)
class _Blocked:
    reason: str  # short, shared by the rows it stops ("it is already undone")
    detail: str = ""  # what only this row says (which later decision)


def _undo_rows(
    ids: list[int], *, curator: User, comment: str, batch: uuid.UUID | None
) -> tuple[list[int], dict[int, _Blocked]]:
    """Undo the decisions ``ids`` that can be undone, in one transaction the caller holds: their
    items locked, a fixed number of queries whatever the number of rows. Returns the items put
    back and, per decision left alone, why.

    A decision can be undone when it is an accept, edit or reject recorded with the state before
    it, not undone yet, and the latest decision on its item that stands (no later one on top).
    """
    reviews = list(Review.objects.filter(pk__in=ids).order_by("pk"))
    item_ids = sorted({r.item_id for r in reviews})
    items = Item.objects.select_for_update().in_bulk(item_ids)
    undone = set(
        Review.objects.filter(undoes_id__in=ids).values_list("undoes_id", flat=True)
    )
    standing = Review.objects.filter(item_id__in=item_ids).exclude(
        action__in=[Review.Action.SKIP, Review.Action.UNDO]
    )
    latest = dict(
        standing.filter(undone_by__isnull=True)
        .values("item_id")
        .annotate(latest=Max("pk"))
        .values_list("item_id", "latest")
    )
    blocked: dict[int, _Blocked] = {}
    todo: list[Review] = []
    for review in reviews:
        if review.action in (Review.Action.SKIP, Review.Action.UNDO):
            blocked[review.pk] = _Blocked(f"a {review.action} changes nothing to undo")
        elif not review.state_before:
            blocked[review.pk] = _Blocked(
                "it was recorded before decisions could be undone (its earlier state is unknown)"
            )
        elif review.pk in undone:
            blocked[review.pk] = _Blocked("it is already undone")
        elif latest.get(review.item_id) != review.pk:
            blocked[review.pk] = _Blocked(
                "a later decision is on top of it",
                f" (#{latest.get(review.item_id)}): undo that first",
            )
        else:
            todo.append(review)
    if not todo:
        return [], blocked
    touched = [r.item_id for r in todo]
    before = item_final_labels(touched)
    states_now = {pk: items[pk].review_state for pk in touched}
    now = timezone.now()  # bulk_update leaves auto_now alone
    for review in todo:
        item = items[review.item_id]
        item.updated_at = now
        item.review_state = review.state_before
        # Back to accepted or edited, the item has the label it had then (the undone decision's
        # "before"); back to unreviewed or rejected, it has no curated label.
        curated = review.state_before in Item.ReviewState.CURATED
        item.curated_concepts = list(review.before) if curated else []
    Item.objects.bulk_update(
        [items[pk] for pk in touched], ["review_state", "curated_concepts", "updated_at"],
        batch_size=500,
    )  # fmt: skip
    after = item_final_labels(touched)
    Review.objects.bulk_create(
        [
            Review(
                item_id=review.item_id,
                curator=curator,
                action=Review.Action.UNDO,
                undoes=review,
                before=before.get(review.item_id, []),
                after=after.get(review.item_id, []),
                state_before=states_now[review.item_id],
                state_after=review.state_before,
                batch=batch,
                comment=comment,
            )
            for review in todo
        ],
        batch_size=500,
    )
    return touched, blocked


def review_undo(*, review: Review, curator: User, comment: str = "") -> Review:
    """Undo one decision: the item goes back to its state and label before it; return the audit
    row of the undo (the undone row stays, as the audit keeps both).

    Raises UndoError (a ValueError) naming the decision and why when it cannot be undone: a skip
    or an undo, already undone, recorded before undo existed, or a later decision on the same
    item that is not undone (undo that first, so no curator's work is silently overwritten).
    """
    comment_clean(comment)
    with transaction.atomic():
        touched, blocked = _undo_rows(
            [review.pk], curator=curator, comment=comment, batch=None
        )
        if review.pk in blocked:
            why = blocked[review.pk]
            raise UndoError(
                f"decision #{review.pk} on {review.item.external_id} cannot be undone: "
                f"{why.reason}{why.detail}"
            )
        transaction.on_commit(
            partial(reviews_recorded.send, sender=Review, item_ids=touched, n=1)
        )
    return Review.objects.get(undoes=review)


@dataclass(frozen=True)
class BatchUndo:
    undone: int
    skipped: dict[str, int]  # reason -> how many rows of the batch were left as they are


def reviews_undo_batch(
    *, batch: uuid.UUID | str, curator: User, comment: str = ""
) -> BatchUndo:
    """Undo every decision of one bulk decision that can still be undone.

    Rows already undone, or with a later decision on their item, are left alone and counted by
    reason. Works in chunks of 1,000 rows, each one transaction with a fixed number of queries;
    the undo rows share a new batch of their own. Raises LookupError for a batch with no
    decisions.
    """
    comment_clean(comment)
    ids = list(
        Review.objects.filter(batch=batch)
        .exclude(action=Review.Action.UNDO)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if not ids:
        raise LookupError(f"no bulk decision {batch}")
    undo_batch = uuid.uuid4()
    undone, skipped = 0, dict[str, int]()
    for start in range(0, len(ids), _BULK_CHUNK):
        with transaction.atomic():
            touched, blocked = _undo_rows(
                ids[start : start + _BULK_CHUNK], curator=curator, comment=comment,
                batch=undo_batch,
            )  # fmt: skip
            if touched:
                transaction.on_commit(
                    partial(
                        reviews_recorded.send, sender=Review, item_ids=touched, n=len(touched)
                    )
                )
        for why in blocked.values():
            skipped[why.reason] = skipped.get(why.reason, 0) + 1
        undone += len(touched)
    return BatchUndo(undone=undone, skipped=skipped)
