"""Storing: a batch's accepted rows written, with their volunteers, subjects and repeat flags."""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat
from typing import TYPE_CHECKING

import numpy as np
from django.db import connections, router

from annotate.models import Classification, Volunteer
from annotate.services.classifications.counters import counts_recompute
from annotate.services.classifications.repeats import repeats_decide
from annotate.services.classifications.sql import among, json_adapter, rows_insert, times_adapted
from annotate.services.classifications.subjects import subjects_resolve

if TYPE_CHECKING:
    from annotate.services.classifications.answers import Answers
    from annotate.services.classifications.read import IngestContext
    from annotate.services.classifications.tally import IngestCounts
    from annotate.zooniverse.classification_records import ClassificationColumns


def rows_store(
    columns: ClassificationColumns,
    rows: np.ndarray,
    answer_code: np.ndarray,
    resolved: list[Answers],
    *,
    context: IngestContext,
    counts: IngestCounts,
    refuse: Callable[[int, str], None],
) -> None:
    """Write the accepted ``rows`` of a batch; runs inside the batch transaction.

    A row whose id is stored already is skipped (unchanged), or handed to ``refuse`` (its row
    index and the reason) when it names another subject or another logged-in volunteer than the
    stored row (B5). Answers are not compared here: the same classification from the API and
    from an export, or read again after its workflow's answers were configured anew, may
    resolve to other concepts and is still the same vote.
    """
    workflow = context.workflow

    # Known ids are skipped before anything else: a re-import touches nothing (B5, L2).
    ids = columns.zooniverse_id[rows]
    found = list(
        Classification.objects.filter(
            among(f"{Classification._meta.db_table}.zooniverse_id", ids.tolist())
        ).values_list(
            "zooniverse_id",
            "item_id",
            "volunteer_id",
            "subject__zooniverse_id",
            "volunteer__zooniverse_user_id",
        )
    )
    known = [zid for zid, *_ in found]
    if context.deferred is not None:
        # A re-run after a failed import recounts what the failed run stored, too.
        context.deferred[0].update(item for _, item, *_ in found if item is not None)
        context.deferred[1].update(volunteer for _, _, volunteer, *_ in found)
    if known:
        _conflicts_refuse(columns, rows, found, refuse=refuse, counts=counts)
        fresh = ~np.isin(ids, np.array(known, np.int64))
        rows, answer_code, ids = rows[fresh], answer_code[fresh], ids[fresh]
        if not len(rows):
            return

    # Volunteers and subjects: resolved once per distinct value, then spread over the rows.
    # A logged-out volunteer is one per browser session (B7), so their session is part of the
    # value; two values may name one volunteer (a user renamed between classifications).
    anonymous = np.array([user_id is None for user_id, _ in columns.volunteers], bool)
    row_codes = columns.volunteer_code[rows]
    sessions = np.where(anonymous[row_codes], columns.session[rows], "")
    distinct: dict[tuple[int, str], int] = {}
    volunteer_of_row = np.array(
        [
            distinct.setdefault(pair, len(distinct))
            for pair in zip(row_codes.tolist(), sessions.tolist(), strict=True)
        ],
        np.intp,
    )
    keys = []
    wanted: dict[str, tuple[int | None, str]] = {}
    for code, browser_session in distinct:
        user_id, user_name = columns.volunteers[code]
        keys.append(volunteer_key(user_id=user_id, user_name=user_name, session=browser_session))
        wanted.setdefault(keys[-1], (user_id, user_name))
    by_key = _volunteers_resolve(wanted, known=context.volunteers)
    volunteer_pk = np.array([by_key[key] for key in keys], np.int64)[volunteer_of_row]
    logged_in = np.array([key.startswith("user:") for key in keys], bool)[volunteer_of_row]

    zids, subject_of_row = np.unique(columns.subject_id[rows], return_inverse=True)
    metadata = {}
    for zid in zids.tolist():
        meta = columns.subject_metadata.get(zid)
        metadata[zid] = meta if isinstance(meta, dict) else {}
    subjects, created_subjects = subjects_resolve(
        metadata, unmatched=context.unmatched, match=workflow.subject_match
    )
    subject_pk = np.array([subjects[z][0] for z in metadata], np.int64)[subject_of_row]
    item_of_subject = [subjects[z][1] for z in metadata]
    item_id = np.array(item_of_subject, object)[subject_of_row]
    is_new_subject = np.array([subjects[z][0] in created_subjects for z in metadata], bool)
    is_new_subject = is_new_subject[subject_of_row]

    invalid = np.array([bool(a.invalid) for a in resolved], bool)[answer_code]
    counts.invalid_answers += int(invalid.sum())
    codes_invalid, rows_invalid = np.unique(answer_code[invalid], return_counts=True)
    for code, n in zip(codes_invalid.tolist(), rows_invalid.tolist(), strict=True):
        for text in dict.fromkeys(str(a) for a in resolved[code].invalid):
            counts.unmapped_answers[text] = counts.unmapped_answers.get(text, 0) + n
    task_shown = columns.task_shown[rows]
    counts.task_not_shown += int((~task_shown).sum())
    answers_known = np.array([a.known for a in resolved], bool)[answer_code]
    counts.skipped += int(np.array([a.skipped for a in resolved], bool)[answer_code].sum())

    created_at = columns.created_at[rows]
    session = np.array([s[:128] for s in columns.session[rows].tolist()], object)
    duplicate, flag_changes = repeats_decide(
        volunteer_pk=volunteer_pk,
        subject_pk=subject_pk,
        logged_in=logged_in,
        session=session,
        created_at=created_at,
        zooniverse_id=ids,
        is_new_subject=is_new_subject,
        workflow=workflow,
    )
    touched_items = {i for i in set(item_of_subject) if i is not None}
    for _pk, item, _flag in flag_changes:
        if item is not None:
            touched_items.add(item)
    counts.repeats_flagged += int(duplicate.sum())
    to_flag = [pk for pk, _, flag in flag_changes if flag]
    to_clear = [pk for pk, _, flag in flag_changes if not flag]
    counts.repeats_flagged += len(to_flag)
    counts.repeats_cleared += len(to_clear)
    counts.reflagged += len(to_flag) + len(to_clear)

    connection = connections[router.db_for_write(Classification)]
    adapt_json = json_adapter(connection)
    concept_ids = np.array([adapt_json(a.concept_ids) for a in resolved], object)
    invalid_answers = np.array([adapt_json(a.invalid) for a in resolved], object)
    versions = np.array([v[:32] for v in columns.versions], object)
    n = len(rows)
    values = list(
        zip(
            ids.tolist(),
            repeat(workflow.pk, n),
            versions[columns.version_code[rows]].tolist(),
            subject_pk.tolist(),
            item_id.tolist(),
            volunteer_pk.tolist(),
            times_adapted(created_at, connection),
            concept_ids[answer_code].tolist(),
            invalid_answers[answer_code].tolist(),
            duplicate.tolist(),
            columns.gold_standard[rows].tolist(),
            columns.expert[rows].tolist(),
            session.tolist(),
            [source[:8] for source in columns.source[rows].tolist()],
            task_shown.tolist(),
            answers_known.tolist(),
            strict=False,
        )
    )
    rows_insert(Classification, _FILLED, values)
    counts.created += n
    if to_flag:
        Classification.objects.filter(pk__in=to_flag).update(is_duplicate=True)
    if to_clear:
        Classification.objects.filter(pk__in=to_clear).update(is_duplicate=False)

    if context.deferred is None:
        counts_recompute(items=touched_items, volunteers=set(by_key.values()))
    else:
        context.deferred[0].update(touched_items)
        context.deferred[1].update(by_key.values())


# The columns the ingest fills itself, by attribute name; any other column of Classification
# (one added later) gets its field default.
_FILLED = (
    "zooniverse_id", "workflow_id", "workflow_version", "subject_id", "item_id", "volunteer_id",
    "created_at", "concept_ids", "invalid_answers", "is_duplicate", "gold_standard", "expert",
    "session", "source", "task_shown", "answers_known",
)  # fmt: skip


def _conflicts_refuse(
    columns: ClassificationColumns,
    rows: np.ndarray,
    found: list[tuple],
    *,
    refuse: Callable[[int, str], None],
    counts: IngestCounts,
) -> None:
    """Count the rows of stored ids unchanged, or refuse those that are another vote (B5)."""
    stored = {zid: (subject, user_id) for zid, _, _, subject, user_id in found}
    for i in rows.tolist():
        zid = int(columns.zooniverse_id[i])
        if zid not in stored:
            continue
        subject, user_id = stored[zid]
        new_user = columns.volunteers[columns.volunteer_code[i]][0]
        if subject != int(columns.subject_id[i]):
            differs = f"another subject ({columns.subject_id[i]}) than the one stored ({subject})"
        elif user_id != new_user:
            differs = "another volunteer than the one stored"
        else:
            counts.unchanged += 1
            continue
        refuse(i, f"classification_id_conflict: {differs}")


def volunteer_key(*, user_id: int | None, user_name: str, session: str = "") -> str:
    """The stable key of a volunteer: ``user:<id>`` logged in; logged out, one per browser
    session, ``anon:not-logged-in-<session>`` (B7).

    The export names a logged-out volunteer ``not-logged-in-<hashed ip>`` and the API names them
    not at all, but both carry the session (the export in ``metadata``), so the same person is
    one volunteer whichever source brings their votes; the key is the one the API's volunteers
    always had. Without a session the name is the only handle there is (the hashed IP for an
    export), so it is the key, and never used alone to flag repeats.
    """
    if user_id is not None:
        return f"user:{user_id}"
    if session:
        return f"anon:not-logged-in-{session[:64]}"
    return f"anon:{user_name}"[:255]  # the column's length


def _volunteers_resolve(
    wanted: dict[str, tuple[int | None, str]], *, known: dict[str, int]
) -> dict[str, int]:
    """Volunteer key -> id for ``wanted`` (key -> (user id, user name)), creating the missing.

    ``known`` caches ids across the batches of one ingest: a volunteer is never deleted while it
    has votes, and a few thousand keys recur in every batch of a large export.
    """
    found = {key: known[key] for key in wanted if key in known}
    unknown = [key for key in wanted if key not in found]
    if unknown:
        found.update(Volunteer.objects.filter(among("key", unknown)).values_list("key", "id"))
    missing = [key for key in wanted if key not in found]
    if missing:
        rows = [
            (key, wanted[key][0], wanted[key][1][:255], wanted[key][0] is not None)
            for key in missing
        ]
        rows_insert(Volunteer, ("key", "zooniverse_user_id", "user_name", "logged_in"), rows)
        found.update(Volunteer.objects.filter(among("key", missing)).values_list("key", "id"))
    if len(known) < 1_000_000:  # bounded: about 100 MB at most
        known.update(found)
    return found
