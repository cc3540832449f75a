"""Repeats: which votes are a volunteer's second look at a subject (B6, B7)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC
from typing import Any

import numpy as np

from annotate.models import Classification, Workflow
from annotate.services.classifications.sql import among, pairs_among


def repeats_decide(
    *,
    volunteer_pk: np.ndarray,
    subject_pk: np.ndarray,
    logged_in: np.ndarray,
    session: np.ndarray,
    created_at: np.ndarray,
    zooniverse_id: np.ndarray,
    is_new_subject: np.ndarray,
    workflow: Workflow,
) -> tuple[np.ndarray, list[tuple[int, int | None, bool]]]:
    """The new rows' ``is_duplicate`` flags, and (pk, item id, flag) of stored rows to change.

    A group is one volunteer on one subject in this workflow; for logged-out volunteers also one
    browser session, and without a session a logged-out vote is never called a repeat (B7). Only
    rows that can be in a group of two are looked at one by one: those whose (volunteer,
    subject) pair recurs in the batch or is already stored.
    """
    n = len(volunteer_pk)
    duplicate = np.zeros(n, bool)
    grouped = logged_in | (session != "")
    pair = (volunteer_pk << 32) | subject_pk
    values, inverse, pair_counts = np.unique(pair, return_inverse=True, return_counts=True)
    candidate = grouped & (pair_counts[inverse] > 1)
    # Subjects created by this batch have no stored votes. The others are read through the
    # subject index (a subject has a handful of votes). The volunteer and workflow tests must not
    # steer the planner: SQLite picked the workflow index (every row: quadratic over an import)
    # or probed the (volunteer, subject) index per combination. So the (volunteer, subject) pair
    # is matched as an unindexable expression and the workflow is checked here.
    lookup = grouped & ~is_new_subject
    stored_rows: list[tuple[Any, ...]] = []
    if lookup.any():
        pairs = np.unique(pair[lookup])
        stored_rows = [
            row
            for row in Classification.objects.filter(
                among("subject_id", np.unique(subject_pk[lookup]).tolist()),
                pairs_among(
                    list(zip((pairs >> 32).tolist(), (pairs & 0xFFFFFFFF).tolist(), strict=True))
                ),
            ).values_list(
                "workflow_id",
                "id",
                "volunteer_id",
                "subject_id",
                "session",
                "created_at",
                "zooniverse_id",
                "is_duplicate",
                "item_id",
            )  # fmt: skip
            if row[0] == workflow.pk
        ]
        if stored_rows:
            stored_pairs = np.array([(v << 32) | s for _, _, v, s, *_ in stored_rows], np.int64)
            candidate |= lookup & np.isin(pair, stored_pairs)
    if not candidate.any():
        return duplicate, []

    def group_of(volunteer: int, subject: int, session: str, logged: bool) -> tuple | None:
        if logged:
            return (volunteer, subject, "")
        return (volunteer, subject, session) if session else None

    # (created_at, zooniverse id, stored pk or None, current flag, then for a new row its place
    # in the batch, for a stored one its item id)
    groups: dict[tuple[int, int, str] | None, list[tuple[Any, ...]]] = defaultdict(list)
    for i in np.flatnonzero(candidate).tolist():
        key = group_of(int(volunteer_pk[i]), int(subject_pk[i]), session[i], bool(logged_in[i]))
        groups[key].append((created_at[i].item(), int(zooniverse_id[i]), None, False, i))
    logged = dict(zip(volunteer_pk.tolist(), logged_in.tolist(), strict=False))
    for _, pk, volunteer, subject, stored_session, when, zid, flag, _item in stored_rows:
        key = group_of(volunteer, subject, stored_session, logged.get(volunteer, False))
        if key in groups:
            naive = when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
            groups[key].append((naive, zid, pk, flag, _item))

    changes: list[tuple[int, int | None, bool]] = []
    for members in groups.values():
        if len(members) == 1:
            continue
        members.sort(key=lambda m: (m[0], m[1]))
        for position, member in enumerate(members):
            is_repeat = position > 0
            if member[2] is None:
                duplicate[member[4]] = is_repeat
            elif member[3] != is_repeat:
                changes.append((member[2], member[4], is_repeat))
    return duplicate, changes
