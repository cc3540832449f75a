"""Excluding volunteers from aggregation (a spammer, a test account), and taking them back.

An excluded volunteer's classifications stay in the database but are no votes: aggregation leaves
them out (``counters.votes_filter``), and so do the items' ``n_classifications``, which are
recounted here, in the same transaction as the change. Labels follow at the next full
aggregation, which the pipeline runs when it hears ``annotate.signals.volunteers_excluded``.
Every change is one append-only ``VolunteerExclusion`` row: who, when, which way and why.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from annotate.models import Classification, Volunteer, VolunteerExclusion
from annotate.services.classifications.counters import counts_recompute
from annotate.signals import volunteers_excluded

#: The longest reason kept (``VolunteerExclusion.reason``).
REASON_MAX_LENGTH = 2000


class VolunteerExclusionError(ValueError):
    """An exclusion (or taking back) that cannot be recorded: no reason, no one to record."""


def volunteers_exclude(
    *, volunteers: QuerySet[Volunteer] | Iterable[Volunteer], by: Any, reason: str
) -> int:
    """Exclude volunteers from aggregation; return how many were not excluded before.

    Idempotent: an excluded volunteer is left as it is, with no new audit row.

    Raises:
        VolunteerExclusionError: a blank reason, or ``by`` is not a saved user.
    """
    return _exclusion_set(volunteers=volunteers, excluded=True, by=by, reason=reason)


def volunteers_include(
    *, volunteers: QuerySet[Volunteer] | Iterable[Volunteer], by: Any, reason: str
) -> int:
    """Take excluded volunteers back into aggregation; return how many were excluded before.

    Their votes count again at the next full aggregation. Idempotent, like
    :func:`volunteers_exclude`.
    """
    return _exclusion_set(volunteers=volunteers, excluded=False, by=by, reason=reason)


def _exclusion_set(
    *,
    volunteers: QuerySet[Volunteer] | Iterable[Volunteer],
    excluded: bool,
    by: Any,
    reason: str,
) -> int:
    reason = (reason or "").strip()
    if not reason:
        raise VolunteerExclusionError("say why: a reason is required")
    if len(reason) > REASON_MAX_LENGTH:
        raise VolunteerExclusionError(f"the reason is longer than {REASON_MAX_LENGTH} characters")
    if getattr(by, "pk", None) is None:
        raise VolunteerExclusionError("an exclusion is recorded with the user who made it")
    chosen: QuerySet[Volunteer, Any] | list[int]
    if isinstance(volunteers, QuerySet):
        chosen = volunteers.values("pk")
    else:
        chosen = [v.pk for v in volunteers]
    with transaction.atomic():
        # Locked and re-read: two curators excluding the same volunteer write one audit row.
        ids = list(
            Volunteer.objects.select_for_update()
            .filter(pk__in=chosen, excluded=not excluded)  # type: ignore[misc]  # the stubs know no subquery (values("pk")) as an __in value
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if not ids:
            return 0
        Volunteer.objects.filter(pk__in=ids).update(excluded=excluded)
        VolunteerExclusion.objects.bulk_create(
            VolunteerExclusion(volunteer_id=pk, excluded=excluded, by=by, reason=reason)
            for pk in ids
        )
        # Their classifications stop (or start) counting as votes on these items now.
        items = set(
            Classification.objects.filter(volunteer_id__in=ids, item__isnull=False)
            .order_by()
            .values_list("item_id", flat=True)
            .distinct()
        )
        counts_recompute(items=items, volunteers=set())
        transaction.on_commit(
            partial(
                volunteers_excluded.send, sender=Volunteer, volunteer_ids=ids, excluded=excluded
            )
        )
    return len(ids)


def volunteer_find(*, name: str) -> Volunteer:
    """The volunteer whose key is ``name``, else the one whose Zooniverse user name it is.

    Raises:
        Volunteer.DoesNotExist: none matches.
        VolunteerExclusionError: several volunteers share the user name (use the key).
    """
    found = Volunteer.objects.filter(key=name).first()
    if found is not None:
        return found
    named = list(Volunteer.objects.filter(user_name=name).order_by("pk")[:6])
    if not named:
        raise Volunteer.DoesNotExist(f"no volunteer with the key or user name {name!r}")
    if len(named) > 1:
        keys = ", ".join(v.key for v in named[:5])
        raise VolunteerExclusionError(f"several volunteers are called {name!r}: use a key ({keys})")
    return named[0]
