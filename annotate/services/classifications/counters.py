"""Counters: ``n_classifications`` of the items and volunteers an ingest touched, recounted."""

from __future__ import annotations

import json

from django.db import connections, router
from django.db.models import Count, Field, IntegerField, Model, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce

from annotate.models import Classification, Item, Volunteer

#: With counters recounted at the end of an ingest: how often, in seconds, a long ingest still
#: recounts what it has touched so far. A million-row file import on SQLite takes about 20 s.
COUNTERS_EVERY_S = 60.0

#: The classifications that are votes, as ``Classification`` field values: the earliest of a
#: volunteer's repeats on a subject, shown the task, every answer one its workflow version
#: offers. A vote also needs a volunteer who is not excluded from aggregation: :func:`votes_filter`
#: is the whole definition, which aggregation (``annotate.services.aggregation.votes.votes_load``)
#: and an item's ``n_classifications`` both use.
VOTES = {"is_duplicate": False, "task_shown": True, "answers_known": True}


def excluded_volunteers() -> bool:
    """Whether any volunteer is excluded from aggregation (``Volunteer.excluded``)."""
    return Volunteer.objects.filter(excluded=True).exists()


def votes_filter() -> Q:
    """The classifications that are votes, as a filter: ``VOTES``, less the classifications of
    volunteers excluded from aggregation.

    The volunteer condition is added only while someone is excluded (one indexed query to know),
    so that the usual read of a million votes stays a scan of the classification table alone.
    """
    votes = Q(**VOTES)
    if excluded_volunteers():
        votes &= ~Q(volunteer__in=Volunteer.objects.filter(excluded=True).values("pk"))
    return votes


def _column(name: str) -> str:
    """The column of ``name``, a concrete field of the classification table."""
    field = Classification._meta.get_field(name)
    assert isinstance(field, Field) and field.column is not None
    return field.column


def _votes_sql() -> str:
    """:func:`votes_filter` as an SQL condition on the classification table's columns."""
    columns = [(_column(name), want) for name, want in VOTES.items()]
    sql = " AND ".join(column if want else f"NOT {column}" for column, want in columns)
    if excluded_volunteers():
        volunteers = Volunteer._meta.db_table
        excluded = Volunteer._meta.get_field("excluded").column
        column = Classification._meta.get_field("volunteer").column
        sql += f" AND {column} NOT IN (SELECT id FROM {volunteers} WHERE {excluded})"
    return sql


def counts_recompute(*, items: set[int], volunteers: set[int]) -> None:
    """Recount the touched items (their votes, :func:`votes_filter`) and volunteers (all their
    rows).

    Recomputed from the rows rather than incremented, so a replayed or concurrent batch cannot
    drift the counters. On SQLite and PostgreSQL the rows are counted in one grouped scan
    (:func:`_counts_recount`); a correlated subquery per row took seven times as long on
    PostgreSQL, where it was a quarter of a million-row import.
    """
    vendor = connections[router.db_for_write(Classification)].vendor
    if vendor in ("sqlite", "postgresql"):
        _counts_recount(Item, items, "item_id", _votes_sql(), vendor)
        _counts_recount(Volunteer, volunteers, "volunteer_id", "TRUE", vendor)
        return
    if items:
        Item.objects.filter(pk__in=items).update(
            n_classifications=Coalesce(
                Subquery(
                    Classification.objects.filter(votes_filter(), item_id=OuterRef("pk"))
                    .order_by()
                    .values("item_id")
                    .annotate(n=Count("id"))
                    .values("n")[:1],
                    output_field=IntegerField(),
                ),
                Value(0),
            )
        )
    if volunteers:
        # A volunteer's count is every classification they made, repeats included: it measures
        # activity, and it is an index-only count on a column every row has indexed.
        Volunteer.objects.filter(pk__in=volunteers).update(
            n_classifications=Coalesce(
                Subquery(
                    Classification.objects.filter(volunteer_id=OuterRef("pk"))
                    .order_by()
                    .values("volunteer_id")
                    .annotate(n=Count("id"))
                    .values("n")[:1],
                    output_field=IntegerField(),
                ),
                Value(0),
            )
        )


def _counts_recount(
    model: type[Model], ids: set[int], column: str, counted: str, vendor: str
) -> None:
    """``n_classifications`` of the ``ids`` rows of ``model``: their classifications that meet
    ``counted``, 0 for none. ``column`` and ``counted`` are constants of this module."""
    if not ids:
        return
    table = model._meta.db_table
    votes = Classification._meta.db_table
    param: list[int] | str
    if vendor == "postgresql":
        listed, among, param = "unnest(%s::bigint[]) AS t(id)", f"{column} = ANY(%s)", sorted(ids)
    else:
        listed, among = "(SELECT value AS id FROM json_each(%s)) AS t", f"{column} IN "
        among += "(SELECT value FROM json_each(%s))"
        param = json.dumps(sorted(ids))
    sql = f"""
        UPDATE {table} SET n_classifications = c.n
        FROM (
            SELECT t.id, COALESCE(g.n, 0) AS n FROM {listed}
            LEFT JOIN (
                SELECT {column} AS id, COUNT(*) AS n FROM {votes}
                WHERE {among} AND {counted} GROUP BY {column}
            ) AS g ON g.id = t.id
        ) AS c
        WHERE {table}.id = c.id
    """
    with connections[router.db_for_write(model)].cursor() as cursor:
        cursor.execute(sql, [param, param])
